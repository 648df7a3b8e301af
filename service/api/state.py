"""The run the service answers from, loaded off the event loop and retried until it is ready.

The app starts (and /healthz answers) at once; /readyz and every /v1 call say why the run is not
ready while it loads, when it is missing or half built, and load it again a few seconds later,
so a service started before `latentgram prepare` finished becomes ready by itself.

Once loaded, a watcher looks at the store file every few seconds; when a build has changed it,
it loads the rebuilt tables beside the served run and swaps the run in one assignment. Requests
already running hold the old run and finish on it; the next ones get the new one; /readyz stays
ready throughout.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from service.errors import LatentgramError
from service.run.loaded import LoadedRun
from service.run.paths import RunPaths

log = logging.getLogger(__name__)


def store_stamp(store: Path) -> tuple[int, ...]:
    """The store's and its write-ahead log's size and modification time: a commit changes it."""
    stamp: list[int] = []
    for path in (store, store.with_name(f"{store.name}.wal")):
        try:
            info = path.stat()
            stamp += [info.st_size, info.st_mtime_ns]
        except FileNotFoundError:
            stamp += [-1, -1]
    return tuple(stamp)


class NotReadyError(Exception):
    """The run cannot answer yet; the message says why."""


class RunHolder:
    """Holds the loaded run, or the reason there is none yet."""

    def __init__(self, run: Path, retry_seconds: float, search_threads: int | None = None) -> None:
        self.run = run
        self.retry_seconds = retry_seconds
        self.search_threads = search_threads
        self._loaded: LoadedRun | None = None
        self._stopped = threading.Event()
        self._reason = "the run is loading"
        self._loading = False
        self._last_try = float("-inf")
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start loading in a background thread unless a load is running or tried just now."""
        with self._lock:
            due = time.monotonic() - self._last_try >= self.retry_seconds
            if self._loaded is not None or self._loading or not due:
                return
            self._loading, self._last_try = True, time.monotonic()
        threading.Thread(target=self._load, name="latentgram-load", daemon=True).start()

    def _load(self) -> None:
        loaded, reason = None, ""
        try:
            loaded = self._warm(LoadedRun.load(self.run))
        except LatentgramError as exc:
            reason = str(exc)
        except Exception as exc:  # a damaged file: report it, keep serving health
            log.exception("loading %s failed", self.run)
            reason = f"loading {self.run} failed: {type(exc).__name__}: {exc}"
        with self._lock:
            self._loaded, self._loading = loaded, False
            if loaded is None:
                self._reason = reason
        if loaded is not None:
            log.info("run %s loaded", self.run)

    def _warm(self, loaded: LoadedRun) -> LoadedRun:
        loaded.search_threads = self.search_threads
        for positional in {p for _, p in loaded.indexes}:
            loaded.sampler(positional).warm_up()
        return loaded

    def watch(self, seconds: float) -> None:
        """Serve rebuilt tables without a restart: look at the store every `seconds`."""
        threading.Thread(
            target=self._watch, args=(seconds,), name="latentgram-watch", daemon=True
        ).start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self, seconds: float) -> None:
        seen: tuple[int, ...] | None = None
        while not self._stopped.wait(seconds):
            loaded = self._loaded
            stamp = store_stamp(RunPaths(self.run).store)
            if loaded is None or stamp == seen:
                continue
            try:  # a build still holding the store makes this a RunError: try at the next look
                rebuilt = loaded.with_rebuilt_tables()
            except LatentgramError as exc:
                log.info("not reloading tables yet: %s", exc)
                continue
            except Exception:  # keep serving the loaded run; try again when the store changes
                log.exception("reloading the tables of %s failed", self.run)
                seen = stamp
                continue
            seen = stamp
            if rebuilt is not None:
                self._loaded = self._warm(rebuilt)
                ids = ", ".join(f"{t.name}={t.table_id}" for t in rebuilt.tables)
                log.info("serving rebuilt tables of %s: %s", self.run, ids)

    def status(self) -> tuple[bool, str]:
        if self._loaded is None:
            self.start()
            return False, self._reason
        return True, "ready"

    @property
    def loaded(self) -> LoadedRun | None:
        """The run, or None while there is none (no load is started: see status)."""
        return self._loaded

    def get(self) -> LoadedRun:
        loaded = self._loaded
        if loaded is None:
            raise NotReadyError(self.status()[1])
        return loaded

"""The run the service answers from, loaded off the event loop and retried until it is ready.

The app starts (and /healthz answers) at once; /readyz and every /v1 call say why the run is not
ready while it loads, when it is missing or half built, and load it again a few seconds later,
so a service started before `latentgram prepare` finished becomes ready by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from service.errors import LatentgramError
from service.run.loaded import LoadedRun

log = logging.getLogger(__name__)


class NotReadyError(Exception):
    """The run cannot answer yet; the message says why."""


class RunHolder:
    """Holds the loaded run, or the reason there is none yet."""

    def __init__(self, run: Path, retry_seconds: float) -> None:
        self.run = run
        self.retry_seconds = retry_seconds
        self._loaded: LoadedRun | None = None
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
            loaded = LoadedRun.load(self.run)
            for positional in {p for _, p in loaded.indexes}:
                loaded.sampler(positional).warm_up()
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

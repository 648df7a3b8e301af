"""A folder of .npy arrays and a JSON manifest, written atomically and mapped read-only.

Arrays a process builds are private memory: N workers each holding a table's index hold N copies.
Arrays mapped from the same files live once, in the page cache, whatever the number of processes
that map them, and mapping costs milliseconds where building costs seconds. The folder is written
whole beside its final name and renamed in, so a reader sees the old set, the new one or none,
never a mix; two processes racing to write it both end with one complete set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bumped when the layout of a folder changes: older folders read as stale
MANIFEST = "manifest.json"
TEMPORARY_PREFIX = ".tmp-"  # a folder being written; one this old was left by a crashed writer
ABANDONED_SECONDS = 3600.0
READ_ATTEMPTS = 5  # reads of a folder that writers keep replacing before giving up


class StaleArrays(Exception):
    """A folder that is missing, of another version or source, or damaged: rebuild it."""


def read_arrays(folder: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of `folder`, mapped read-only, when its manifest holds exactly `meta` and every
    file has the dtype and shape the manifest lists; StaleArrays says what differs.

    A writer may replace the folder while it is read: the set is read again until the folder
    was the same one (the same inode) before and after, so the arrays are never a mix of two."""
    for _ in range(READ_ATTEMPTS):
        before = _inode(folder)
        try:
            arrays = _read_once(folder, meta)
        except StaleArrays:
            if _inode(folder) == before:
                raise
            continue  # replaced meanwhile: what was read may be a mix
        if _inode(folder) == before:
            return arrays
    raise StaleArrays(f"{folder} kept being replaced while it was read")


def _inode(folder: Path) -> int | None:
    try:
        return folder.stat().st_ino
    except FileNotFoundError:
        return None


def _read_once(folder: Path, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StaleArrays(f"{folder} has no {MANIFEST}") from exc
    except (OSError, ValueError) as exc:
        raise StaleArrays(f"{folder / MANIFEST} is unreadable: {exc}") from exc
    found = {"format": manifest.get("format"), **(manifest.get("meta") or {})}
    wanted = {"format": FORMAT_VERSION, **meta}
    if found != wanted:
        raise StaleArrays(f"{folder} was written for {_differences(found, wanted)}")
    arrays = {}
    for name, spec in manifest.get("arrays", {}).items():
        try:
            array = map_npy(folder / f"{name}.npy")
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
            raise StaleArrays(f"{folder / name}.npy is unreadable: {exc}") from exc
        if str(array.dtype) != spec["dtype"] or list(array.shape) != spec["shape"]:
            raise StaleArrays(
                f"{folder / name}.npy is {array.dtype} {array.shape}, the manifest says "
                f"{spec['dtype']} {tuple(spec['shape'])}"
            )
        arrays[name] = array
    return arrays


def _differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """ "layout 2 (now 3), table_id 4 (now 5)": what a folder's manifest holds that differs."""
    keys = [key for key in {**wanted, **found} if found.get(key) != wanted.get(key)]
    return ", ".join(f"{key} {found.get(key)} (now {wanted.get(key)})" for key in keys)


def map_npy(path: Path) -> np.ndarray:
    """A plain read-only ndarray over the file's pages (numba and numpy see no memmap)."""
    return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))


ArrayOrMaker = np.ndarray | Callable[[], np.ndarray]


def write_arrays(
    folder: Path,
    arrays: Mapping[str, ArrayOrMaker],
    meta: Mapping[str, Any],
    read_back: bool = True,
) -> dict[str, np.ndarray]:
    """Write the arrays and a manifest of `meta` as `folder`, atomically, and map them back
    (unless not `read_back`: then an empty dict, and each maker is called once).

    An array may be given as a function that makes it: it is made when its turn comes and
    dropped once written, so large arrays are never all in memory at once.

    A folder already there is replaced (it was stale); when another process publishes the same
    folder meanwhile, its set is kept and ours dropped. OSError when the parent is not writable.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{TEMPORARY_PREFIX}{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        specs = {}
        for name, value in arrays.items():
            array = value() if callable(value) else value
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())  # the rename below must never publish unwritten pages
            specs[name] = {"dtype": str(array.dtype), "shape": list(array.shape)}
            del array  # before the next one is made
        manifest = {"format": FORMAT_VERSION, "meta": dict(meta), "arrays": specs}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _publish(tmp, folder, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not read_back:
        return {}
    try:
        return read_arrays(folder, meta)
    except StaleArrays as why:  # another writer is replacing it right now: ours are as good
        log.info("using the arrays written for %s from memory: %s", folder, why)
        return {name: value() if callable(value) else value for name, value in arrays.items()}


def _publish(tmp: Path, folder: Path, meta: Mapping[str, Any]) -> None:
    """Rename `tmp` to `folder`; a `folder` already there is kept when it holds a whole set for
    `meta` (another writer's), and moved aside first when it is stale."""
    try:
        os.rename(tmp, folder)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    try:
        read_arrays(folder, meta)
        return  # another writer published the same set first: no reader sees a gap
    except StaleArrays:
        pass
    aside = folder.with_name(f"{TEMPORARY_PREFIX}{folder.name}-old-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(FileNotFoundError):  # another writer moved it first
        os.rename(folder, aside)  # mapped files stay valid: their pages live until unmapped
    try:
        os.rename(tmp, folder)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        # Another writer published between our two renames: its set is as good as ours.
    shutil.rmtree(aside, ignore_errors=True)


def remove_others(parent: Path, keep: Collection[str]) -> list[str]:
    """Remove the folders of `parent` not named in `keep` (and temporary ones a crashed writer
    left); returns the names removed. Processes that mapped their files keep reading them."""
    removed = []
    now = time.time()
    for child in parent.iterdir() if parent.is_dir() else ():
        if not child.is_dir() or child.name in keep:
            continue
        if child.name.startswith(TEMPORARY_PREFIX):
            try:
                if now - child.stat().st_mtime < ABANDONED_SECONDS:
                    continue  # perhaps still being written
            except FileNotFoundError:
                continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child.name)
    return removed

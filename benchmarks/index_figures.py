"""Index figures: building each table's index from the store against mapping its files, and the
memory of processes that load a run with mapped arrays against arrays built in memory.

    python benchmarks/index_figures.py --run runs/default

Per table: seconds to build the index from DuckDB (with its hash tables and filters, as the
exact search needs them) and seconds to map its files, and their ratio. Then, for two processes
that each run LoadedRun.load at once: RSS, PSS and the shared bytes of each (/proc/self/
smaps_rollup), with mapped files and with every array in memory (the baseline, what a process
held before the files existed). Writes the index files into the run if they are missing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

from service.ngram.index import NgramIndex
from service.ngram.index_files import load_index, map_index
from service.ngram.store import list_tables, open_store


def rollup() -> dict[str, int]:
    """MiB figures of this process from /proc/self/smaps_rollup."""
    figures = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        figures[name.rstrip(":")] = int(value) // 1024
    return figures


def table_figures(store: Path) -> None:
    with open_store(store, read_only=True) as con:
        for info in list_tables(con):
            load_index(con, store, info)  # the files, if missing
            started = time.perf_counter()
            built = NgramIndex.load(con, info.gamma, info.positional)
            built.search_aids()
            build = time.perf_counter() - started
            started = time.perf_counter()
            map_index(store, info)
            mapped = time.perf_counter() - started
            print(f"{info.name:>5}  build {build:6.2f} s  map {mapped * 1000:6.1f} ms  "
                  f"ratio {build / mapped:8.0f}×")  # fmt: skip


def load_and_measure(root: str, in_memory: bool, ready: mp.Barrier, out: mp.Queue) -> None:
    """LoadedRun.load, the samplers built and one nearest search each way, then this process's
    memory once both processes are there."""
    import numpy as np

    if in_memory:  # the baseline: every mapped array copied into private memory
        original = np.load

        def load_copy(*args: object, **kwargs: object) -> np.ndarray:
            kwargs.pop("mmap_mode", None)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        np.load = load_copy  # type: ignore[assignment]
    from service.run.loaded import LoadedRun

    started = time.perf_counter()
    run = LoadedRun.load(Path(root))
    for positional in {p for _, p in run.indexes}:
        run.sampler(positional)
    seconds = time.perf_counter() - started
    queries = run.images.images[:1]  # one search each way reads every nearest-image page
    run.nearest(images=queries, k=1, by="pixels")
    run.nearest(images=queries, k=1, by="latent")
    ready.wait()
    figures = rollup()
    out.put((seconds, figures["Rss"], figures["Pss"], figures["Shared_Clean"]))
    ready.wait()


def process_figures(root: str) -> None:
    context = mp.get_context("spawn")
    for label, in_memory in (("in memory", True), ("mapped", False)):
        ready, out = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=load_and_measure, args=(root, in_memory, ready, out))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        figures = [out.get() for _ in workers]
        for worker in workers:
            worker.join()
        for seconds, rss, pss, shared in figures:
            print(f"{label:>9}  load {seconds:5.1f} s  RSS {rss:5d} MiB  PSS {pss:5d} MiB  "
                  f"shared {shared:5d} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    args = parser.parse_args()
    table_figures(args.run / "store.duckdb")
    process_figures(str(args.run))


if __name__ == "__main__":
    main()

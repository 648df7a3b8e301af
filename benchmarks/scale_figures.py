"""Table builds, index loads and sampling at 100× the default corpus, on DuckDB and on Spark.

    .venv/bin/python benchmarks/scale_figures.py --run runs/default --out /tmp/latentgram-scale

The corpus: the run's 60,000 training latents, then 99 more copies of each with `--flips` random
bits flipped (6 M images, 96 M windows on 4×4 grids). It keeps what the windows of real latents
look like: each copy's tokens are the original's except at the flipped ones, so small-γ contexts
repeat about as often as in real data, and the flips add the rare contexts a larger corpus brings.
It does not keep the statistics of a truly larger data set: the new images are noisy copies, not
new content, so the counts of the common windows grow 100× while the new contexts are all
one-offs near a training image (at γ = 7, the global window, almost every flip makes new
contexts for the rest of its grid).

Each engine builds the tables in its own copy of the run, as `latentgram build` in a subprocess:
wall time, windows/s and the peak resident memory of its process tree (sampled every 0.2 s, JVM
and Python workers included), then the store's size and the contexts and rows per γ. The two
stores' tables are compared row for row (order-free hash sums). Then, per γ, the index load time
and resident bytes per row, and exact-sampler grids/s, at 100× beside the 1× run: both indexes
loaded, their sampling runs taken in turn (`--repeats` each) so that the machine's drift falls on
both alike. `--keep` keeps the corpus and its stores, and `--no-build` measures them again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.data.parquet import ROW_GROUP_SIZE
from service.ngram.exact import ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import SampleConfig
from service.ngram.store import list_tables, open_store
from service.run.paths import RunPaths

LATENTGRAM = str(Path(sys.executable).parent / "latentgram")


def make_corpus(source: RunPaths, out: RunPaths, copies: int, flips: int, seed: int) -> int:
    """latents.parquet of `copies` × the source's training latents (copy 0 as it is, the others
    with `flips` random bits flipped, drawn with replacement); returns its images."""
    table = pq.read_table(source.latents)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    bits = train.column("bits").combine_chunks()
    width = bits.type.byte_width
    packed = np.frombuffer(bits.buffers()[1], np.uint8)[: len(bits) * width].reshape(-1, width)
    ids = train.column("id").to_numpy()
    n, stride = len(ids), int(table.column("id").to_numpy().max()) + 1
    shape = json.loads(table.schema.metadata[b"latentgram"])["latent_shape"]
    n_bits = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    out.root.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out.latents, table.schema, compression="zstd") as writer:
        for copy in range(copies):
            noisy = packed.copy()
            for _ in range(flips if copy else 0):
                bit = rng.integers(0, n_bits, n)
                noisy[np.arange(n), bit // 8] ^= (0x80 >> (bit % 8)).astype(np.uint8)
            rows = pa.table(
                {
                    "id": pa.array(ids + copy * stride, pa.int64()),
                    "split": train.column("split"),
                    "label": train.column("label"),
                    "bits": pa.Array.from_buffers(
                        bits.type, n, [None, pa.py_buffer(noisy.tobytes())]
                    ),
                },
                schema=table.schema,
            )
            writer.write_table(rows, row_group_size=ROW_GROUP_SIZE)
    shutil.copy(source.blae_weights, out.blae_weights)  # the build checks the latents' BL-AE
    return n * copies


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak tree RSS and stderr of a command."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, tree_rss(proc.pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out}\n{err}")
    return seconds, peak, err


def table_digests(store: Path) -> dict[str, tuple[Any, ...]]:
    """Per table: row count and order-free hash sums of its rows and contexts."""
    with open_store(store, read_only=True) as con:
        return {
            t.name: con.execute(
                "SELECT (SELECT (count(*), sum(hash(context_key, token, count, images,"
                " example_image))) FROM ngrams WHERE table_id = $id),"
                " (SELECT (count(*), sum(hash(context_key, position, context)))"
                " FROM ngram_contexts WHERE table_id = $id)",
                {"id": t.table_id},
            ).fetchall()[0]
            for t in list_tables(con)
        }


def build_figures(
    paths: RunPaths, engine: str, gammas: str, memory_limit: str, images: int
) -> dict[str, Any]:
    env = {**os.environ, "PYSPARK_SUBMIT_ARGS": "--driver-memory 4g pyspark-shell"}
    args = [LATENTGRAM, "build", "--run", str(paths.root), "--gamma", gammas, "--engine", engine]
    args += (
        ["--memory-limit", memory_limit] if engine == "duckdb" else ["--spark-master", "local[2]"]
    )
    seconds, peak, _ = run_measured(args, env)
    with open_store(paths.store, read_only=True) as con:
        tables = list_tables(con)
    windows = sum(t.windows for t in tables)
    return {
        "command": " ".join(args[1:]),
        "images": images,
        "wall_s": round(seconds, 1),
        "windows_per_s": round(windows / seconds),
        "peak_rss_gib": round(peak / 2**30, 2),
        "store_gib": round(paths.store.stat().st_size / 2**30, 2),
        "tables": {
            t.name: {
                "windows": t.windows,
                "contexts": t.contexts,
                "rows": t.rows,
                "build_s": round(t.build_seconds, 1),
            }
            for t in tables
        },
    }


def rss() -> int:
    return tree_rss(os.getpid())


def load_index(store: Path, gamma: int) -> tuple[NgramIndex, dict[str, Any]]:
    """One table's index, with its load time and resident bytes per row."""
    with open_store(store, read_only=True) as con:
        before = rss()
        started = time.perf_counter()
        index = NgramIndex.load(con, gamma)
        load_s = time.perf_counter() - started
        resident = rss() - before
    rows = index.info.rows
    return index, {
        "rows": rows,
        "load_s": round(load_s, 2),
        "index_bytes_per_row": round(index.nbytes / rows, 1),
        "resident_bytes_per_row": round(resident / rows, 1),
    }


def sampling_figures(stores: dict[str, Path], gamma: int, samples: int, repeats: int) -> dict:
    """Index figures and exact-sampler grids/s per store, the stores' runs taken in turn."""
    loaded = {name: load_index(store, gamma) for name, store in stores.items()}
    samplers = {name: ExactSampler(index) for name, (index, _) in loaded.items()}
    for sampler in samplers.values():
        sampler.sample(SampleConfig(n=256, seed=99))  # compiles, and makes the weights
    rates: dict[str, list[float]] = {name: [] for name in stores}
    finished: dict[str, float] = {}
    for seed in range(repeats):
        for name, sampler in samplers.items():
            started = time.perf_counter()
            batch = sampler.sample(SampleConfig(n=samples, seed=seed))
            rates[name].append(samples / (time.perf_counter() - started))
            finished[name] = float(batch.ok.mean())
    return {
        name: {
            **figures,
            "grids_per_s": round(float(np.median(rates[name]))),
            "grids_per_s_runs": [round(r) for r in rates[name]],
            "ok_share": round(finished[name], 3),
        }
        for name, (_, figures) in loaded.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/latentgram-scale"))
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--flips", type=int, default=2, help="bits flipped in each copy's latents")
    parser.add_argument("--gammas", default="3,5,7")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--samples", type=int, default=20000, help="grids per sampling run")
    parser.add_argument("--repeats", type=int, default=3, help="sampling runs per store")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and stores in --out")
    parser.add_argument("--no-index", action="store_true", help="builds only: no loads or samples")
    parser.add_argument(
        "--no-build", action="store_true", help="sample the corpus a --keep run left in --out"
    )
    args = parser.parse_args()
    source = RunPaths(args.run)
    runs = {engine: RunPaths(args.out / engine) for engine in args.engines.split(",")}
    first = next(iter(runs.values()))
    if args.no_build and not first.store.exists():
        parser.error(f"--no-build: no store at {first.store}; run once with --keep first")
    figures: dict[str, Any] = {"copies": args.copies, "flips": args.flips}
    try:
        if not args.no_build:
            build_all(args, source, runs, figures)
        sampling = {}
        for gamma in () if args.no_index else (int(g) for g in args.gammas.split(",")):
            stores = {"1x": source.store, f"{args.copies}x": first.store}
            measured = sampling_figures(stores, gamma, args.samples, args.repeats)
            one, big = measured.values()
            measured["grids_per_s_ratio"] = round(big["grids_per_s"] / one["grids_per_s"], 2)
            sampling[f"gamma={gamma}"] = measured
            print(json.dumps({f"gamma={gamma}": measured}), flush=True)
        figures["index_and_sampling"] = sampling
    finally:
        if not (args.keep or args.no_build):
            shutil.rmtree(args.out, ignore_errors=True)
    print(json.dumps(figures, indent=2))


def build_all(
    args: argparse.Namespace, source: RunPaths, runs: dict[str, RunPaths], figures: dict
) -> None:
    """The corpus, then each engine's build of it, and whether their tables agree."""
    first, *others = runs.values()
    started = time.perf_counter()
    images = make_corpus(source, first, args.copies, args.flips, seed=0)
    figures["corpus"] = {
        "images": images,
        "latents_mib": round(first.latents.stat().st_size / 2**20, 1),
        "made_s": round(time.perf_counter() - started, 1),
    }
    for other in others:
        other.root.mkdir(parents=True, exist_ok=True)
        os.link(first.latents, other.latents)
        shutil.copy(first.blae_weights, other.blae_weights)
    for engine, paths in runs.items():
        figures[engine] = build_figures(paths, engine, args.gammas, args.memory_limit, images)
        print(json.dumps({engine: figures[engine]}), flush=True)
    digests = [table_digests(p.store) for p in runs.values()]
    figures["engines_agree"] = all(d == digests[0] for d in digests)
    if "duckdb" in runs and "spark" in runs:
        figures["spark_vs_duckdb_wall"] = round(
            figures["spark"]["wall_s"] / figures["duckdb"]["wall_s"], 2
        )


if __name__ == "__main__":
    main()

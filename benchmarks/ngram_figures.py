"""n-gram store and exact sampler figures on a prepared run, each beside its baseline.

    .venv/bin/python benchmarks/ngram_figures.py --run runs/default

- build: windows/s of the build's counting (ngram/counting.py: windows, keys, the key check and
  the histogram with its provenance, from the token grids) and of the whole build (counting,
  the rows and contexts written into the on-disk store, commit) vs window extraction plus a
  pandas groupby of the same columns (which stores nothing);
- sampling: grids/s of the batched exact sampler vs a depth-first search that asks DuckDB one
  query per position (the same algorithm, without the in-memory index);
- memory: index size per γ, and build time / index size from 10k to 60k training images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from service.data.parquet import read_latents
from service.ngram.build import build_table
from service.ngram.counting import count_chunk
from service.ngram.exact import ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import SampleConfig, uniform
from service.ngram.store import TableInfo, get_table, open_store
from service.ngram.tokens import TokenGrids
from service.ngram.windows import (
    WindowSet,
    build_windows,
    context_keys,
    gather_contexts,
    pad_grids,
)
from service.run.paths import RunPaths


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def pandas_group_by(w: WindowSet) -> None:
    """Baseline: a plain pandas groupby giving the same columns (count, distinct images, an
    example image), from the same in-memory windows."""
    frame = pd.DataFrame({"key": w.keys, "token": w.tokens, "image": w.images})
    frame.groupby(["key", "token"]).agg(
        count=("image", "size"), images=("image", "nunique"), example=("image", "min")
    )


def round_seconds(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, np.ndarray]:
    """Wall time of each function in each of `reps` rounds, the functions interleaved in every
    round so that drift in the machine's speed hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn)[1])
    return {name: np.array(t) for name, t in times.items()}


def build_figures(
    con: duckdb.DuckDBPyConnection, train: TokenGrids, gamma: int, reps: int, build_reps: int
) -> tuple[TableInfo, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seconds per round of the build's counting beside extraction plus pandas (`reps` rounds),
    then of the whole γ build beside the same (`build_reps` rounds)."""

    def extract() -> WindowSet:
        return build_windows(train.tokens, train.image_ids, gamma, pad=train.pad)

    def pandas() -> None:
        pandas_group_by(extract())

    counting = round_seconds(
        {
            "counting": lambda: count_chunk(train.tokens, train.image_ids, gamma, train.pad),
            "pandas": pandas,
        },
        reps,
    )
    build = round_seconds(
        {"build": lambda: build_table(con, train, gamma=gamma), "pandas": pandas}, build_reps
    )
    return get_table(con, gamma), counting, build


def median_ratio(baseline: np.ndarray, ours: np.ndarray) -> float:
    """How many times faster than the baseline: the median over rounds of the per-round ratio."""
    return round(float(np.median(baseline / ours)), 2)


def per_query_sampler(
    con: duckdb.DuckDBPyConnection, gamma: int, n: int, budget: int = 1000
) -> tuple[int, float]:
    """Baseline: recursive depth-first search with backtracking, one DuckDB query per position."""
    info = get_table(con, gamma)
    h, w, r = info.grid_height, info.grid_width, (gamma - 1) // 2
    started, finished = time.perf_counter(), 0
    for sample in range(n):
        grid = pad_grids(np.zeros((1, h, w), np.int64), gamma, 1 << info.latent_channels)
        steps = 0

        def search(depth: int, sample: int = sample, grid: np.ndarray = grid) -> bool:
            nonlocal steps
            if depth == h * w:
                return True
            steps += 1
            if steps > budget:
                return False
            y, x = np.array([depth // w]), np.array([depth % w])
            key = int(context_keys(gather_contexts(grid, np.zeros(1, np.int64), y, x, gamma))[0])
            rows = con.execute(
                "SELECT token, count FROM ngrams WHERE table_id = ? AND context_key = ?",
                [info.table_id, key],
            ).fetchall()
            u = uniform(sample, np.arange(len(rows)), np.full(len(rows), steps))
            order = np.argsort(-np.log(u) / np.array([c for _, c in rows], np.float64))
            for i in order:  # weighted order without replacement, as the real sampler
                grid[0, y[0] + r, x[0] + r] = rows[i][0]
                if search(depth + 1, sample, grid):
                    return True
            return False

        finished += search(0)
    return finished, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--baseline-samples", type=int, default=50)
    parser.add_argument("--counting-reps", type=int, default=15, help="rounds of counting timing")
    parser.add_argument("--build-reps", type=int, default=5, help="rounds of full-build timing")
    args = parser.parse_args()
    latents = read_latents(RunPaths(args.run).latents)
    train = latents.select(latents.splits == "train").token_grids()
    figures: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "b.duckdb") as con:
        for gamma in (3, 5, 7):
            info, counting, build = build_figures(
                con, train, gamma, args.counting_reps, args.build_reps
            )
            windows_per_s = {
                f"{stage}_{name}": round(info.windows / float(np.median(t)))
                for stage, rounds in (("counting", counting), ("build", build))
                for name, t in rounds.items()
            }
            index = NgramIndex.load(con, gamma)
            sampler = ExactSampler(index)
            sampler.sample(SampleConfig(n=256, seed=99))  # warm-up: weights cache
            batch, sample_s = timed(lambda s=sampler: s.sample(SampleConfig(n=args.samples)))
            done, base_s = per_query_sampler(con, gamma, args.baseline_samples)
            grids_per_s = args.samples / sample_s
            base_per_s = args.baseline_samples / base_s
            figures[f"gamma={gamma}"] = {
                "windows": info.windows,
                "contexts": info.contexts,
                "counting_windows_per_s": windows_per_s["counting_counting"],
                "pandas_extract_and_group_windows_per_s": windows_per_s["counting_pandas"],
                "counting_vs_pandas": median_ratio(counting["pandas"], counting["counting"]),
                "full_build_s": round(float(np.median(build["build"])), 3),
                "full_build_windows_per_s": windows_per_s["build_build"],
                "full_build_vs_pandas": median_ratio(build["pandas"], build["build"]),
                "sample_grids_per_s": round(grids_per_s),
                "sample_ok_share": round(float(batch.ok.mean()), 4),
                "median_backtracks": float(np.median(batch.backtracks)),
                "per_query_baseline_grids_per_s": round(base_per_s, 1),
                "baseline_ok_share": round(done / args.baseline_samples, 3),
                "sampler_vs_per_query": round(grids_per_s / base_per_s),
                "index_mib": round(index.nbytes / 2**20, 2),
            }
        scaling = {}
        for n in (10_000, 20_000, 40_000, 60_000):
            keep = slice(0, min(n, len(train)))
            part = TokenGrids(train.tokens[keep], train.image_ids[keep], train.channels)
            info, build_s = timed(lambda p=part: build_table(con, p, gamma=5))
            scaling[str(len(part))] = {
                "build_s": round(build_s, 3),
                "contexts": info.contexts,
                "index_mib": round(NgramIndex.load(con, 5).nbytes / 2**20, 2),
            }
        figures["gamma=5 scaling by training images"] = scaling
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

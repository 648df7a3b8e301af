"""Helpers the tests share: stand-ins written independently of the code under test (the window
definition as plain loops, a stand-in Inception network), builders of tiny token tables, and
small HTTP helpers for the live server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb
import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models import GammaARVM
from service.cli import main
from service.latents.bits import pack_bits
from service.latents.latent_set import LatentSet
from service.ngram.build import build_table
from service.ngram.histograms import Histograms
from service.ngram.index import NgramIndex
from service.ngram.store import open_store
from service.ngram.tokens import TokenGrids, tokens_to_bits
from tests.live_server import LiveServer

T = TypeVar("T")

# --- the command line -------------------------------------------------------------------------


def latentgram(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`latentgram ARGS` through the console script's own entry point, in this process: its exit
    status, stdout and stderr. The same code as the installed script runs, without the seconds
    of start-up a subprocess pays for importing torch (tests/cli/test_commands.py runs the real
    script where that is what is tested). `env` variables are set for the call alone; those
    named with an empty value are unset."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            if value:
                patch.setenv(name, value)
            elif name in os.environ:
                patch.delenv(name)
        patch.setattr(sys, "argv", ["latentgram", *args])
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as code:
            main()
    return subprocess.CompletedProcess(
        args, int(code.value.code or 0), out.getvalue(), err.getvalue()
    )


def refusal_before_torch(*args: str) -> tuple[int, str, bool]:
    """`latentgram ARGS` in a fresh interpreter: (exit status, stderr, whether torch was
    imported by then). A refusal should come at once, not after the seconds torch takes."""
    code = (
        "import sys\n"
        "from service.cli import main\n"
        f"sys.argv = ['latentgram', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    print(exc.code, 'torch' in sys.modules)"
    )
    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    status, torch_loaded = done.stdout.split() if done.stdout else ("None", "None")
    return int(status) if status.isdigit() else -1, done.stderr, torch_loaded == "True"


def kill_at_stage(script: str, stage: str, *args: str) -> None:
    """Run `script` (python -c) with ARGS, wait until it prints `stage`, then kill it there:
    the scripts print the stage they reach when it is the one named in their arguments, and
    then wait on stdin, so the kill lands at a known point."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == stage
    proc.kill()
    proc.wait(timeout=30)


# --- the n-gram engine ------------------------------------------------------------------------


def window_at(grid: np.ndarray, y: int, x: int, gamma: int, pad: int) -> tuple[int, ...]:
    """The causal context of (y, x) by the definition, one token at a time."""
    r = (gamma - 1) // 2
    h, w = grid.shape
    cells = [(y + dy, x + dx) for dy in range(-r, 0) for dx in range(-r, r + 1)]
    cells += [(y, x + dx) for dx in range(-r, 0)]
    return tuple(int(grid[yy, xx]) if 0 <= yy < h and 0 <= xx < w else pad for yy, xx in cells)


def brute_force_histograms(
    tokens: np.ndarray, ids: np.ndarray, gamma: int, pad: int, positional: bool = False
) -> dict[tuple[int, ...], dict[int, tuple[int, set[int]]]]:
    """context → token → (count, image ids) by scanning every window of every grid.

    For positional tables the raster position is appended to the context.
    """
    counts: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
    images: dict[tuple[tuple[int, ...], int], set[int]] = defaultdict(set)
    for grid, image in zip(tokens, ids, strict=True):
        for y in range(grid.shape[0]):
            for x in range(grid.shape[1]):
                ctx, tok = window_at(grid, y, x, gamma, pad), int(grid[y, x])
                if positional:
                    ctx += (y * grid.shape[1] + x,)
                counts[ctx][tok] += 1
                images[(ctx, tok)].add(int(image))
    return {
        ctx: {tok: (n, images[(ctx, tok)]) for tok, n in hist.items()}
        for ctx, hist in counts.items()
    }


def grids_from_tokens(
    tokens: np.ndarray, channels: int, ids: np.ndarray | None = None
) -> TokenGrids:
    """Training token grids (N, H, W) with ids 0 … N−1 (or the given ones)."""
    return TokenGrids(
        np.asarray(tokens, np.int64), np.arange(len(tokens)) if ids is None else ids, channels
    )


def index_of(
    store: Path, tokens: np.ndarray, channels: int, gamma: int, positional: bool = False
) -> NgramIndex:
    """Build the γ table of some token grids into a store and load its index."""
    with open_store(store) as con:
        build_table(con, grids_from_tokens(tokens, channels), gamma=gamma, positional=positional)
        return NgramIndex.load(con, gamma, positional)


def latents_from_tokens(
    tokens: np.ndarray, channels: int, ids: np.ndarray | None = None
) -> LatentSet:
    """A training-split LatentSet holding the given (N, H, W) token grids."""
    n, h, w = tokens.shape
    ids = np.arange(n) if ids is None else ids
    packed = pack_bits(tokens_to_bits(tokens, channels))
    return LatentSet(
        ids, np.full(n, "train"), np.zeros(n, np.int64), packed, (channels, h, w), "0" * 64
    )


# A context's token list as 0001 and 0002 stored it: a blob of little-endian uint32s.
_TOKENS_AS_BLOB = (
    "unhex(array_to_string(list_transform(c.context, lambda t: printf('%02x%02x%02x%02x',"
    " t % 256, (t // 256) % 256, (t // 65536) % 256, t // 16777216)), ''))"
)


def downgrade_to_first_schema(store: Path) -> None:
    """Rewrite a store in the layout of migration 0001, as an older latentgram left it: the
    context (a blob) and position on every token row of `ngrams`, no `ngram_contexts`."""
    with duckdb.connect(str(store)) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "CREATE TABLE first_ngrams AS SELECT n.table_id, n.context_key,"
            f" {_TOKENS_AS_BLOB} AS context, c.position, n.token, n.count, n.images,"
            " n.example_image FROM ngrams n JOIN ngram_contexts c USING (table_id, context_key)"
        )
        con.execute("DROP TABLE ngrams")
        con.execute("DROP TABLE ngram_contexts")
        con.execute("ALTER TABLE first_ngrams RENAME TO ngrams")
        con.execute("DELETE FROM schema_version WHERE version > 1")
        con.execute("COMMIT")


class SmallTables(NamedTuple):
    """Tables γ = 3 and 5 over 40 random 3×4 grids of 2-bit tokens, and a trained γ = 5 ARVM."""

    grids: TokenGrids
    histograms: dict[int, Histograms]  # γ → the table's histograms
    indexes: dict[int, NgramIndex]  # γ → index
    net: GammaARVM  # trained on the γ = 5 histograms until they are nearly memorized

    @property
    def tokens(self) -> np.ndarray:
        return self.grids.tokens


SMALL_CHANNELS, SMALL_GRID = 2, (3, 4)


# --- the HTTP API ---------------------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def without_timing(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "seconds"}


def post(server: LiveServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=60, **kwargs)


def get(server: LiveServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=60, **kwargs)


def assert_problem(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll `condition` until it returns something truthy, which is returned; fail after the
    deadline. Tests wait on what they need to see, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return value


def readiness_reason(server: LiveServer) -> str | None:
    """/readyz's reason once the first load has ended (None while it says "loading")."""
    reason: str = get(server, "/readyz").json()["reason"]
    return None if reason == "the run is loading" else reason


# --- Inception --------------------------------------------------------------------------------


PROBES = ("channels", "height", "width", "min", "max", "channel_spread", "float32", "mean")


class StandInInception(nn.Module):
    """Same call signature as NVIDIA's TorchScript Inception; its "features" describe its input.

    The first columns hold what the network received (see PROBES); the rest are zero. Without
    return_features it returns 1008 logits, as the real one does.
    """

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        b = x.shape[0]
        if not return_features:
            return torch.zeros(b, 1008)
        flat = x.reshape(b, -1)
        spread = (x - x[:, :1]).abs().reshape(b, -1).amax(1)  # 0 when all channels are equal
        is_float32 = 1.0 if x.dtype == torch.float32 else 0.0
        probes = torch.stack(
            [
                torch.full((b,), float(x.shape[1])),
                torch.full((b,), float(x.shape[2])),
                torch.full((b,), float(x.shape[3])),
                flat.amin(1).float(),
                flat.amax(1).float(),
                spread.float(),
                torch.full((b,), is_float32),
                flat.float().mean(1),
            ],
            1,
        )
        return torch.cat([probes, torch.zeros(b, 2048 - probes.shape[1])], 1)


class NoFeaturesFlag(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))

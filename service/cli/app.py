"""The Typer app, the options several commands share, and the entry point that turns user
errors into one line on stderr and exit status 2."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import duckdb
import typer

from models import PRESETS, describe_preset
from service.errors import InvalidInputError, LatentgramError, first_line
from service.ngram.samples import MAX_SEED

try:  # typer 0.24 and later carry their own copy of click, with its own exception classes
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError  # type: ignore[assignment]

app = typer.Typer(
    help="Latent n-gram image generation: see where generation ends and memorization begins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich's boxes printed "<bool>" beside every flag
    context_settings={"max_content_width": 100},  # click's 80 cut the commands' summaries short
)

RunOpt = Annotated[Path, typer.Option("--run", help="Run directory, as `prepare` made it.")]
SeedOpt = Annotated[
    int,
    typer.Option(
        help="Same seed, same samples (0 … 2^53 − 1, as in the API).", min=0, max=MAX_SEED
    ),
]
NewRunOpt = Annotated[Path, typer.Option("--run", help="Run directory (created if missing).")]
SourceOpt = Annotated[
    str,
    typer.Option(
        help="Data source: fashion-mnist (Debian package), idx:PATH (MNIST-layout IDX files), "
        "cifar10:PATH (CIFAR-10 python archive or folder) or folder:PATH (a sub-folder per class)."
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(help="Keep N images of each split, the same number from every class.", min=1),
]
ClassesOpt = Annotated[
    str | None, typer.Option(help="Comma-separated labels to keep, e.g. 0,7,9 (default: all).")
]
PresetOpt = Annotated[
    str,
    typer.Option(
        help="BL-AE architecture preset, with its latent C×H×W per 28×28 image: "
        + "; ".join(describe_preset(name) for name in PRESETS)
        + "."
    ),
]
EpochsOpt = Annotated[int, typer.Option(help="Training epochs (total, also when resuming).", min=1)]


def device_name(value: str) -> str:
    """Option callback: the device's spelling, and CUDA asked for on a Linux machine without a
    GPU, checked before torch loads (seconds) to find out whether CUDA is there."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    if value.startswith("cuda") and sys.platform == "linux" and not has_gpu_device_files():
        raise typer.BadParameter(f"{value!r} asked for, but CUDA is not available here (no GPU)")
    return value


def has_gpu_device_files() -> bool:
    """Whether Linux shows a device that PyTorch's CUDA can drive: NVIDIA's (/dev/nvidiactl),
    AMD's through ROCm (/dev/kfd) or WSL's (/dev/dxg). Without one it has none to find."""
    return any(Path(name).exists() for name in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def positive_number(value: float | None) -> float | None:
    """Option callback: a finite number > 0 (typer's `min=` lets 0 through and calls NaN
    "not ≥ 0")."""
    if value is not None and not 0 < value < math.inf:
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value


DeviceOpt = Annotated[
    str,
    typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.", callback=device_name),
]
SearchPassesOpt = Annotated[
    int,
    typer.Option(
        help="Improve each stored code for the decoder by this many proposed bit flips (0: the "
        "encoder's signs; 40: test PSNR +0.8 dB on the default run, +1.5 dB on a 256-bit "
        "straight-through one, ~4-5 ms an image on 2 CPU cores).",
        min=0,
    ),
]
GammasOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated odd window sizes ≥ 3, e.g. 3,5,7 (default: from local to global, "
        "3,5,7 on a 4×4 grid, 3,5,7,11,15 on 8×8, 3,5,7,11,17,27,31 on 16×16)."
    ),
]


def emit(title: str, figures: dict[str, Any]) -> None:
    typer.echo(f"{title}\n{json.dumps(figures, indent=2)}")


def output_file(path: Path, option: str = "--out") -> Path:
    """`path`, its folder made; InvalidInputError naming the option when it cannot be written
    there, asked before the work whose result it would hold."""
    if path.is_dir():
        raise InvalidInputError(f"{option} {path} is a folder: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = f"{exc.filename} is a file" if isinstance(exc, FileExistsError) else exc.strerror
        raise InvalidInputError(f"{option} {path}: its folder cannot be made ({why})") from None
    return path


def parse_int_list(text: str | None, what: str) -> tuple[int, ...] | None:
    """ "1,3,5" → (1, 3, 5); None stays None."""
    if text is None or text == "":
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInputError(f"{what} must be comma-separated integers, got {text!r}") from None


def main() -> None:
    """Console entry point: user errors, ours and the command line's own (an unknown option, a
    value out of range), become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(standalone_mode=False)
    except LatentgramError as exc:
        fail(str(exc))
    except UsageError as exc:
        if not exc.format_message():  # no command: the help was printed, nothing more to say
            sys.exit(2)
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        fail(f"{exc.format_message()}{where}")
    except (KeyboardInterrupt, typer.Abort) as exc:
        if isinstance(exc.__cause__, EOFError):  # click reports an EOFError as an abort
            fail(f"a file ended too soon: {first_line(exc.__cause__)}")
        interrupted()
    except OSError as exc:  # a path that cannot be read or written, or a damaged file
        fail(first_line(exc))
    except duckdb.Error as exc:  # a damaged store (its error names the file)
        fail(f"DuckDB failed: {first_line(exc)}")
    if code == INTERRUPTED:  # typer turns Ctrl-C into this code itself, saying nothing
        interrupted()
    sys.exit(code if isinstance(code, int) else 0)


INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def interrupted() -> NoReturn:
    typer.echo("latentgram: interrupted", err=True)
    sys.exit(INTERRUPTED)


def fail(message: str) -> NoReturn:
    typer.echo(f"latentgram: error: {message}", err=True)
    sys.exit(2)

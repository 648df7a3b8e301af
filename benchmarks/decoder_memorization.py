"""How far a decoder can memorize its training images: fresh decoders trained on a run's frozen
hard codes of its first N training images, the run's own 1×1 head (the baseline) beside a global
head of each given width (the paper-t1 preset's kind), train and test PSNR side by side.

A decoder that memorizes reconstructs its training images far better than test images; one that
generalizes reconstructs both alike. How many images a global head memorizes to a given PSNR
grows with its parameters, which is what sizes paper-t1 for the 60,000 Fashion-MNIST images.

    .venv/bin/python benchmarks/decoder_memorization.py --run runs/default --images 2000 \
        --epochs 80 --widths 2048
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from decoder_headroom import hard_codes

from models.blae import BLAE
from models.blae_train import psnr_from_mse
from models.common import adam, set_cosine_lr, shuffled_batches, to_unit
from models.device import autocast_for
from service.data.parquet import read_images
from service.run.models import load_blae
from service.run.paths import RunPaths

BATCH = 64


@torch.no_grad()
def psnr(model: BLAE, codes: torch.Tensor, images: torch.Tensor) -> float:
    """PSNR of `model` decoding `codes`, against the uint8 `images`."""
    squared = 0.0
    with autocast_for(codes.device, "auto"):
        for i in range(0, len(codes), 1000):
            out = model.decode(codes[i : i + 1000]).float()
            squared += F.mse_loss(out, to_unit(images[i : i + 1000]), reduction="sum").item()
    return psnr_from_mse(squared / images.numel())


def train_decoder(
    model: BLAE,
    codes: torch.Tensor,
    images: torch.Tensor,
    args: argparse.Namespace,
    report: Callable[[int], None],
) -> None:
    """Adam on the decoder alone, cosine-decayed; `report(epoch)` after the epochs it prints."""
    optimizer = adam(model.decoder.parameters(), args.lr)
    steps = args.epochs * math.ceil(len(images) / BATCH)
    step = 0
    every = max(1, args.epochs // 8)
    for epoch in range(1, args.epochs + 1):
        shuffle = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
        for idx in shuffled_batches(len(images), BATCH, shuffle):
            set_cosine_lr(optimizer, args.lr, step / steps, floor=0.02)
            step += 1
            with autocast_for(codes.device, "auto"):
                loss = F.mse_loss(model.decode(codes[idx]).float(), to_unit(images[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch % every == 0 or epoch == args.epochs:
            report(epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--images", type=int, default=2000, help="training images to memorize")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument(
        "--widths", default="2048", help="comma-separated widths of global heads' dense layers"
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = RunPaths(args.run)
    _, images = read_images(paths.require(paths.images, "encode"))
    train = torch.from_numpy(images.images[images.splits == "train"][: args.images])
    test = torch.from_numpy(images.images[images.splits == "test"][: args.test_images])
    run_model = load_blae(paths).model.eval()
    train_codes, test_codes = hard_codes(run_model, train), hard_codes(run_model, test)
    heads = {"local (the run's 1×1 head)": run_model.config}
    for width in (int(w) for w in args.widths.split(",")):
        heads[f"global, {width} wide"] = dataclasses.replace(
            run_model.config, decoder_head="global", decoder_head_width=width, head_layers=2
        )
    for name, config in heads.items():
        torch.manual_seed(args.seed)
        model = BLAE(config)
        report = reporter(name, model, (train_codes, train), (test_codes, test))
        train_decoder(model, train_codes, train, args, report)


def reporter(
    name: str,
    model: BLAE,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
) -> Callable[[int], None]:
    """What prints one JSON line of `model`'s figures after an epoch: (codes, images) pairs."""
    parameters = sum(p.numel() for p in model.decoder.parameters())
    started = time.perf_counter()

    def report(epoch: int) -> None:
        print(json.dumps({
            "decoder": name,
            "epoch": epoch,
            "train_psnr_db": round(psnr(model, *train), 2),
            "test_psnr_db": round(psnr(model, *test), 2),
            "parameters_per_image": round(parameters / len(train[1])),
            "wall_s": round(time.perf_counter() - started, 1),
        }, ensure_ascii=False), flush=True)  # fmt: skip

    return report


if __name__ == "__main__":
    main()

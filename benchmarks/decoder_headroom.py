"""Whether a run's codes or its decoder bound its reconstructions: a fresh decoder, wider than the
run's, trained on the run's frozen hard-binarized training codes, against the run's own decoder
on the same test images (the baseline), side by side.

If the wider decoder ends near the run's PSNR, the codes hold no more than the run's decoder
reads from them, and a better PSNR at the same bits needs a better encoder, not a bigger decoder.

    .venv/bin/python benchmarks/decoder_headroom.py --run runs/default --epochs 3 --scale 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from models.blae import BLAE, binarize
from models.blae_train import evaluate_blae
from models.common import set_cosine_lr, shuffled_batches, to_unit
from service.data.parquet import read_images
from service.run.models import load_blae
from service.run.paths import RunPaths


@torch.no_grad()
def hard_codes(model: BLAE, images: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    starts = range(0, len(images), batch)
    codes = [binarize(model.encode(to_unit(images[i : i + batch]))) for i in starts]
    return torch.cat(codes).contiguous(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=2, help="width of the new decoder's layers")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    paths = RunPaths(args.run)
    _, images = read_images(paths.require(paths.images, "encode"))
    train = torch.from_numpy(images.images[images.splits == "train"])
    test = torch.from_numpy(images.images[images.splits == "test"])
    run_model = load_blae(paths).model.eval()
    baseline = evaluate_blae(run_model, test).psnr_binary
    print(json.dumps({"run_decoder_test_psnr_binary_db": round(baseline, 2)}), flush=True)

    config = run_model.config
    wider = dataclasses.replace(
        config,
        decoder_widths=tuple(w * args.scale for w in config.decoder_widths),
        head_width=config.head_width * args.scale,
    )
    model = BLAE(wider)
    model.encoder = run_model.encoder  # frozen: only the decoder is optimized
    codes = hard_codes(run_model, train)
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=args.lr)
    steps, step, started = args.epochs * -(-len(train) // 64), 0, time.perf_counter()
    for epoch in range(args.epochs):
        shuffle = torch.Generator().manual_seed(args.seed * 1_000_003 + epoch)
        for idx in shuffled_batches(len(train), 64, shuffle):
            set_cosine_lr(optimizer, args.lr, step / steps, floor=0.02)
            step += 1
            loss = F.mse_loss(model.decode(codes[idx]), to_unit(train[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        psnr = evaluate_blae(model, test).psnr_binary
        print(json.dumps({
            "epoch": epoch + 1,
            "wider_decoder_test_psnr_binary_db": round(psnr, 2),
            "gain_db": round(psnr - baseline, 2),
            "wall_s": round(time.perf_counter() - started, 1),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

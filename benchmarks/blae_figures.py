"""BL-AE figures of a prepared run: training time and quality from run.json, and encode/decode
throughput measured now, batched against one image at a time (the baseline), side by side.

    .venv/bin/python benchmarks/blae_figures.py --run runs/default
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from service.data.parquet import read_images
from service.latents.codec import decode_packed, encode_images
from service.run.models import load_blae
from service.run.paths import RunPaths
from service.run.record import read_run_json


def images_per_second(fn, images: np.ndarray, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(images)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--images", type=int, default=10_000, help="images to time on")
    args = parser.parse_args()
    paths = RunPaths(args.run)
    run = read_run_json(paths)
    model = load_blae(paths).model
    _, images = read_images(paths.require(paths.images, "encode"))
    pixels = images.images[: args.images]
    packed, _ = encode_images(model, pixels)
    single = pixels[:200]

    encode_batched = images_per_second(lambda x: encode_images(model, x), pixels)
    encode_single = images_per_second(lambda x: encode_images(model, x, batch_size=1), single)
    decode_batched = images_per_second(lambda p: decode_packed(model, p), packed)
    decode_single = images_per_second(
        lambda p: [decode_packed(model, p[i : i + 1]) for i in range(len(p))], packed[:200]
    )
    blae = run.get("blae", {})
    figures = {
        "threads": torch.get_num_threads(),
        "training_wall_s": blae.get("wall_s"),
        "epochs": blae.get("epochs_done"),
        "latent_shape": run.get("encode", {}).get("latent_shape"),
        "train_psnr_binary_db": blae.get("train_metrics", {}).get("psnr_binary"),
        "test_psnr_binary_db": (blae.get("test_metrics") or {}).get("psnr_binary"),
        "test_brate": (blae.get("test_metrics") or {}).get("brate"),
        "encode_images_per_s": round(encode_batched),
        "encode_one_at_a_time_images_per_s": round(encode_single),
        "encode_batched_vs_single": round(encode_batched / encode_single, 1),
        "decode_images_per_s": round(decode_batched),
        "decode_one_at_a_time_images_per_s": round(decode_single),
        "decode_batched_vs_single": round(decode_batched / decode_single, 1),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

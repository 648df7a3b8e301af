"""Whether a run's encoder or its decoder bounds its reconstructions, from the other side than
decoder_headroom.py: the run's decoder kept as it is, and each test image's hard code improved
bit by bit until no single flip lowers the image's error. The encoder's codes are the baseline
(pass 0), on the same images.

Each pass decodes every one-bit change of every image's code and keeps the best one where it
lowers that image's squared error. A search that ends far above the encoder's PSNR says the
decoder can draw better images than the encoder asks it for (an amortization gap), and its cost
per image and pass says what finding such codes at encode time would take.

    .venv/bin/python benchmarks/code_search.py --run runs/default --images 100 --passes 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from models.blae import BLAE, binarize
from models.blae_train import psnr_from_mse
from models.common import to_unit
from models.device import autocast_for
from service.run.models import load_blae
from service.run.paths import RunPaths
from service.run.steps import run_data_spec

IMAGES_PER_FORWARD = 8  # × the code's bits: the one-bit changes decoded in one forward pass


def squared_errors(model: BLAE, codes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each code's decoded image against its image: (N,)."""
    return (model.decode(codes).float() - images).pow(2).flatten(1).mean(1)


def best_flips(model: BLAE, codes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The error of each image's best one-bit change and which bit it flips: (N,), (N,)."""
    n, bits = len(codes), codes[0].numel()
    flip = 1 - 2 * torch.eye(bits).view(bits, *codes.shape[1:])  # −1 at one bit of each row
    changed = (codes[:, None] * flip[None]).flatten(0, 1)
    errors = squared_errors(model, changed, images.repeat_interleave(bits, 0))
    return errors.view(n, bits).min(1)


@torch.no_grad()
def search_pass(
    model: BLAE, codes: torch.Tensor, images: torch.Tensor, errors: torch.Tensor
) -> int:
    """One pass over all images: each keeps its best one-bit change if it lowers its error
    (`codes` and `errors` updated in place); returns how many images changed."""
    changed = 0
    for start in range(0, len(codes), IMAGES_PER_FORWARD):
        part = slice(start, start + IMAGES_PER_FORWARD)
        best, bit = best_flips(model, codes[part], images[part])
        better = torch.nonzero(best < errors[part]).flatten()
        flat = codes[part].flatten(1)  # a view: codes are contiguous
        flat[better, bit[better]] *= -1
        errors[start + better] = best[better]
        changed += len(better)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--images", type=int, default=100, help="the first N test images")
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    paths = RunPaths(args.run)
    model = load_blae(paths).model.eval()
    loaded = run_data_spec(paths).load()
    test = torch.from_numpy(loaded.images[loaded.splits == "test"][: args.images])
    images = to_unit(test)
    with torch.no_grad(), autocast_for(torch.device("cpu"), "auto"):
        codes = binarize(model.encode(images)).float().contiguous()
        errors = squared_errors(model, codes, images)
        baseline = psnr_from_mse(errors.mean().item())
        print(json.dumps({"pass": 0, "test_psnr_binary_db": round(baseline, 2)}), flush=True)
        started = time.perf_counter()
        for done in range(1, args.passes + 1):
            changed = search_pass(model, codes, images, errors)
            wall = time.perf_counter() - started
            print(json.dumps({
                "pass": done,
                "test_psnr_binary_db": round(psnr_from_mse(errors.mean().item()), 2),
                "images_changed": changed,
                "ms_per_image_and_pass": round(1000 * wall / done / len(images), 1),
            }), flush=True)  # fmt: skip
            if changed == 0:
                break


if __name__ == "__main__":
    main()

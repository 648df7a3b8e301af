"""The memorization report on a small real run, checked against brute force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from service.errors import InvalidInputError
from service.evaluation.pixels import PSNR_CAP_DB
from service.evaluation.report import ClosenessMeter, baseline_rows, build_report
from service.evaluation.report_config import REPORT_JSON, REPORT_PLOT, ReportConfig
from service.ngram.samples import SampleConfig
from service.run.build import build_run_tables
from service.run.loaded import LoadedRun
from service.run.paths import RunPaths
from tests.helpers import StandInInception
from tests.live_server import start_server, wait_ready


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, prepared_run: RunPaths) -> RunPaths:
    """A copy of the prepared run with γ = 7 (global on a 4×4 grid) built and a report written."""
    paths = RunPaths(tmp_path_factory.mktemp("reported") / "run")
    shutil.copytree(prepared_run.root, paths.root)
    build_run_tables(paths, (7,), progress=False)
    build_report(LoadedRun.load(paths.root), ReportConfig(samples=24, seed=5), progress=False)
    return paths


@pytest.fixture(scope="module")
def run(reported: RunPaths) -> LoadedRun:
    return LoadedRun.load(reported.root)


def brute_psnr(query: np.ndarray, images: np.ndarray) -> float:
    """Best PSNR of one image against every image, one pair at a time."""
    best = 0.0
    for image in images:
        mse = np.mean((query.astype(np.float64) - image.astype(np.float64)) ** 2) / 255.0**2
        best = max(best, PSNR_CAP_DB if mse <= 1e-10 else 10 * np.log10(1 / mse))
    return min(best, PSNR_CAP_DB)


def test_rates_equal_brute_force(reported: RunPaths, run: LoadedRun) -> None:
    report = json.loads((reported.reports / REPORT_JSON).read_text())
    train = run.latents.splits == "train"
    train_images = run.images.images[train]
    train_bits = np.unpackbits(run.latents.packed[train], axis=1)
    recon = run.decode(run.latents.packed[train])
    for gamma, mode in [(5, "exact"), (5, "hybrid"), (3, "exact")]:
        generated = run.sample(gamma=gamma, mode=mode, config=SampleConfig(n=24, seed=5))
        ok = generated.batch.ok
        images = generated.images[ok]
        bits = np.unpackbits(run.pack_tokens(generated.batch.tokens[ok]), axis=1)
        raw = np.array([brute_psnr(x, train_images) for x in images])
        to_recon = np.array([brute_psnr(x, recon) for x in images])
        hamming = np.array([(b != train_bits).sum(axis=1).min() for b in bits])
        result = report["results"][f"g{gamma}-{mode}"]
        assert result["finished"] == ok.sum() == result["count"]
        assert result["memorization_rate"] == pytest.approx((raw > 30).mean())
        assert result["memorization_rate_reconstruction"] == pytest.approx((to_recon > 30).mean())
        assert result["exact_copy_rate"] == pytest.approx((hamming == 0).mean())
        # novel: farther from the training reconstructions than the median decoded test image
        threshold = report["novelty_psnr_db"]
        assert result["novelty_rate"] == pytest.approx((to_recon < threshold).mean())
        assert not (result["novelty_rate"] > 0 and (hamming == 0).all())
        assert result["psnr"]["p50"] == pytest.approx(np.percentile(raw, 50), abs=1e-3)
        assert sum(result["hamming_histogram"]) == len(images)


def test_global_gamma_exact_samples_are_copies(reported: RunPaths) -> None:
    report = json.loads((reported.reports / REPORT_JSON).read_text())
    exact7 = report["results"]["g7-exact"]
    assert exact7["finished"] > 0 and exact7["exact_copy_rate"] == 1.0
    assert exact7["memorization_rate_reconstruction"] == 1.0
    assert exact7["novelty_rate"] == 0.0  # a copy, however blurred its decoding, is not novel
    # no γ-ARVM for γ = 7 in this run: those sets are reported as skipped, not dropped
    assert "skipped" in report["results"]["g7-neural"]
    assert report["baseline"]["count"] == 24
    assert report["baseline"]["classifier_frechet"] is not None
    # copies decode to the training reconstructions: no closer to the test images than those
    floor = report["baseline"]["reconstructions"]["classifier_frechet"]
    assert floor > report["baseline"]["classifier_frechet"]


def test_report_holds_the_held_out_likelihood(reported: RunPaths) -> None:
    likelihood = json.loads((reported.reports / REPORT_JSON).read_text())["likelihood"]
    assert likelihood["gammas"] == [3, 5, 7]
    test, train = likelihood["bits_per_token"]["test"], likelihood["bits_per_token"]["train"]
    assert set(test["ngram"]) == {"3", "5", "7"} and set(test["interpolated"]) == {"5"}
    # on its own training windows a table is sharper than on held-out ones
    assert all(test["ngram"][g] > train["ngram"][g] for g in ("3", "5", "7"))


def test_planted_copy_is_flagged_and_a_new_image_is_not(run: LoadedRun) -> None:
    meter = ClosenessMeter(run.neighbours)
    train = np.flatnonzero(run.latents.splits == "train")[:3]
    copies = run.images.images[train]
    packed = run.latents.packed[train]
    planted = meter.measure(copies, packed, decoded=run.decode(packed))
    assert planted.memorized.all() and planted.exact_copy.all()
    assert planted.memorized_reconstruction.all()
    noise = np.random.default_rng(1).integers(0, 256, (3, *copies.shape[1:]), dtype=np.uint8)
    new = meter.measure(noise, run.encode(noise))
    assert not new.memorized.any() and not new.memorized_reconstruction.any()
    assert not new.exact_copy.any()


def test_report_files_and_endpoint(reported: RunPaths) -> None:
    report = json.loads((reported.reports / REPORT_JSON).read_text())
    assert (reported.reports / REPORT_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert Path(report["results"]["g5-exact"]["sheet"]).read_bytes()[:4] == b"\x89PNG"
    for server in start_server(reported):
        wait_ready(server)
        assert httpx.get(f"{server.url}/v1/info").json()["report"] is True
        served = httpx.get(f"{server.url}/v1/report").json()
        assert served["results"].keys() == report["results"].keys()
        plot = httpx.get(f"{server.url}/v1/report/memorization.png")
        assert plot.headers["content-type"] == "image/png"


def test_sheets_caption_every_pair(reported: RunPaths, run: LoadedRun) -> None:
    report = json.loads((reported.reports / REPORT_JSON).read_text())
    copies = report["results"]["g7-exact"]  # γ = 7 covers the whole grid: all exact copies
    pairs = copies["sheet_pairs"]
    assert len(pairs) == min(32, copies["finished"]) > 0
    assert all(p["exact_copy"] and p["hamming_bits"] == 0 for p in pairs)
    names = run.images.class_names
    train_labels = dict(zip(run.latents.ids.tolist(), run.latents.labels.tolist(), strict=True))
    assert all(p["label"] == names[train_labels[p["training_id"]]] for p in pairs)
    rows = -(-len(pairs) // 4)
    sheet = np.asarray(Image.open(copies["sheet"]).convert("RGB"))
    assert sheet.shape[0] == rows * (84 + 30 + 8) + 8  # a caption strip under every row
    caption = sheet[8 + 84 : 8 + 84 + 30, 8 : 8 + 84 * 2]
    reddish = (caption[..., 0] > 150) & (caption[..., 1] < 100)
    assert (caption.min(axis=2) < 100).sum() > 50 and reddish.any()  # text, "exact copy" in red
    hybrid = report["results"]["g5-hybrid"]["sheet_pairs"]
    assert [p["hamming_bits"] > 0 for p in hybrid] == [not p["exact_copy"] for p in hybrid]


def test_sheet_captions_describe_the_pair_shown(reported: RunPaths, run: LoadedRun) -> None:
    """Each caption's bits and dB are those of the sample and the training image beside it,
    and an exact copy is shown beside the image it copies."""
    report = json.loads((reported.reports / REPORT_JSON).read_text())
    train = run.latents.splits == "train"
    latents = dict(zip(run.latents.ids[train].tolist(), run.latents.packed[train], strict=True))
    pixels = dict(zip(run.files.image_ids.tolist(), run.images.images, strict=True))
    for gamma, mode in [(5, "exact"), (3, "exact"), (5, "hybrid")]:
        generated = run.sample(gamma=gamma, mode=mode, config=SampleConfig(n=24, seed=5))
        ok = generated.batch.ok
        packed = run.pack_tokens(generated.batch.tokens[ok])
        pairs = report["results"][f"g{gamma}-{mode}"]["sheet_pairs"]
        for pair, bits, image in zip(pairs, packed, generated.images[ok], strict=False):
            shown = pair["training_id"]
            assert pair["hamming_bits"] == int(np.unpackbits(bits ^ latents[shown]).sum())
            assert pair["psnr_db"] == pytest.approx(brute_psnr(image, [pixels[shown]]), abs=0.01)
            if any(np.array_equal(bits, other) for other in latents.values()):
                assert pair["exact_copy"] and pair["hamming_bits"] == 0


def test_bad_report_options(run: LoadedRun) -> None:
    with pytest.raises(InvalidInputError, match="no table built"):
        build_report(run, ReportConfig(samples=4, gammas=(9,)), progress=False)
    with pytest.raises(InvalidInputError, match=r"modes must be among .*, got dream$"):
        ReportConfig(modes=("dream",))


def test_report_takes_fid_with_a_supplied_inception_file(
    tmp_path: Path, reported: RunPaths
) -> None:
    """--inception adds the standard FID beside the classifier distance (stand-in network)."""
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(StandInInception()).save(str(path))
    shutil.copytree(reported.root, tmp_path / "run")  # leave the module's report as it is
    config = ReportConfig(samples=8, gammas=(5,), modes=("exact",), inception=path)
    report = build_report(LoadedRun.load(tmp_path / "run"), config, progress=False)
    assert report["baseline"]["fid"] >= 0 and report["results"]["g5-exact"]["fid"] >= 0
    assert report["config"]["inception"] == str(path)


def test_baselines_of_a_source_stored_class_by_class_hold_every_class() -> None:
    """Rows sorted by class, as a folder source numbers them: the first 20 of each split would
    be all zeros; the baseline takes two of each of the ten classes."""
    labels = np.repeat(np.arange(10), 50)
    splits = np.where(np.arange(500) % 50 < 40, "train", "test")
    test_rows, train_rows = baseline_rows(labels, splits, 20)
    for rows, split in ((test_rows, "test"), (train_rows, "train")):
        assert (splits[rows] == split).all() and len(rows) == 20
        assert np.bincount(labels[rows], minlength=10).tolist() == [2] * 10

"""The BL-AE model: shapes, presets, configs and its initialization."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import (
    BLAE,
    PRESETS,
    BLAEConfig,
    BLAEMetrics,
    BLAETrainConfig,
    binarize,
    blae_preset,
    collapse_reason,
    evaluate_blae,
)
from service.ngram.tokens import bits_to_tokens


@pytest.mark.parametrize("image_size,channels", [(28, 1), (32, 3), (20, 1)])
def test_encode_decode_shapes(image_size: int, channels: int) -> None:
    config = blae_preset("tiny", image_size=image_size, image_channels=channels)
    model = BLAE(config).eval()
    x = torch.rand(5, channels, image_size, image_size)
    codes = model.encode(x)
    assert codes.shape == (5, *config.latent_shape)
    assert codes.abs().max() <= 1
    assert model.decode(binarize(codes)).shape == x.shape
    out = model.train()(x)
    assert out.reconstruction.shape == x.shape and out.codes.shape == codes.shape


def test_presets_build_and_latent_geometry() -> None:
    for name, config in PRESETS.items():
        if name == "paper-t5":  # 8196-wide layers: fine to build, slow to allocate in a unit test
            continue
        model = BLAE(config)
        images = torch.rand(1, config.image_channels, config.image_size, config.image_size)
        assert model.encode(images).shape == (1, *config.latent_shape)
        assert model.decode(binarize(model.encode(images))).shape == images.shape
    shapes = {name: config.latent_shape for name, config in PRESETS.items()}
    assert shapes["default"] == (12, 4, 4)
    assert shapes["grid8"] == (4, 8, 8) and shapes["grid16"] == (1, 16, 16)  # 256 bits each
    assert shapes["rgb32"] == (16, 4, 4) and PRESETS["rgb32"].image_channels == 3


def test_a_preset_refuses_images_larger_than_its_grid_takes() -> None:
    with pytest.raises(ValueError, match="takes images of at most 32 px, got 64"):
        blae_preset("grid8", image_size=64)
    assert blae_preset("grid8", image_size=32).latent_shape == (4, 8, 8)  # CIFAR-sized


def test_config_round_trips_through_dict() -> None:
    config = blae_preset("default", sigma=0.5, noise="gaussian", straight_through=True)
    assert BLAEConfig.from_dict(config.to_dict()) == config
    older = {k: v for k, v in config.to_dict().items() if k != "straight_through"}
    assert BLAEConfig.from_dict(older).straight_through is False  # checkpoints before the field
    with pytest.raises(ValueError, match="latent_channels"):
        blae_preset("tiny", latent_channels=17)
    with pytest.raises(ValueError, match="unknown BL-AE preset"):
        blae_preset("huge")


def test_initial_codes_are_not_collapsed() -> None:
    """Kaiming init: distinct images get distinct, unsaturated codes at the first step."""
    torch.manual_seed(0)
    model = BLAE(PRESETS["default"]).eval()
    with torch.no_grad():  # the gain training starts with
        codes = model.encode(torch.rand(64, 1, 28, 28), gain=BLAETrainConfig().code_gain_start)
    tokens = bits_to_tokens((codes > 0).numpy())
    assert len(np.unique(tokens)) > 32
    assert codes.abs().mean() < 0.9  # not saturated from the start


def test_collapse_detector_fires_on_a_constant_encoder() -> None:
    """An encoder whose last layer ignores its input: one code for every image."""
    torch.manual_seed(0)
    model = BLAE(PRESETS["tiny"])
    last = model.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)
    images = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    metrics = evaluate_blae(model, images)
    assert metrics.distinct_codes == 1 / 64 and metrics.top_code_share == 1.0
    assert collapse_reason(metrics, len(images), steps=0) == "100% of images share one code"


def test_collapse_detector_reads_reconstructions_against_the_mean_image() -> None:
    fields = dict(mse=0.1, psnr=10.0, brate=1.0, psnr_mean_image=10.0)
    healthy = dict(distinct_codes=1.0, top_code_share=0.01)
    flat = BLAEMetrics(psnr_binary=10.5, **fields, **healthy)
    said = collapse_reason(flat, 100, steps=200) or ""
    assert "no better than the mean image (10.0 dB)" in said
    assert collapse_reason(flat, 100, steps=20) is None  # too early: every decoder starts there
    assert collapse_reason(BLAEMetrics(psnr_binary=17.0, **fields, **healthy), 100, 200) is None
    shared = BLAEMetrics(psnr_binary=17.0, **fields, distinct_codes=0.9, top_code_share=0.6)
    assert collapse_reason(shared, 100, 200) == "60% of images share one code"
    assert collapse_reason(shared, 10, 200) is None  # too few images to say
    few = BLAEMetrics(psnr_binary=17.0, **fields, distinct_codes=0.15, top_code_share=0.17)
    assert collapse_reason(few, 1000, 200) == "1000 images have only 15% as many distinct codes"


def test_straight_through_trains_on_the_signs_and_keeps_the_encoder_learning() -> None:
    """With straight_through the decoder sees the bits that will be stored, and the encoder's
    gradient is tanh's at gain 1 whatever the codes' gain, so a saturated tanh does not stop it
    learning; the paper's way, the gradient goes through the saturating tanh itself."""
    torch.manual_seed(0)
    x = torch.rand(8, 1, 28, 28)

    def encoder_gradient(straight_through: bool, gain: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = BLAE(blae_preset("tiny", sigma=0.0, straight_through=straight_through)).train()
        out = model(x, gain=gain)
        if straight_through:
            torch.testing.assert_close(out.reconstruction, model.decode(binarize(out.codes)))
        F.mse_loss(out.reconstruction, x).backward()
        return model.encoder[0].weight.grad.clone()

    mild, saturated = encoder_gradient(True, 5.0), encoder_gradient(True, 1000.0)
    torch.testing.assert_close(mild, saturated)
    assert mild.abs().sum() > 0
    assert not torch.allclose(encoder_gradient(False, 5.0), encoder_gradient(False, 1000.0))


@pytest.mark.parametrize("head,reaches", [("local", False), ("global", True)])
def test_only_a_global_head_decodes_a_corner_from_the_far_cell(head: str, reaches: bool) -> None:
    """A 1×1 head decodes each pixel from the cells near it; a global head from every bit, which
    is what it takes to decode two codes that differ in one far cell into unrelated images."""
    torch.manual_seed(0)
    model = BLAE(blae_preset("tiny", decoder_head=head)).eval()
    codes = binarize(torch.randn(1, *model.config.latent_shape)).requires_grad_()
    model.decode(codes)[0, 0, 0, 0].backward()  # the top-left pixel
    assert codes.grad is not None
    far_cell = codes.grad[0, :, -1, -1]  # the bottom-right cell's bits
    assert bool(far_cell.abs().sum() > 0) is reaches
    assert codes.grad[0, :, 0, 0].abs().sum() > 0  # its own cell always counts


def test_a_decoder_head_outside_the_known_ones_is_refused() -> None:
    with pytest.raises(ValueError, match="decoder_head must be one of"):
        blae_preset("tiny", decoder_head="attention")


def test_a_preset_s_training_settings_apply_unless_given() -> None:
    memorizer = BLAETrainConfig.for_preset("paper-t1", lr=None, decoder_polish=None)
    assert (memorizer.lr, memorizer.decoder_polish) == (5e-4, 60.0)  # its own, not the defaults
    assert BLAETrainConfig.for_preset("paper-t1", decoder_polish=2.0).decoder_polish == 2.0
    assert BLAETrainConfig.for_preset("default") == BLAETrainConfig()
    assert BLAETrainConfig.for_preset("paper-t4", epochs=3).lr == 2e-4

"""Training a run's γ-ARVM: it fits the histograms, and its checkpoint reproduces it."""

from pathlib import Path

import pytest
import torch

from models import ARVMTrainConfig, GammaARVM
from models.arvm_train import evaluate_kl
from service.checkpoint import save_checkpoint
from service.errors import RunError
from service.run.models import load_arvm
from service.run.paths import RunPaths
from service.training.arvm import histogram_set
from tests.helpers import SmallTables


def test_trained_network_matches_the_histograms(small_tables: SmallTables) -> None:
    data = histogram_set(small_tables.histograms[5])
    kl = evaluate_kl(small_tables.net, data)
    untrained = evaluate_kl(GammaARVM(small_tables.net.config), data)
    assert kl < 0.02, f"count-weighted KL(q‖p) {kl:.4f} should be below 0.02"
    assert untrained > 50 * kl


def test_checkpoint_reproduces_logits_exactly(tmp_path: Path, small_tables: SmallTables) -> None:
    net = small_tables.net
    paths = RunPaths(tmp_path)
    save_checkpoint(paths.arvm_weights(5), net, train=ARVMTrainConfig().to_dict(), table_id=1)
    loaded = load_arvm(paths, 5)
    assert loaded.config == net.config
    contexts = torch.from_numpy(small_tables.histograms[5].contexts[:50])
    with torch.no_grad():
        torch.testing.assert_close(loaded(contexts), net(contexts), rtol=0, atol=0)
    with pytest.raises(RunError, match="train-arvm --gamma 3"):
        load_arvm(paths, 3)

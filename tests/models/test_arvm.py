"""The γ-ARVM and its trainer: the two stopping rules, the loss, and the model's contract."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from models import ARVMConfig, ARVMTrainConfig, GammaARVM
from models.arvm_train import (
    HistogramSet,
    Strata,
    entropy,
    evaluate_kl,
    fit_arvm,
    grouped_order,
    row_log_probs,
    step_loss,
)


def table(contexts: np.ndarray, nexts: list[dict[int, int]]) -> HistogramSet:
    """A HistogramSet from distinct contexts (M, K) and, per context, {token: count}."""
    tokens = [t for hist in nexts for t in sorted(hist)]
    counts = [hist[t] for hist in nexts for t in sorted(hist)]
    starts = np.r_[0, np.cumsum([len(h) for h in nexts])]
    return HistogramSet.from_counts(
        torch.from_numpy(contexts),
        torch.from_numpy(starts),
        torch.tensor(tokens),
        torch.tensor(counts),
    )


def random_table(seed: int, contexts: int, *, channels: int = 3, k: int = 4) -> HistogramSet:
    """Distinct random contexts, most with one next token, every fifth with two."""
    rng = np.random.default_rng(seed)
    ctx = np.unique(rng.integers(0, 1 << channels, (contexts, k)), axis=0)
    nexts = []
    for m in range(len(ctx)):
        a, b = rng.choice(1 << channels, 2, replace=False)
        nexts.append({int(a): 3, int(b): 1} if m % 5 == 0 else {int(a): 1})
    return table(ctx, nexts)


def model(hidden: int = 64, blocks: int = 1, seed: int = 0) -> GammaARVM:
    torch.manual_seed(seed)
    return GammaARVM(ARVMConfig(gamma=3, context_size=4, latent_channels=3, hidden=hidden,
                                blocks=blocks))  # fmt: skip


def test_kl_is_zero_exactly_when_the_network_outputs_the_histograms() -> None:
    data = table(np.array([[8, 8, 8, 8], [1, 2, 3, 4]]), [{0: 3, 5: 1}, {7: 2}])
    net = model()
    with torch.no_grad():  # make the head output log q: all weights zero, biases set per row
        for p in net.parameters():
            p.zero_()
        net.head.bias.copy_(
            torch.log(torch.tensor([0.75, 1e-9, 1e-9, 1e-9, 1e-9, 0.25, 1e-9, 1e-9]))
        )
    # the same logits for both contexts: context 0 matches, context 1 (q = token 7) does not
    expected_second = -np.log(1e-9 / (1 + 6e-9))
    kl = evaluate_kl(net, data)
    assert kl == pytest.approx((4 * 0 + 2 * expected_second) / 6, rel=1e-4)
    assert entropy(data) == pytest.approx(
        4 / 6 * -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)), rel=1e-6
    )
    assert row_log_probs(net, data).shape == (3,)


def test_the_memorizer_reaches_its_bound_on_a_tiny_table() -> None:
    data = random_table(0, 48)
    net = model(hidden=128)
    config = ARVMTrainConfig(use="memorizer", max_epochs=600, batch_size=16, lr=3e-3,
                             target_kl=1e-3)  # fmt: skip
    fit = fit_arvm(net, data, config)
    assert fit.stopped == "target" and fit.train_kl <= 1e-3
    assert fit.epochs < 600 and fit.contexts_per_s > 0
    assert evaluate_kl(net, data) == pytest.approx(fit.train_kl)


def test_an_epoch_visits_every_row_once_with_each_context_s_rows_together() -> None:
    data = random_table(3, 60)
    order = grouped_order(data, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(data)))
    contexts = data.row_context[order]
    changes = int((contexts[1:] != contexts[:-1]).sum())
    assert changes == len(data.contexts) - 1  # each context's rows form one run
    other = grouped_order(data, torch.Generator().manual_seed(1))
    assert not torch.equal(order, other)


def heavy_table() -> HistogramSet:
    """40 random contexts and two heavy ones: an all-PAD context with three tokens (like the
    first position's) and another with one, together most of the counts."""
    light = random_table(3, 40)
    contexts = np.r_[np.full((1, 4), 8), light.contexts.numpy(), [[0, 0, 0, 0]]]
    starts = light.starts.numpy()
    nexts = [{0: 90, 2: 40, 6: 30}]
    nexts += [
        dict(zip(light.tokens[a:b].tolist(), light.counts[a:b].int().tolist(), strict=True))
        for a, b in pairwise(starts)
    ]
    return table(contexts, [*nexts, {5: 50}])


def test_heavy_contexts_are_in_every_step_and_light_rows_drawn_once() -> None:
    data = heavy_table()
    strata = Strata.of(data, batch_size=8, vocabulary=8)
    last = len(data.contexts) - 1
    assert strata.heavy.tolist() == [0, last]
    assert strata.heavy_counts.tolist() == [[90, 0, 40, 0, 0, 0, 30, 0], [0, 0, 0, 0, 0, 50, 0, 0]]
    assert not strata.light_row[data.row_context == 0].any()
    assert not strata.light_row[data.row_context == last].any()
    assert strata.light_rows == len(data) - 4
    assert strata.heavy_share == pytest.approx(210 / float(data.counts.sum()))
    # a batch size that makes one step of the whole table leaves nothing heavy
    assert len(Strata.of(data, batch_size=len(data), vocabulary=8).heavy) == 0


def test_a_step_over_every_light_row_is_eq_10_s_mean_over_the_table() -> None:
    """Light rows by their step's count-weighted mean scaled to their share, plus the heavy
    contexts' share: over all light rows at once that is eq. 10, Σ count · NLL / Σ count."""
    data, net = heavy_table(), model().eval()  # eval: no dropout, the same pass both ways
    strata = Strata.of(data, batch_size=8, vocabulary=8)
    light = torch.nonzero(strata.light_row).flatten()
    loss, _ = step_loss(net, data, strata, light[torch.randperm(len(light))], "fp32")
    expected = -(data.counts * row_log_probs(net, data)).sum() / data.counts.sum()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_the_memorizer_says_when_its_budget_ended_first() -> None:
    config = ARVMTrainConfig(use="memorizer", max_epochs=2, batch_size=16, target_kl=1e-6)
    fit = fit_arvm(model(), random_table(0, 48), config)
    assert fit.stopped == "budget" and fit.epochs == 2 and fit.train_kl > 1e-6


def test_the_fallback_keeps_the_epoch_the_heldout_curve_chose() -> None:
    """Random tables share nothing, so the held-out KL worsens as the network memorizes: the
    rule must stop `patience` epochs after the best one and restore that epoch's weights."""
    train, heldout = random_table(1, 200), random_table(2, 200)
    net = model(hidden=256, blocks=2)
    curve: list[float] = []
    config = ARVMTrainConfig(use="fallback", max_epochs=30, batch_size=32, lr=3e-3, patience=2)
    fit = fit_arvm(
        net, train, config, heldout=heldout, on_epoch=lambda f: curve.append(f["heldout_kl"])
    )
    best = int(np.argmin(curve)) + 1
    assert fit.stopped == "patience" and fit.best_epoch == best < fit.epochs
    assert fit.epochs == best + config.patience
    assert fit.heldout_kl == pytest.approx(min(curve), rel=1e-5)  # the best weights, restored


def test_positions_are_an_input_when_the_config_takes_them() -> None:
    config = ARVMConfig(gamma=3, context_size=4, latent_channels=3, positions=6, hidden=16)
    net = GammaARVM(config).eval()
    contexts = torch.zeros(2, 4, dtype=torch.long)
    with torch.no_grad():
        a = net(contexts, torch.tensor([0, 0]))
        b = net(contexts, torch.tensor([0, 5]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="takes positions"):
        net(contexts)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"use": "dream"}, "use must be one of fallback, memorizer"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_seconds": 0.0}, "max_seconds must be > 0"),
        ({"target_kl": 0.0}, "target_kl"),
    ],
)
def test_bad_training_configs_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ARVMTrainConfig(**fields)  # type: ignore[arg-type]

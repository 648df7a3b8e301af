"""γ-windows on grids of every size: the global window, the default γ per grid, the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.ngram.windows import (
    check_gamma_fits,
    context_offsets,
    default_gammas,
    extract_windows,
    global_gamma,
)


@pytest.mark.parametrize(("side", "top"), [(4, 7), (8, 15), (16, 31)])
def test_the_global_window_sees_every_earlier_position_and_no_smaller_one_does(
    side: int, top: int
) -> None:
    """At γ = global_gamma the last position's context holds every earlier position; at γ − 2
    some earlier position is outside it."""
    grid = np.arange(side * side).reshape(1, side, side)
    pad = side * side
    for gamma, sees_all in ((top, True), (top - 2, False)):
        contexts, _ = extract_windows(grid, gamma, pad)
        last = set(contexts[-1].tolist()) - {pad}
        assert (last == set(range(side * side - 1))) is sees_all
        assert len(context_offsets(gamma)) == contexts.shape[1]
    assert global_gamma(side, side) == top


def test_default_gammas_run_from_local_to_global() -> None:
    assert default_gammas(4, 4) == (3, 5, 7)
    assert default_gammas(8, 8) == (3, 5, 7, 11, 15)
    assert default_gammas(16, 16) == (3, 5, 7, 11, 17, 27, 31)
    for side in range(2, 20):
        gammas = default_gammas(side, side)
        assert gammas[-1] == global_gamma(side, side) and list(gammas) == sorted(set(gammas))


def test_a_gamma_wider_than_the_grid_is_refused_naming_the_range() -> None:
    assert check_gamma_fits(15, 8, 8) == 15
    with pytest.raises(InvalidInputError, match=r"choose an odd γ in 3\.\.15"):
        check_gamma_fits(17, 8, 8)

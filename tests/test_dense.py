"""The dense map (npar.ops.dense): bad arguments are refused by name."""

import numpy as np
import pytest

from npar.ops.dense import dense_forward


def test_bias_and_mask_must_match_the_weight():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    # A bias of shape (1,) or (3, 5) used to broadcast without a word.
    for bad in (np.ones(1), np.ones((3, 5))):
        with pytest.raises(ValueError, match=r"b must have shape \(5,\)"):
            dense_forward(x, w, bad)
    with pytest.raises(ValueError, match=r"mask shape \(4, 5\) differs from w"):
        dense_forward(x, w, None, np.ones((4, 5)))
    y, _ = dense_forward(x, w, np.ones(5), np.ones((5, 4)))
    np.testing.assert_allclose(y, x @ w.T + 1.0)

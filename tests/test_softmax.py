"""Softmax cross-entropy: exact and finite for any logits."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.ops.softmax import (
    log_softmax,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
    softmax_cross_entropy_reference,
)

from gradient_tools import check_gradients


@settings(max_examples=100)
@given(st.integers(1, 6), st.integers(1, 300), st.floats(0.1, 1e3),
       st.integers(0, 2**31))
def test_equals_twin(m, v, scale, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((m, v)) * scale
    t = rng.integers(0, v, m)
    nll, cache = softmax_cross_entropy_forward(z, t)
    np.testing.assert_allclose(nll, softmax_cross_entropy_reference(z, t),
                               rtol=1e-12, atol=1e-12)
    dz = softmax_cross_entropy_backward(np.ones(m), cache)
    p = np.exp(log_softmax(z))
    p[np.arange(m), t] -= 1
    np.testing.assert_allclose(dz, p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_exact_values(dtype):
    # All equal: every level has probability 1/V.
    nll, _ = softmax_cross_entropy_forward(np.full((2, 256), 1e4, dtype),
                                           np.array([0, 255]))
    np.testing.assert_allclose(nll, math.log(256), rtol=1e-6)
    # +-1e4: the target holds all the mass, or none of it.
    z = np.array([[1e4, -1e4, 0.0]], dtype)
    np.testing.assert_allclose(softmax_cross_entropy_forward(z, np.array([0]))[0],
                               0.0, atol=1e-6)
    np.testing.assert_allclose(softmax_cross_entropy_forward(z, np.array([1]))[0],
                               2e4, rtol=1e-6)
    # Mixed 1e8: two tied maxima share the mass; log 2 is not lost to 1e8.
    z = np.array([[1e8, -1e8, 3.0, 1e8, 0.0]], dtype)
    nll, cache = softmax_cross_entropy_forward(z, np.array([0]))
    np.testing.assert_allclose(nll, math.log(2), rtol=1e-6)
    dz = softmax_cross_entropy_backward(np.ones(1), cache)
    np.testing.assert_allclose(dz, [[-0.5, 0, 0, 0.5, 0]], atol=1e-7)
    assert np.all(np.isfinite(dz))


def test_gradient_check_float64(rng):
    z = rng.standard_normal((7, 11)) * 3
    t = rng.integers(0, 11, 7)
    u = rng.standard_normal(7)
    _, cache = softmax_cross_entropy_forward(z, t)
    dz = softmax_cross_entropy_backward(u, cache)

    def f(z_):
        return float(np.sum(u * softmax_cross_entropy_forward(z_, t)[0]))

    assert max(check_gradients(f, [dz], [z], rng)) <= 1e-6


def test_bad_input():
    z = np.zeros((2, 4))
    with pytest.raises(ValueError, match="0..3"):
        softmax_cross_entropy_forward(z, np.array([0, 4]))
    with pytest.raises(TypeError, match="integer"):
        softmax_cross_entropy_forward(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        softmax_cross_entropy_forward(z, np.array([0]))
    with pytest.raises(FloatingPointError, match="NaN"):
        softmax_cross_entropy_forward(np.array([[np.nan, 0.0]]), np.array([0]))

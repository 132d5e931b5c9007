"""Gated activation and ReLU: kernels vs twins, float64 gradient checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npar.ops.activations import (
    gate_backward,
    gate_forward,
    gate_reference,
    relu_backward,
    relu_forward,
    relu_reference,
)

from gradient_tools import check_gradients

finite = st.floats(-30, 30, allow_nan=False, width=64)


@settings(max_examples=100)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2),
       st.integers(0, 2**31))
def test_gate_equals_twin(n, c, t, axis, seed):
    rng = np.random.default_rng(seed)
    shape = [n, 2 * c, t]
    shape[0], shape[axis] = shape[axis], shape[0]
    shape[axis] = 2 * c
    shape[0 if axis != 0 else 1] = n
    x = rng.standard_normal(shape) * 4
    y, cache = gate_forward(x, axis=axis)
    np.testing.assert_allclose(y, gate_reference(x, axis=axis), rtol=1e-13,
                               atol=1e-15)
    dy = rng.standard_normal(y.shape)
    dx = gate_backward(dy, cache)
    a, b = np.split(x, 2, axis=axis)
    s = 1 / (1 + np.exp(-b))
    da = dy * (1 - np.tanh(a) ** 2) * s
    db = dy * np.tanh(a) * s * (1 - s)
    np.testing.assert_allclose(dx, np.concatenate([da, db], axis=axis),
                               rtol=1e-12, atol=1e-14)


def test_gate_gradient_check_float64(rng):
    x = rng.standard_normal((2, 6, 4, 3)) * 2
    u = rng.standard_normal((2, 3, 4, 3))
    _, cache = gate_forward(x)
    errors = check_gradients(lambda x_: float(np.sum(u * gate_forward(x_)[0])),
                             [gate_backward(u, cache)], [x], rng)
    assert max(errors) <= 1e-6, errors


def test_gate_is_finite_for_huge_inputs():
    x = np.array([[1e4, -1e4, 800.0, -800.0]]).reshape(1, 4, 1)
    x = np.concatenate([x, -x], axis=1)  # (1, 8, 1)
    for dtype in (np.float32, np.float64):
        y, cache = gate_forward(x.astype(dtype))
        dx = gate_backward(np.ones_like(y), cache)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
        np.testing.assert_allclose(y, gate_reference(x), atol=1e-6)


def test_gate_rejects_odd_channels():
    with pytest.raises(ValueError, match="even channel count"):
        gate_forward(np.zeros((1, 3, 2)))


@settings(max_examples=50)
@given(arrays(np.float64, st.integers(1, 40), elements=finite))
def test_relu_equals_twin(x):
    y, cache = relu_forward(x)
    np.testing.assert_array_equal(y, relu_reference(x))
    dy = np.arange(x.size, dtype=np.float64) + 1
    np.testing.assert_array_equal(relu_backward(dy, cache), dy * (x > 0))


def test_relu_gradient_check_away_from_kinks(rng):
    x = rng.standard_normal((3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep every input away from the kink at 0
    u = rng.standard_normal(x.shape)
    _, cache = relu_forward(x)
    errors = check_gradients(lambda x_: float(np.sum(u * relu_forward(x_)[0])),
                             [relu_backward(u, cache)], [x], rng)
    assert max(errors) <= 1e-6, errors


def test_relu_keeps_nan_like_its_twin():
    x = np.array([np.nan, -1.0, 2.0])
    y, _ = relu_forward(x)
    assert np.isnan(y[0]) and np.isnan(relu_reference(x)[0])
    np.testing.assert_array_equal(y[1:], [0.0, 2.0])

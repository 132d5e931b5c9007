"""Causal dilated 1-D convolution and WaveNet's one-hot input layer:
compiled kernels vs NumPy twins, float64 gradient checks, causality,
clear errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.ops.conv1d import (
    conv1d_backward,
    conv1d_backward_reference,
    conv1d_forward,
    conv1d_reference,
)
from npar.ops.onehot_conv1d import (
    onehot_conv1d_backward,
    onehot_conv1d_forward,
    onehot_conv1d_reference,
    onehot_delayed,
)

from gradient_tools import check_gradients


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    c_in = draw(st.integers(1, 4))
    c_out = draw(st.integers(1, 4))
    kernel = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 6))
    length = draw(st.integers(1, 14))
    seed = draw(st.integers(0, 2**31))
    return n, c_in, c_out, kernel, dilation, length, seed


def _make(case, dtype=np.float64):
    n, c_in, c_out, kernel, dilation, length, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, length)).astype(dtype)
    w = rng.standard_normal((c_out, c_in, kernel)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, w, b, dilation, rng


def _to_cnt(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2))


@settings(max_examples=200)
@given(conv_cases(), st.sampled_from(["NCT", "CNT"]), st.booleans())
def test_kernel_equals_numpy_twin(case, layout, with_bias):
    x, w, b, dilation, rng = _make(case)
    b = b if with_bias else None
    x_in = x if layout == "NCT" else _to_cnt(x)
    y, cache = conv1d_forward(x_in, w, b, dilation, layout=layout)
    y_nct = y if layout == "NCT" else y.transpose(1, 0, 2)
    np.testing.assert_allclose(y_nct, conv1d_reference(x, w, b, dilation),
                               rtol=1e-12, atol=1e-12)

    dy = rng.standard_normal(y_nct.shape)
    dx, dw, db = conv1d_backward(dy if layout == "NCT" else _to_cnt(dy), cache)
    dx_ref, dw_ref, db_ref = conv1d_backward_reference(x, w, dy, dilation)
    dx_nct = dx if layout == "NCT" else dx.transpose(1, 0, 2)
    np.testing.assert_allclose(dx_nct, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    if with_bias:
        np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)
    else:
        assert db is None


@settings(max_examples=50)
@given(conv_cases())
def test_float32_matches_float64(case):
    x, w, b, dilation, _ = _make(case)
    y32, _ = conv1d_forward(x.astype(np.float32), w.astype(np.float32),
                            b.astype(np.float32), dilation)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, conv1d_reference(x, w, b, dilation),
                               rtol=1e-4, atol=1e-4)


def test_equation_by_hand():
    # y[t] = b + w0 x[t - D] + w1 x[t] with K = 2, D = 2, one channel.
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    w = np.array([[[10.0, 1.0]]])
    y, _ = conv1d_forward(x, w, np.array([0.5]), dilation=2)
    np.testing.assert_array_equal(y[0, 0], [1.5, 2.5, 13.5, 24.5, 35.5])


@pytest.mark.parametrize("kernel,dilation,length", [(2, 1, 6), (3, 2, 9),
                                                    (2, 8, 5), (1, 1, 4),
                                                    (4, 3, 12)])
@pytest.mark.parametrize("layout", ["NCT", "CNT"])
def test_gradients_float64(kernel, dilation, length, layout):
    rng = np.random.default_rng(kernel * 100 + dilation * 10 + length)
    x = rng.standard_normal((2, 3, length))
    w = rng.standard_normal((4, 3, kernel))
    b = rng.standard_normal(4)
    dy = rng.standard_normal((2, 4, length))
    if layout == "CNT":
        x, dy = _to_cnt(x), _to_cnt(dy)

    def loss(x_, w_, b_):
        y, _ = conv1d_forward(x_, w_, b_, dilation, layout=layout)
        return float(np.sum(y * dy))

    _, cache = conv1d_forward(x, w, b, dilation, layout=layout)
    grads = conv1d_backward(dy, cache)
    errors = check_gradients(loss, grads, [x, w, b], rng, n_directions=4)
    assert max(errors) <= 1e-6, errors


@settings(max_examples=200)
@given(conv_cases(), st.data())
def test_causal(case, data):
    # y[t] depends on x[t - D (K-1) .. t] only, and on both ends of it.
    x, w, b, dilation, rng = _make(case)
    n, c_in, c_out, kernel, dilation, length, _ = case
    t = data.draw(st.integers(0, length - 1))
    y, _ = conv1d_forward(x, w, b, dilation)
    for source in range(length):
        x2 = x.copy()
        x2[:, :, source] += 1.0 + rng.standard_normal((n, c_in))
        y2, _ = conv1d_forward(x2, w, b, dilation)
        changed = not np.array_equal(y2[:, :, t], y[:, :, t])
        reachable = (t - source) % dilation == 0 and \
            0 <= t - source <= dilation * (kernel - 1)
        if not reachable:
            assert not changed, (source, t)
        elif source in (t, t - dilation * (kernel - 1)):
            assert changed, (source, t)


def test_1x1_needs_no_copy_and_long_dilation_is_all_padding():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((5, 3, 2))
    # D (K-1) = 10 >= T: tap 0 only ever reads padding.
    y, cache = conv1d_forward(x, w, None, dilation=10)
    np.testing.assert_allclose(y, np.einsum("oc,nct->not", w[:, :, 1], x))
    dx, dw, db = conv1d_backward(np.ones_like(y), cache)
    assert db is None and np.all(dw[:, :, 0] == 0)


def _raises(error, match, *args, **kwargs):
    with pytest.raises(error, match=match):
        conv1d_forward(*args, **kwargs)


def test_bad_arguments():
    x = np.zeros((2, 3, 5))
    w = np.zeros((4, 3, 2))
    _raises(TypeError, "float32 or float64", x.astype(np.int64), w)
    _raises(TypeError, "numpy.ndarray", x.tolist(), w)
    _raises(ValueError, "3 axes", x[0], w)
    _raises(ValueError, "C_in = 3", np.zeros((2, 4, 5)), w)
    _raises(ValueError, "C_in = 3", x, w, layout="CNT")
    _raises(ValueError, "dilation must be an integer >= 1, got 0", x, w,
            dilation=0)
    _raises(TypeError, "dilation", x, w, dilation=1.5)
    _raises(ValueError, "layout must be 'NCT' or 'CNT', got 'NTC'", x, w,
            layout="NTC")
    _raises(ValueError, r"b must have shape \(4,\)", x, w, np.zeros(3))
    _raises(TypeError, "share one dtype", x.astype(np.float32), w)
    _raises(ValueError, "K >= 1", x, np.zeros((4, 3, 0)))
    _raises(ValueError, "at least one time step", np.zeros((2, 3, 0)), w)
    _, cache = conv1d_forward(x, w)
    with pytest.raises(ValueError, match=r"dy must be an array of shape \(2, 4, 5\)"):
        conv1d_backward(np.zeros((2, 4, 4)), cache)


# ---- the one-hot input layer -------------------------------------------------


@st.composite
def onehot_cases(draw):
    n = draw(st.integers(1, 3))
    levels = draw(st.integers(1, 6))
    c_out = draw(st.integers(1, 4))
    kernel = draw(st.integers(1, 4))
    delay = draw(st.integers(0, 3))
    length = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31))
    return n, levels, c_out, kernel, delay, length, seed


@settings(max_examples=200)
@given(onehot_cases())
def test_onehot_lookup_equals_onehot_convolution(case):
    n, levels, c_out, kernel, delay, length, seed = case
    rng = np.random.default_rng(seed)
    q = rng.integers(0, levels, (n, length))
    w = rng.standard_normal((c_out, levels, kernel))
    b = rng.standard_normal(c_out)
    y, cache = onehot_conv1d_forward(q, w, b, delay)
    np.testing.assert_allclose(y.transpose(1, 0, 2),
                               onehot_conv1d_reference(q, w, b, delay),
                               rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dw, db = onehot_conv1d_backward(dy, cache)
    x = onehot_delayed(q, levels, delay)
    _, dw_ref, db_ref = conv1d_backward_reference(x, w, dy.transpose(1, 0, 2))
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)


def test_onehot_gradients_float64():
    rng = np.random.default_rng(7)
    q = rng.integers(0, 5, (2, 9))
    w = rng.standard_normal((3, 5, 2))
    b = rng.standard_normal(3)
    dy = rng.standard_normal((3, 2, 9))

    def loss(w_, b_):
        return float(np.sum(onehot_conv1d_forward(q, w_, b_)[0] * dy))

    _, cache = onehot_conv1d_forward(q, w, b)
    errors = check_gradients(loss, onehot_conv1d_backward(dy, cache), [w, b], rng)
    assert max(errors) <= 1e-6, errors


def test_onehot_delay_one_never_reads_the_present():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 4, 3))
    b = rng.standard_normal(2)
    q = rng.integers(0, 4, (1, 8))
    y, _ = onehot_conv1d_forward(q, w, b, delay=1)
    for t in range(8):
        q2 = q.copy()
        q2[0, t:] = (q2[0, t:] + 1) % 4
        y2, _ = onehot_conv1d_forward(q2, w, b, delay=1)
        np.testing.assert_array_equal(y2[:, :, :t + 1], y[:, :, :t + 1])
    # Position 0 sees only the bias.
    np.testing.assert_array_equal(y[:, 0, 0], b)


def test_onehot_bad_codes():
    w = np.zeros((2, 4, 2))
    b = np.zeros(2)
    with pytest.raises(TypeError, match="integers in 0..3"):
        onehot_conv1d_forward(np.zeros((1, 3)), w, b)
    with pytest.raises(ValueError, match="from 0 to 4"):
        onehot_conv1d_forward(np.array([[0, 4]]), w, b)
    with pytest.raises(ValueError, match=r"shape \(N, T\)"):
        onehot_conv1d_forward(np.array([0, 1]), w, b)
    with pytest.raises(ValueError, match=r"b must be a float64 array of shape \(2,\)"):
        onehot_conv1d_forward(np.array([[0, 1]]), w, np.zeros(3))
    with pytest.raises(ValueError, match="delay must be an integer >= 0"):
        onehot_conv1d_forward(np.array([[0, 1]]), w, b, delay=-1)

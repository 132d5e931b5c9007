"""2-D masked dilated convolution: compiled kernel vs NumPy twin, float64
gradient checks, masks that stay zero, clear errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.ops.conv2d import (
    conv2d_backward,
    conv2d_backward_reference,
    conv2d_forward,
    conv2d_reference,
)
from npar.ops.masks import causal_mask, channel_groups
from npar.train.optim import Adam

from gradient_tools import check_gradients


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    c_in = draw(st.integers(1, 4))
    c_out = draw(st.integers(1, 4))
    k_h = draw(st.integers(1, 4))
    k_w = draw(st.integers(1, 4))
    d_h = draw(st.integers(1, 3))
    d_w = draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 3)) for _ in range(4))
    min_h = max(1, d_h * (k_h - 1) - pad[0] - pad[1] + 1)
    min_w = max(1, d_w * (k_w - 1) - pad[2] - pad[3] + 1)
    height = draw(st.integers(min_h, min_h + 4))
    width = draw(st.integers(min_w, min_w + 4))
    mask_kind = draw(st.sampled_from([None, "A", "B"]))
    seed = draw(st.integers(0, 2**31))
    return n, c_in, c_out, (k_h, k_w), (d_h, d_w), pad, (height, width), mask_kind, seed


def _make(case, dtype=np.float64):
    n, c_in, c_out, kernel, dilation, pad, size, mask_kind, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in) + kernel).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    mask = None
    if mask_kind:
        mask = causal_mask(w.shape, mask_kind)
    return x, w, b, dilation, pad, mask, rng


@settings(max_examples=200)
@given(conv_cases(), st.sampled_from(["NCHW", "CNHW"]))
def test_kernel_equals_numpy_twin(case, layout):
    x, w, b, dilation, pad, mask, rng = _make(case)
    x_in = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    y, cache = conv2d_forward(x_in, w, b, pad, dilation, mask, layout=layout)
    y_ref = conv2d_reference(x, w, b, pad, dilation, mask)
    if layout == "CNHW":
        y = y.transpose(1, 0, 2, 3)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)

    dy = rng.standard_normal(y_ref.shape)
    dy_in = dy if layout == "NCHW" else np.ascontiguousarray(dy.transpose(1, 0, 2, 3))
    dx, dw, db = conv2d_backward(dy_in, cache)
    if layout == "CNHW":
        dx = dx.transpose(1, 0, 2, 3)
    dx_ref, dw_ref, db_ref = conv2d_backward_reference(x, w, dy, pad, dilation, mask)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(conv_cases())
def test_float32_matches_float64(case):
    x, w, b, dilation, pad, mask, _ = _make(case)
    y64, _ = conv2d_forward(x, w, b, pad, dilation, mask)
    y32, _ = conv2d_forward(x.astype(np.float32), w.astype(np.float32),
                            b.astype(np.float32), pad, dilation, mask)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,dilation,pad,mask_kind", [
    ((3, 3), (1, 1), (1, 1, 1, 1), "A"),
    ((3, 3), (2, 1), (2, 2, 1, 1), "B"),
    ((2, 3), (1, 1), (1, 0, 1, 1), None),
    ((1, 1), (1, 1), (0, 0, 0, 0), "B"),
    ((4, 2), (1, 3), (3, 0, 2, 1), None),
])
def test_gradient_check_float64(kernel, dilation, pad, mask_kind, rng):
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3) + kernel)
    b = rng.standard_normal(4)
    mask = causal_mask(w.shape, mask_kind) if mask_kind else None
    y, cache = conv2d_forward(x, w, b, pad, dilation, mask)
    u = rng.standard_normal(y.shape)  # random upstream gradient

    def loss(x_, w_, b_):
        return float(np.sum(u * conv2d_forward(x_, w_, b_, pad, dilation, mask)[0]))

    dx, dw, db = conv2d_backward(u, cache)
    errors = check_gradients(loss, [dx, dw, db], [x, w, b], rng)
    assert max(errors) <= 1e-6, errors


def test_masked_weights_get_zero_gradient_and_stay_zero(rng):
    groups = channel_groups(6, 3)
    mask = causal_mask((6, 6, 5, 5), "A", groups, groups)
    w = rng.standard_normal(mask.shape).astype(np.float32) * mask.astype(np.float32)
    params = {"w": w.copy()}
    optimizer = Adam(lr=0.05)
    for _ in range(25):
        x = rng.standard_normal((2, 6, 7, 7)).astype(np.float32)
        y, cache = conv2d_forward(x, params["w"], None, 2, 1, mask)
        _, dw, _ = conv2d_backward(rng.standard_normal(y.shape).astype(np.float32),
                                   cache)
        assert np.all(dw[mask == 0] == 0)
        optimizer.step(params, {"w": dw})
    assert np.all(params["w"][mask == 0] == 0)
    assert np.any(params["w"][mask == 1] != w[mask == 1])


def test_mask_in_forward_ignores_raw_weights_under_the_mask(rng):
    mask = causal_mask((2, 1, 3, 3), "A")
    w = rng.standard_normal(mask.shape)
    x = rng.standard_normal((1, 1, 5, 5))
    dirty = w + 100.0 * (1 - mask)  # garbage where the mask is zero
    y_clean, _ = conv2d_forward(x, w * mask, None, 1, 1, None)
    y_masked, _ = conv2d_forward(x, dirty, None, 1, 1, mask)
    np.testing.assert_allclose(y_masked, y_clean, rtol=1e-12, atol=1e-12)


def test_bad_input_errors(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(TypeError, match="float32 or float64"):
        conv2d_forward(x.astype(np.int32), w)
    with pytest.raises(ValueError, match="4 axes"):
        conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match="x has 2 channels but w expects C_in = 4"):
        conv2d_forward(x, rng.standard_normal((3, 4, 3, 3)))
    with pytest.raises(TypeError, match="one dtype"):
        conv2d_forward(x.astype(np.float32), w)
    with pytest.raises(ValueError, match="dilation"):
        conv2d_forward(x, w, dilation=0)
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_forward(x, w, dilation=3)
    with pytest.raises(ValueError, match="padding"):
        conv2d_forward(x, w, padding=(1, 2, 3))
    # A float used to fail with "'float' object is not iterable".
    with pytest.raises(TypeError, match=r"padding must be an int.*got 1.5"):
        conv2d_forward(x, w, padding=1.5)
    with pytest.raises(ValueError, match="mask shape"):
        conv2d_forward(x, w, mask=np.ones((3, 2, 2, 2)))
    with pytest.raises(ValueError, match="layout"):
        conv2d_forward(x, w, layout="NHWC")
    y, cache = conv2d_forward(x, w, padding=1)
    with pytest.raises(ValueError, match="dy must have shape"):
        conv2d_backward(y[:, :2], cache)

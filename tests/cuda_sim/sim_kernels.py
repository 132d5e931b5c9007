"""Every CUDA kernel against its CPU twin, float32 and float64, under the
simulator: forward and backward, on tiny shapes that still cross the tile
and block edges of the launch plan."""

import numpy as np
import pytest
from numba import cuda
from sim_tools import assert_close

from npar.cuda import conv as gconv
from npar.cuda import elementwise as gew
from npar.cuda import linalg as glin
from npar.cuda import models as gmodels
from npar.cuda import optim as goptim
from npar.cuda import softmax as gsoftmax
from npar.cuda.runtime import LaunchPlan, launch_plan, set_launch_plan
from npar.nn.layers import shift_down_backward, shift_down_forward
from npar.ops import activations, conv1d, conv2d, dense, onehot_conv1d, softmax
from npar.ops.masks import causal_mask, channel_groups
from npar.train.optim import SGD, Adam


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ---- matmul and reductions --------------------------------------------------


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_every_transpose_and_bias(rng, dtype, trans_a, trans_b):
    a = normal(rng, (6, 9), dtype)
    b = normal(rng, (9, 5), dtype)
    bias_rows, bias_cols = normal(rng, 6, dtype), normal(rng, 5, dtype)
    a_in = a.T.copy() if trans_a else a
    b_in = b.T.copy() if trans_b else b
    plain = glin.matmul(dev(a_in), dev(b_in), trans_a, trans_b)
    assert_close(plain, a @ b, dtype, "matmul")
    rows = glin.matmul(dev(a_in), dev(b_in), trans_a, trans_b, dev(bias_rows), 0)
    assert_close(rows, a @ b + bias_rows[:, None], dtype, "matmul + row bias")
    cols = glin.matmul(dev(a_in), dev(b_in), trans_a, trans_b, dev(bias_cols), 1)
    assert_close(cols, a @ b + bias_cols, dtype, "matmul + column bias")


def test_matmul_gpu_tile(rng, dtype):
    # The 16 x 16 tile of the GPU plan (256 threads a block), on a product
    # larger than one tile in every direction.
    a, b = normal(rng, (17, 18), dtype), normal(rng, (18, 3), dtype)
    out = glin.matmul(dev(a), dev(b), tile=16)
    assert_close(out, a @ b, dtype, "matmul, tile 16")


def test_matmul_rejects_mismatched_shapes(dtype):
    with pytest.raises(ValueError, match="inner sizes differ"):
        glin.matmul(dev(np.zeros((2, 3), dtype)), dev(np.zeros((4, 2), dtype)))


def test_reductions(rng, dtype):
    x = normal(rng, (3, 13), dtype)
    assert_close(glin.row_sums(dev(x)), x.sum(axis=1), dtype, "row sums")
    assert_close(glin.column_sums(dev(x)), x.sum(axis=0), dtype, "column sums")
    out = glin.sum_all(dev(x), square=True).copy_to_host()
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[0], np.sum(x.astype(np.float64) ** 2),
                               rtol=1e-12)


# ---- 2-D convolution --------------------------------------------------------


CONV2D_CASES = [
    # (x shape NCHW, w shape, padding, dilation, mask type)
    ((2, 3, 4, 5), (4, 3, 2, 3), (1, 0, 2, 1), (1, 2), "B"),
    ((1, 3, 5, 4), (6, 3, 3, 3), (2, 2, 2, 2), (2, 1), "A"),
    ((2, 2, 3, 3), (3, 2, 1, 1), 0, 1, None),
    ((1, 2, 4, 4), (2, 2, 1, 3), (0, 0, 1, 0), 1, None),
]


@pytest.mark.parametrize("case", range(len(CONV2D_CASES)))
@pytest.mark.parametrize("layout", ["NCHW", "CNHW"])
def test_conv2d_forward_backward(rng, dtype, case, layout):
    x_shape, w_shape, padding, dilation, mask_type = CONV2D_CASES[case]
    x, w = normal(rng, x_shape, dtype), normal(rng, w_shape, dtype)
    b = normal(rng, w_shape[0], dtype)
    mask = None
    if mask_type:
        groups = 3 if w_shape[1] % 3 == 0 and w_shape[0] % 3 == 0 else 1
        mask = causal_mask(w_shape, mask_type, channel_groups(w_shape[0], groups),
                           channel_groups(w_shape[1], groups))
    y, cache = conv2d.conv2d_forward(x, w, b, padding, dilation, mask)
    dy = normal(rng, y.shape, dtype)
    dx, dw, db = conv2d.conv2d_backward(dy, cache)

    def to_layout(a):
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if layout == "CNHW" else a

    yd, cache_d = gconv.conv2d_forward(dev(to_layout(x)), dev(w), dev(b), padding,
                                       dilation, mask, layout)
    assert_close(yd, to_layout(y), dtype, "conv2d y")
    dxd, dwd, dbd = gconv.conv2d_backward(dev(to_layout(dy)), cache_d)
    assert_close(dxd, to_layout(dx), dtype, "conv2d dx")
    assert_close(dwd, dw, dtype, "conv2d dw")
    assert_close(dbd, db, dtype, "conv2d db")
    if mask is not None:
        assert np.all(dwd.copy_to_host()[mask == 0] == 0)


def test_conv2d_without_bias_and_without_dx(rng, dtype):
    x, w = normal(rng, (1, 2, 3, 4), dtype), normal(rng, (2, 2, 2, 2), dtype)
    y, cache = conv2d.conv2d_forward(x, w, None, 1)
    yd, cache_d = gconv.conv2d_forward(dev(x), dev(w), None, 1)
    assert_close(yd, y, dtype, "conv2d y, no bias")
    dy = normal(rng, y.shape, dtype)
    _, dw, _ = conv2d.conv2d_backward(dy, cache, need_dx=False)
    dxd, dwd, dbd = gconv.conv2d_backward(dev(dy), cache_d, need_dx=False)
    assert dxd is None and dbd is None
    assert_close(dwd, dw, dtype, "conv2d dw")


def test_conv2d_checks_arguments(dtype):
    x = dev(np.zeros((1, 2, 3, 3), dtype))
    with pytest.raises(TypeError, match="device array"):
        gconv.conv2d_forward(np.zeros((1, 2, 3, 3), dtype), x)
    with pytest.raises(ValueError, match="channels"):
        gconv.conv2d_forward(x, dev(np.zeros((1, 3, 1, 1), dtype)))
    with pytest.raises(ValueError, match="layout"):
        gconv.conv2d_forward(x, dev(np.zeros((1, 2, 1, 1), dtype)), layout="NHWC")


# ---- 1-D causal convolution and the one-hot input layer ---------------------


@pytest.mark.parametrize("k_size,dilation", [(1, 1), (2, 1), (2, 4), (3, 2)])
@pytest.mark.parametrize("layout", ["NCT", "CNT"])
def test_conv1d_forward_backward(rng, dtype, k_size, dilation, layout):
    x, w = normal(rng, (2, 3, 7), dtype), normal(rng, (4, 3, k_size), dtype)
    b = normal(rng, 4, dtype)
    y, cache = conv1d.conv1d_forward(x, w, b, dilation)
    dy = normal(rng, y.shape, dtype)
    dx, dw, db = conv1d.conv1d_backward(dy, cache)

    def to_layout(a):
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if layout == "CNT" else a

    yd, cache_d = gconv.conv1d_forward(dev(to_layout(x)), dev(w), dev(b), dilation,
                                       layout)
    assert_close(yd, to_layout(y), dtype, "conv1d y")
    dxd, dwd, dbd = gconv.conv1d_backward(dev(to_layout(dy)), cache_d)
    assert_close(dxd, to_layout(dx), dtype, "conv1d dx")
    assert_close(dwd, dw, dtype, "conv1d dw")
    assert_close(dbd, db, dtype, "conv1d db")


def test_onehot_conv1d(rng, dtype):
    q = rng.integers(0, 5, (2, 6))
    w, b = normal(rng, (3, 5, 2), dtype), normal(rng, 3, dtype)
    y, cache = onehot_conv1d.onehot_conv1d_forward(q, w, b, 1)
    dy = normal(rng, y.shape, dtype)
    dw, db = onehot_conv1d.onehot_conv1d_backward(dy, cache)
    yd, cache_d = gmodels.onehot_conv1d_forward(dev(q), dev(w), dev(b), 1)
    assert_close(yd, y, dtype, "one-hot conv y")
    dwd, dbd = gmodels.onehot_conv1d_backward(dev(dy), cache_d)
    assert_close(dwd, dw, dtype, "one-hot conv dw")
    assert_close(dbd, db, dtype, "one-hot conv db")


def test_slice_time(rng, dtype):
    x = normal(rng, (2, 3, 6), dtype)
    assert_close(gmodels.slice_time(dev(x), 4), x[:, :, 4:], dtype, "time slice")


# ---- dense ------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("masked", [False, True])
def test_dense_forward_backward(rng, dtype, layout, masked):
    x, w, b = normal(rng, (7, 3), dtype), normal(rng, (5, 3), dtype), None
    mask = (rng.random((5, 3)) < 0.5).astype(np.float64) if masked else None
    if not masked:
        b = normal(rng, 5, dtype)
    y, cache = dense.dense_forward(x, w, b, mask)
    dy = normal(rng, y.shape, dtype)
    dx, dw, db = dense.dense_backward(dy, cache)
    x_in = x if layout == "rows" else x.T.copy()
    yd, cache_d = gconv.dense_forward(dev(x_in), dev(w), None if b is None else dev(b),
                                      mask, layout)
    assert_close(yd, y, dtype, "dense y")
    dxd, dwd, dbd = gconv.dense_backward(dev(dy), cache_d)
    assert_close(dxd, dx if layout == "rows" else dx.T, dtype, "dense dx")
    assert_close(dwd, dw, dtype, "dense dw")
    assert (dbd is None) == (db is None)
    if db is not None:
        assert_close(dbd, db, dtype, "dense db")


# ---- elementwise ------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gate(rng, dtype, axis):
    shape = [3, 3, 3, 2]
    shape[axis] = 4
    x = normal(rng, shape, dtype, scale=2.0)
    y, cache = activations.gate_forward(x, axis=axis)
    dy = normal(rng, y.shape, dtype)
    yd, cache_d = gew.gate_forward(dev(x), axis=axis)
    assert_close(yd, y, dtype, "gate y")
    assert_close(gew.gate_backward(dev(dy), cache_d),
                 activations.gate_backward(dy, cache), dtype, "gate dx")


def test_gate_rejects_odd_channels(dtype):
    with pytest.raises(ValueError, match="even channel count"):
        gew.gate_forward(dev(np.zeros((2, 3, 2), dtype)), axis=1)


def test_relu(rng, dtype):
    x = normal(rng, (4, 5), dtype)
    x[0, :2] = 0.0
    y, cache = activations.relu_forward(x)
    dy = normal(rng, x.shape, dtype)
    yd, cache_d = gew.relu_forward(dev(x))
    assert_close(yd, y, dtype, "relu y")
    assert_close(gew.relu_backward(dev(dy), cache_d),
                 activations.relu_backward(dy, cache), dtype, "relu dx")


def test_shift_down_and_add(rng, dtype):
    x, z = normal(rng, (2, 3, 4, 2), dtype), normal(rng, (2, 3, 4, 2), dtype)
    assert_close(gew.shift_down_forward(dev(x)), shift_down_forward(x), dtype,
                 "down-shift")
    assert_close(gew.shift_down_backward(dev(x)), shift_down_backward(x), dtype,
                 "down-shift adjoint")
    assert_close(gew.add(dev(x), dev(z)), x + z, dtype, "add")
    assert_close(gew.multiply(dev(x), dev(z)), x * z, dtype, "multiply")
    assert_close(gew.swap_batch_channels(dev(x)), np.swapaxes(x, 0, 1), dtype, "swap")


def test_image_input_and_targets(rng, dtype):
    x = rng.integers(0, 256, (2, 3, 2, 3)).astype(np.uint8)
    from npar.models.pixelcnn import GatedPixelCNN

    model = GatedPixelCNN(dict(image_channels=3, channels=3, layers=1, kernel=3,
                               first_kernel=3, head_channels=3)).astype(dtype)
    assert_close(gew.scale_images(dev(x), 256, dtype), model._scale(x), dtype,
                 "scaled input")
    targets = gew.pixel_targets(dev(x)).copy_to_host()
    np.testing.assert_array_equal(targets, model._targets(x))


# ---- softmax cross-entropy --------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_cross_entropy(rng, dtype, scale):
    logits = normal(rng, (6, 9), dtype, scale=scale)
    logits[0] = 3.0  # all equal
    targets = rng.integers(0, 9, 6)
    nll, cache = softmax.softmax_cross_entropy_forward(logits, targets)
    nll_d, cache_d = gsoftmax.softmax_cross_entropy_forward(dev(logits), targets)
    assert_close(nll_d, nll, dtype, "cross-entropy nll")
    dnll = normal(rng, 6, dtype)
    assert_close(gsoftmax.softmax_cross_entropy_backward(dev(dnll), cache_d),
                 softmax.softmax_cross_entropy_backward(dnll, cache), dtype,
                 "cross-entropy dlogits")
    mean_grad = dtype(1.0 / 6)
    assert_close(gsoftmax.softmax_cross_entropy_backward(1.0 / 6, cache_d),
                 softmax.softmax_cross_entropy_backward(np.full(6, mean_grad), cache),
                 dtype, "cross-entropy dlogits of the mean")


def test_softmax_cross_entropy_checks_host_targets(dtype):
    with pytest.raises(ValueError, match="targets must lie in"):
        gsoftmax.softmax_cross_entropy_forward(dev(np.zeros((2, 3), dtype)),
                                               np.array([0, 3]))


# ---- optimizers -------------------------------------------------------------


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_optimizer_steps(rng, dtype, name):
    params = {"a.w": normal(rng, (2, 3), dtype), "a.b": normal(rng, 3, dtype)}
    cpu_opt = Adam(1e-2) if name == "adam" else SGD(1e-2, momentum=0.8)
    dev_opt = Adam(1e-2) if name == "adam" else SGD(1e-2, momentum=0.8)
    flat = goptim.FlatArrays.from_host(params)
    device = goptim.DeviceOptimizer(dev_opt, flat)
    grads = goptim.FlatArrays(flat.shapes, dtype)
    cpu_params = {k: v.copy() for k, v in params.items()}
    for step in range(3):
        g = {k: normal(rng, v.shape, dtype) for k, v in params.items()}
        cpu_opt.step(cpu_params, g, lr=0.05 / (step + 1))
        grads.upload(g)
        device.step(grads, lr=0.05 / (step + 1))
    for name_, value in flat.to_host().items():
        assert_close(value, cpu_params[name_], dtype, f"{name_} after 3 steps")
    device.to_host()
    assert dev_opt.t == cpu_opt.t == 3
    for slot in device.slots:
        for key, value in getattr(dev_opt, slot).items():
            assert_close(value, getattr(cpu_opt, slot)[key], dtype, f"{slot}.{key}")


def test_clip_by_global_norm(rng, dtype):
    from npar.train.optim import clip_by_global_norm

    g = {"w": normal(rng, (3, 4), dtype), "b": normal(rng, 2, dtype)}
    flat = goptim.FlatArrays.from_host(g)
    norm_d = goptim.clip_by_global_norm(flat, 0.5)
    norm = clip_by_global_norm(g, 0.5)
    np.testing.assert_allclose(norm_d, norm, rtol=1e-12)
    for key, value in flat.to_host().items():
        assert_close(value, g[key], dtype, f"clipped {key}")


# ---- launch plans -----------------------------------------------------------


def test_results_do_not_depend_on_the_launch_plan(rng):
    # The GPU plan (256 threads, 16 x 16 tiles, 128-thread rows) and an odd
    # one give the same conv2d and softmax results as the simulator plan.
    dtype = np.float64
    x, w = normal(rng, (1, 2, 3, 3), dtype), normal(rng, (2, 2, 2, 2), dtype)
    logits, targets = normal(rng, (3, 5), dtype), rng.integers(0, 5, 3)
    results = []
    for plan in (None, LaunchPlan(), LaunchPlan(threads=3, max_blocks=1, tile=3,
                                                row_threads=2)):
        previous = set_launch_plan(plan)
        try:
            assert plan is None or launch_plan() == plan
            y, cache = gconv.conv2d_forward(dev(x), dev(w), None, 1)
            dx, dw, _ = gconv.conv2d_backward(dev(np.ones(y.shape, dtype)), cache)
            nll, _ = gsoftmax.softmax_cross_entropy_forward(dev(logits), targets)
            results.append([a.copy_to_host() for a in (y, dx, dw, nll)])
        finally:
            set_launch_plan(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_launch_plan_rejects_non_power_of_two_rows():
    with pytest.raises(ValueError, match="power of two"):
        set_launch_plan(LaunchPlan(row_threads=6))

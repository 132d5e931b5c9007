"""The CUDA backward passes against float64 centred differences of the CUDA
forward passes (npar.verify.gradcheck), under the simulator; and the device
models' gradients along a random direction of all their parameters."""

import numpy as np
import pytest
from numba import cuda

from npar.cuda import conv as gconv
from npar.cuda import elementwise as gew
from npar.cuda import models as gmodels
from npar.cuda import softmax as gsoftmax
from npar.cuda.optim import FlatArrays
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.models.wavenet import WaveNet
from npar.ops.masks import causal_mask
from npar.verify.gradcheck import gradcheck


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(*arrays):
    return tuple(None if a is None else a.copy_to_host() for a in arrays)


def check(forward, backward, inputs, title, kinks=None):
    report = gradcheck(forward, backward, inputs, max_entries=24, n_directions=3,
                       kinks=kinks, title=title)
    assert report.ok, report.table()
    assert not report.vacuous, f"{title}: zero gradients {report.vacuous}"


def test_conv2d_gradcheck(rng):
    mask = causal_mask((3, 2, 2, 3), "B")

    def forward(x, w, b):
        y, cache = gconv.conv2d_forward(dev(x), dev(w), dev(b), (1, 0, 1, 1), (1, 2),
                                        mask)
        return y.copy_to_host(), cache

    def backward(dy, cache):
        return host(*gconv.conv2d_backward(dev(dy), cache))

    inputs = {"x": rng.standard_normal((1, 2, 3, 4)),
              "w": rng.standard_normal((3, 2, 2, 3)) * mask,
              "b": rng.standard_normal(3)}
    check(forward, backward, inputs, "cuda conv2d")


def test_conv1d_gradcheck(rng):
    def forward(x, w, b):
        y, cache = gconv.conv1d_forward(dev(x), dev(w), dev(b), 2, "CNT")
        return y.copy_to_host(), cache

    def backward(dy, cache):
        return host(*gconv.conv1d_backward(dev(dy), cache))

    inputs = {"x": rng.standard_normal((2, 2, 6)), "w": rng.standard_normal((3, 2, 2)),
              "b": rng.standard_normal(3)}
    check(forward, backward, inputs, "cuda conv1d")


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_dense_gradcheck(rng, layout):
    mask = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])

    def forward(x, w, b):
        y, cache = gconv.dense_forward(dev(x), dev(w), dev(b), mask, layout)
        return y.copy_to_host(), cache

    def backward(dy, cache):
        return host(*gconv.dense_backward(dev(dy), cache))

    x = rng.standard_normal((4, 3))
    inputs = {"x": x if layout == "rows" else x.T.copy(),
              "w": rng.standard_normal((2, 3)) * mask, "b": rng.standard_normal(2)}
    check(forward, backward, inputs, f"cuda dense ({layout})")


def test_gate_relu_shift_gradcheck(rng):
    # gate -> ReLU -> down-shift, one chain so that each backward is used.
    def forward(x):
        g, gate_cache = gew.gate_forward(dev(x), axis=0)
        r, relu_cache = gew.relu_forward(g)
        return gew.shift_down_forward(r).copy_to_host(), (gate_cache, relu_cache)

    def backward(dy, cache):
        gate_cache, relu_cache = cache
        dr = gew.relu_backward(gew.shift_down_backward(dev(dy)), relu_cache)
        return host(gew.gate_backward(dr, gate_cache))

    def relu_inputs(x):
        return [gew.gate_forward(dev(x), axis=0)[0].copy_to_host()]

    inputs = {"x": rng.standard_normal((4, 1, 3, 2))}
    check(forward, backward, inputs, "cuda gate, relu, shift", kinks=relu_inputs)


def test_softmax_cross_entropy_gradcheck(rng):
    targets = rng.integers(0, 5, 4)

    def forward(z):
        nll, cache = gsoftmax.softmax_cross_entropy_forward(dev(z), targets)
        return nll.copy_to_host(), cache

    def backward(dnll, cache):
        return host(gsoftmax.softmax_cross_entropy_backward(dev(dnll), cache))

    check(forward, backward, {"z": 3.0 * rng.standard_normal((4, 5))},
          "cuda softmax cross-entropy")


def test_onehot_conv1d_gradcheck(rng):
    q = dev(rng.integers(0, 4, (2, 5)))

    def forward(w, b):
        y, cache = gmodels.onehot_conv1d_forward(q, dev(w), dev(b), 1)
        return y.copy_to_host(), cache

    def backward(dy, cache):
        return host(*gmodels.onehot_conv1d_backward(dev(dy), cache))

    check(forward, backward, {"w": rng.standard_normal((3, 4, 2)),
                              "b": rng.standard_normal(3)}, "cuda one-hot conv1d")


# ---- whole models -----------------------------------------------------------


MODELS = {
    "gated_pixelcnn": lambda: GatedPixelCNN(dict(
        image_channels=1, channels=2, layers=2, kernel=3, first_kernel=3,
        head_channels=3, levels=4), seed=3),
    "pixelcnn": lambda: PixelCNN(dict(
        image_channels=1, channels=2, layers=1, kernel=3, first_kernel=3,
        head_channels=3, levels=4), seed=3),
    "wavenet": lambda: WaveNet(dict(
        levels=4, channels=2, skip_channels=2, head_channels=3, layers=2,
        kernel=2, first_kernel=2), seed=3),
}


def _batch(name, rng):
    if name == "wavenet":
        return rng.integers(0, 4, (1, 7))
    return rng.integers(0, 4, (1, 1, 3, 3))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_device_model_gradient_along_a_random_direction(rng, name):
    # d/de L(theta + e d) at e = 0 by centred differences of the device
    # loss, against <grad, d> from the device backward pass, in float64.
    model = MODELS[name]().astype(np.float64)
    runner = gmodels.device_model(model)
    x = runner.upload_batch(_batch(name, rng))
    grads = FlatArrays({k: v.shape for k, v in model.params.items()}, np.float64)
    out = cuda.device_array(1, np.float64)

    def loss(params):
        count = runner.loss_and_grads(FlatArrays.from_host(params), x, grads, out)
        return float(out.copy_to_host()[0]) / count

    loss(model.params)
    g = grads.to_host()
    eps = 1e-6
    for _ in range(2):
        d = {k: rng.standard_normal(v.shape) for k, v in model.params.items()}
        plus = {k: v + eps * d[k] for k, v in model.params.items()}
        minus = {k: v - eps * d[k] for k, v in model.params.items()}
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        analytic = sum(float(np.sum(g[k] * d[k])) for k in g)
        error = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8)
        assert error <= 1e-6, (name, numeric, analytic, error)

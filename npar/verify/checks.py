"""The registry of gradient checks: one per kernel, layer and model.

Each entry builds a small float64 problem (a forward function, its backward
and the tensors to differentiate) and hands it to
:func:`npar.verify.gradcheck.gradcheck`. ``npar gradcheck NAME`` runs one,
``npar gradcheck all`` runs them all; the tests run them too.

Entries for the 1-D convolution and WaveNet appear when
:mod:`npar.ops.conv1d` and :mod:`npar.models.wavenet` can be imported.
"""

import functools
import logging
from dataclasses import dataclass

import numpy as np

from npar.nn.layers import Conv2d, Dense, shift_down_backward, shift_down_forward
from npar.ops.activations import (
    gate_backward,
    gate_forward,
    relu_backward,
    relu_forward,
)
from npar.ops.conv2d import conv2d_backward, conv2d_forward
from npar.ops.dense import dense_backward, dense_forward
from npar.ops.embedding import embedding_backward, embedding_forward
from npar.ops.masks import causal_mask, centred_padding, channel_groups
from npar.ops.softmax import (
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from npar.verify.gradcheck import gradcheck

logger = logging.getLogger(__name__)


@dataclass
class Problem:
    """What :func:`gradcheck` needs: ``forward(**inputs) -> (y, cache)``,
    ``backward(dy, cache) -> grads`` and the float64 ``inputs``."""

    forward: object
    backward: object
    inputs: dict


@dataclass
class Check:
    """A registered check: ``build(rng) -> Problem``."""

    name: str
    description: str
    build: object

    def run(self, seed=0, **options):
        """Build the problem from ``seed`` and check it; returns the report."""
        problem = self.build(np.random.default_rng(seed))
        return gradcheck(problem.forward, problem.backward, problem.inputs,
                         seed=seed, title=self.name, **options)


CHECKS = {}


def register(name, description):
    """Decorator: add ``build(rng) -> Problem`` to :data:`CHECKS`."""

    def add(build):
        if name in CHECKS:
            raise ValueError(f"gradient check {name!r} is registered twice")
        CHECKS[name] = Check(name, description, build)
        return build

    return add


def _normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# ---- 2-D convolution ------------------------------------------------------


def _conv2d_problem(rng, x_shape, w_shape, padding, dilation=(1, 1), mask=None,
                    bias=True, layout="NCHW"):
    inputs = {"x": _normal(rng, *x_shape), "w": _normal(rng, *w_shape, scale=0.5)}
    if bias:
        inputs["b"] = _normal(rng, w_shape[0])
    if layout == "CNHW":
        inputs["x"] = np.ascontiguousarray(inputs["x"].swapaxes(0, 1))

    def forward(x, w, b=None):
        return conv2d_forward(x, w, b, padding, dilation, mask, layout)

    def backward(dy, cache):
        dx, dw, db = conv2d_backward(dy, cache)
        return (dx, dw, db) if bias else (dx, dw)

    return Problem(forward, backward, inputs)


@register("conv2d.mask_a", "3x3 convolution with mask type A, 3 colour groups")
def _conv2d_mask_a(rng):
    shape = (6, 3, 3, 3)
    mask = causal_mask(shape, "A", channel_groups(6, 3), channel_groups(3, 3))
    return _conv2d_problem(rng, (2, 3, 5, 4), shape, centred_padding(3, 3),
                           mask=mask)


@register("conv2d.mask_b", "5x5 convolution with mask type B")
def _conv2d_mask_b(rng):
    shape = (3, 2, 5, 5)
    return _conv2d_problem(rng, (2, 2, 5, 6), shape, centred_padding(5, 5),
                           mask=causal_mask(shape, "B"))


@register("conv2d.dilated", "3x3 convolution, dilation (2, 3), masked")
def _conv2d_dilated(rng):
    shape = (3, 2, 3, 3)
    dilation = (2, 3)
    return _conv2d_problem(rng, (2, 2, 6, 7), shape,
                           centred_padding(3, 3, dilation), dilation,
                           mask=causal_mask(shape, "B"))


@register("conv2d.asymmetric_padding", "2x3 kernel, padding (2, 0, 1, 3)")
def _conv2d_asymmetric(rng):
    return _conv2d_problem(rng, (2, 2, 4, 5), (3, 2, 2, 3), (2, 0, 1, 3))


@register("conv2d.1x1", "1x1 convolution, mask type B over 2 colour groups")
def _conv2d_1x1(rng):
    shape = (4, 4, 1, 1)
    groups = channel_groups(4, 2)
    return _conv2d_problem(rng, (2, 4, 3, 3), shape, 0,
                           mask=causal_mask(shape, "B", groups, groups))


@register("conv2d.cnhw", "3x3 convolution in the models' (C, N, H, W) layout, "
          "no bias")
def _conv2d_cnhw(rng):
    return _conv2d_problem(rng, (2, 3, 4, 4), (2, 3, 3, 3), (1, 1, 1, 1),
                           bias=False, layout="CNHW")


@register("layer.conv2d", "Conv2d layer (parameters by name), masked 1x3 kernel")
def _layer_conv2d(rng):
    mask = causal_mask((4, 2, 1, 3), "A", centre=(0, 2))
    layer = Conv2d("conv", 2, 4, (1, 3), padding=(0, 0, 2, 0), mask=mask)
    params = layer.init(rng, np.float64)
    x = _normal(rng, 2, 2, 3, 4)

    def forward(x, **params):
        return layer.forward(params, x)

    def backward(dy, cache):
        dx, grads = layer.backward(params, cache, dy)
        return {"x": dx, **grads}

    return Problem(forward, backward, {"x": x, **params})


# ---- dense, gate, ReLU, softmax cross-entropy, shift -----------------------


@register("dense", "dense map on rows with bias")
def _dense(rng):
    inputs = {"x": _normal(rng, 5, 4), "w": _normal(rng, 3, 4), "b": _normal(rng, 3)}
    return Problem(dense_forward, dense_backward, inputs)


@register("dense.masked", "masked dense map (the output head of an RGB model)")
def _dense_masked(rng):
    groups_in = channel_groups(6, 3)
    groups_out = channel_groups(9, 3)
    mask = causal_mask((9, 6, 1, 1), "B", groups_out, groups_in)[:, :, 0, 0]
    layer = Dense("head", 6, 9, mask)
    params = layer.init(rng, np.float64)

    def forward(x, **params):
        return layer.forward(params, x)

    def backward(dy, cache):
        dx, grads = layer.backward(params, cache, dy)
        return {"x": dx, **grads}

    return Problem(forward, backward, {"x": _normal(rng, 7, 6), **params})


@register("gate", "gated activation tanh(a) * sigmoid(b), channel axis 1")
def _gate(rng):
    forward = functools.partial(gate_forward, axis=1)
    return Problem(forward, gate_backward, {"x": _normal(rng, 2, 6, 3, 3)})


@register("gate.cnhw", "gated activation on the channel axis 0 (C, N, H, W)")
def _gate_cnhw(rng):
    forward = functools.partial(gate_forward, axis=0)
    return Problem(forward, gate_backward, {"x": _normal(rng, 4, 2, 3, 2)})


@register("relu", "ReLU, inputs at least 0.05 away from the kink")
def _relu(rng):
    magnitude = rng.uniform(0.05, 1.0, size=(3, 4, 5))
    x = np.where(rng.random(magnitude.shape) < 0.5, -magnitude, magnitude)
    return Problem(relu_forward, relu_backward, {"x": x})


@register("softmax_cross_entropy", "per-row softmax cross-entropy, V = 7")
def _softmax_cross_entropy(rng):
    targets = rng.integers(0, 7, size=6)
    forward = functools.partial(softmax_cross_entropy_forward, targets=targets)
    return Problem(forward, softmax_cross_entropy_backward,
                   {"logits": _normal(rng, 6, 7, scale=3.0)})


@register("embedding", "level embedding: 7 levels, D = 3, every level read "
          "at least once")
def _embedding(rng):
    codes = np.concatenate([np.arange(7), rng.integers(0, 7, size=17)])
    codes = rng.permutation(codes).reshape(2, 3, 4)
    forward = functools.partial(embedding_forward, codes)
    return Problem(forward, embedding_backward, {"table": _normal(rng, 7, 3)})


@register("shift_down", "one-row down-shift between the vertical and "
          "horizontal stacks")
def _shift_down(rng):
    def forward(x):
        return shift_down_forward(x), None

    def backward(dy, cache):
        return shift_down_backward(dy)

    return Problem(forward, backward, {"x": _normal(rng, 3, 2, 4, 3)})


# ---- whole models ---------------------------------------------------------


def _images(rng, model, n_batch, height, width):
    return rng.integers(0, model.levels, size=(n_batch, model.image_channels,
                                                height, width))


def model_logits_problem(model, x):
    """Every parameter of ``model`` through its logits on images ``x``."""

    def forward(**params):
        return model.forward(params, x)

    def backward(dy, cache):
        return model.backward(model.params, cache, dy)

    return Problem(forward, backward, dict(model.params))


def model_conditional_problem(model, x, labels):
    """Every parameter of a class-conditional ``model`` (the per-class gate
    biases included) through its logits on images ``x`` with ``labels``."""

    def forward(**params):
        return model.forward(params, x, labels)

    def backward(dy, cache):
        return model.backward(model.params, cache, dy)

    return Problem(forward, backward, dict(model.params))


def model_input_problem(model, x_scaled):
    """The gradient with respect to the scaled input (``backward(...,
    input_grad=True)``, what the causality checks read) and every
    parameter, with ``x_scaled`` ``(N, C, H, W)`` floats in ``[-1, 1]``
    standing in for the scaled images."""

    class FloatInput(type(model)):
        # The model with its input scaling replaced by the identity, so that
        # the input is a float tensor that the check can perturb.
        def _scale(self, x):
            return np.ascontiguousarray(x.transpose(1, 0, 2, 3))

    twin = FloatInput(model.config, model.params)

    def forward(x, **params):
        return twin.forward(params, x)

    def backward(dy, cache):
        grads, dx = twin.backward(twin.params, cache, dy, input_grad=True)
        return {"x": dx, **grads}

    return Problem(forward, backward, {"x": x_scaled, **model.params})


def model_loss_problem(model, x):
    """Every parameter of ``model`` through ``loss_and_grads(x)`` (the mean
    negative log-likelihood the training loop minimises)."""

    def forward(**params):
        loss, grads = model.loss_and_grads(x, params)
        return np.float64(loss), grads

    def backward(dy, grads):
        return {name: float(dy) * g for name, g in grads.items()}

    return Problem(forward, backward, dict(model.params))


def _pixelcnn_model(kind, image_channels, rng, **extra):
    from npar.models.pixelcnn import GatedPixelCNN, PixelCNN

    cls = GatedPixelCNN if kind == "gated" else PixelCNN
    config = cls.default_config()
    config.update(image_channels=image_channels, channels=6, layers=2, kernel=3,
                  first_kernel=3, head_channels=12, levels=4)
    config.update(extra)
    model = cls(config, seed=int(rng.integers(2**31))).astype(np.float64)
    return model


@register("gated_pixelcnn", "Gated PixelCNN, 2 layers, grey: all parameters "
          "through the logits")
def _gated_pixelcnn(rng):
    model = _pixelcnn_model("gated", 1, rng)
    return model_logits_problem(model, _images(rng, model, 2, 4, 4))


@register("gated_pixelcnn.rgb", "Gated PixelCNN, 2 layers, RGB masks: all "
          "parameters through the logits")
def _gated_pixelcnn_rgb(rng):
    model = _pixelcnn_model("gated", 3, rng)
    return model_logits_problem(model, _images(rng, model, 2, 4, 4))


@register("gated_pixelcnn.loss", "Gated PixelCNN: all parameters through "
          "loss_and_grads (softmax cross-entropy included)")
def _gated_pixelcnn_loss(rng):
    model = _pixelcnn_model("gated", 1, rng)
    return model_loss_problem(model, _images(rng, model, 2, 4, 4))


@register("gated_pixelcnn.classes", "class-conditional Gated PixelCNN (3 "
          "classes): all parameters, per-class gate biases included")
def _gated_pixelcnn_classes(rng):
    model = _pixelcnn_model("gated", 1, rng, classes=3)
    x = _images(rng, model, 3, 4, 4)
    return model_conditional_problem(model, x, np.array([0, 2, 1]))


@register("gated_pixelcnn.input", "Gated PixelCNN, RGB: the input gradient "
          "(backward with input_grad) and all parameters")
def _gated_pixelcnn_input(rng):
    model = _pixelcnn_model("gated", 3, rng)
    return model_input_problem(model, rng.uniform(-1, 1, size=(2, 3, 4, 4)))


@register("gated_pixelcnn.embedding", "Gated PixelCNN, RGB, with a level "
          "embedding (D = 2): all parameters, the tables included")
def _gated_pixelcnn_embedding(rng):
    model = _pixelcnn_model("gated", 3, rng, embedding=2)
    return model_logits_problem(model, _images(rng, model, 2, 4, 4))


@register("pixelcnn.embedding", "PixelCNN, grey, with a level embedding "
          "(D = 3): all parameters through loss_and_grads")
def _pixelcnn_embedding(rng):
    model = _pixelcnn_model("plain", 1, rng, embedding=3)
    return model_loss_problem(model, _images(rng, model, 2, 4, 4))


@register("pixelcnn", "PixelCNN, 2 residual blocks, grey: all parameters "
          "through the logits")
def _pixelcnn(rng):
    model = _pixelcnn_model("plain", 1, rng)
    return model_logits_problem(model, _images(rng, model, 2, 4, 4))


@register("pixelcnn.rgb", "PixelCNN, RGB masks: all parameters through the "
          "logits")
def _pixelcnn_rgb(rng):
    model = _pixelcnn_model("plain", 3, rng)
    return model_logits_problem(model, _images(rng, model, 2, 4, 4))


@register("pixelcnn.input", "PixelCNN, grey: the input gradient (backward "
          "with input_grad) and all parameters")
def _pixelcnn_input(rng):
    model = _pixelcnn_model("plain", 1, rng)
    return model_input_problem(model, rng.uniform(-1, 1, size=(2, 1, 4, 4)))


@register("pixelcnn.loss", "PixelCNN: all parameters through loss_and_grads")
def _pixelcnn_loss(rng):
    model = _pixelcnn_model("plain", 1, rng)
    return model_loss_problem(model, _images(rng, model, 2, 4, 4))


# ---- 1-D convolution and WaveNet, when present ------------------------------


def _register_conv1d():
    try:
        from npar.ops.conv1d import conv1d_backward, conv1d_forward
    except ImportError as error:
        logger.debug("no 1-D convolution checks: %s", error)
        return

    def problem(rng, x_shape, w_shape, dilation, bias=True, layout="NCT"):
        inputs = {"x": _normal(rng, *x_shape), "w": _normal(rng, *w_shape)}
        if bias:
            inputs["b"] = _normal(rng, w_shape[0])
        if layout == "CNT":
            inputs["x"] = np.ascontiguousarray(inputs["x"].swapaxes(0, 1))

        def forward(x, w, b=None):
            return conv1d_forward(x, w, b, dilation, layout)

        def backward(dy, cache):
            dx, dw, db = conv1d_backward(dy, cache)
            return (dx, dw, db) if bias else (dx, dw)

        return Problem(forward, backward, inputs)

    register("conv1d.causal", "causal 1-D convolution, K = 2, D = 1")(
        lambda rng: problem(rng, (2, 3, 7), (4, 3, 2), 1))
    register("conv1d.dilated", "causal 1-D convolution, K = 3, D = 2")(
        lambda rng: problem(rng, (2, 2, 9), (3, 2, 3), 2))
    register("conv1d.dilation_past_end", "causal 1-D convolution whose oldest "
             "tap (D = 4, K = 3) reaches before the start")(
        lambda rng: problem(rng, (2, 2, 6), (2, 2, 3), 4))
    register("conv1d.1x1", "1-D convolution, K = 1, (C, N, T) layout, no bias")(
        lambda rng: problem(rng, (2, 3, 5), (4, 3, 1), 1, bias=False,
                            layout="CNT"))


def _register_wavenet():
    try:
        from npar.models.wavenet import WaveNet
        from npar.ops.onehot_conv1d import (
            onehot_conv1d_backward,
            onehot_conv1d_forward,
        )
    except ImportError as error:
        logger.debug("no WaveNet checks: %s", error)
        return

    def onehot_problem(rng):
        q = rng.integers(0, 5, size=(2, 7))

        def forward(w, b):
            return onehot_conv1d_forward(q, w, b, delay=1)

        inputs = {"w": _normal(rng, 3, 5, 2), "b": _normal(rng, 3)}
        return Problem(forward, onehot_conv1d_backward, inputs)

    def model_and_codes(rng, length, **changes):
        # Receptive field 2 + (2 - 1) (2^3 - 1) + 1 = 10 samples.
        config = dict(levels=8, channels=4, skip_channels=6, head_channels=6,
                      layers=3, stacks=1, kernel=2, first_kernel=2)
        config.update(changes)
        model = WaveNet(config, seed=int(rng.integers(2**31))).astype(np.float64)
        return model, rng.integers(0, model.levels, size=(2, length))

    def logits_problem(rng, **changes):
        model, q = model_and_codes(rng, 12, **changes)

        def forward(**params):
            return model.forward(params, q)

        def backward(dy, cache):
            return model.backward(model.params, cache, dy)

        return Problem(forward, backward, dict(model.params))

    def loss_problem(rng):
        model, q = model_and_codes(rng, 16)
        return model_loss_problem(model, q)

    register("onehot_conv1d", "WaveNet's input layer: causal convolution of "
             "one-hot codes, K = 2, delay 1")(onehot_problem)
    register("wavenet", "WaveNet, dilations 1 2 4: all parameters through the "
             "logits")(logits_problem)
    register("wavenet.stacks", "WaveNet, 2 stacks of dilations 1 2, K = 3, "
             "K_0 = 1: all parameters through the logits")(
        lambda rng: logits_problem(rng, layers=2, stacks=2, kernel=3,
                                   first_kernel=1))
    register("wavenet.loss", "WaveNet: all parameters through loss_and_grads, "
             "scored from the receptive field on")(loss_problem)


_register_conv1d()
_register_wavenet()


def check_names():
    """Names of the registered checks, in registration order."""
    return list(CHECKS)


def run_check(name, seed=0, **options):
    """Run the registered check ``name``; returns a GradcheckReport."""
    if name not in CHECKS:
        raise ValueError(
            f"unknown gradient check {name!r}; known checks: {check_names()}"
        )
    return CHECKS[name].run(seed=seed, **options)

"""PixelCNN (van den Oord et al. 2016a) and Gated PixelCNN (2016b).

Both models map uint8 images ``x`` ``(N, C, H, W)`` to logits
``(N, C, H, W, V)``: a categorical distribution over the ``V = 256`` levels
of every sub-pixel, each conditioned only on the sub-pixels before it in
raster order (and, for colour images, on the earlier colours of the same
pixel). The log-likelihood of an image is

.. math::  \\log p(x) = \\sum_{c, i, j} \\log \\mathrm{softmax}(
           z_{c i j})_{x_{c i j}},

and bits per dimension is ``-log p(x) / (C H W log 2)``.
"""

import numpy as np

from npar.models.io import register
from npar.nn.layers import (
    Conv2d,
    Dense,
    Embedding,
    shift_down_backward,
    shift_down_forward,
)
from npar.ops.activations import (
    gate_backward,
    gate_forward,
    relu_backward,
    relu_forward,
)
from npar.ops.masks import causal_mask, centred_padding, channel_groups
from npar.ops.softmax import (
    log_softmax,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

LEVELS = 256


def check_images(x, channels, levels=LEVELS):
    """Raise a clear error unless ``x`` is an integer ``(N, C, H, W)`` image
    batch with ``C = channels`` and values in ``0..levels-1``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"images must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind not in "iu":
        raise TypeError(
            f"images must be integers in 0..{levels - 1} (uint8), got dtype "
            f"{x.dtype}; scale float images with (x * 255).round().astype('uint8')"
        )
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"images must have shape (N, {channels}, H, W), got {x.shape}"
        )
    if x.size and (x.min() < 0 or x.max() >= levels):
        raise ValueError(
            f"image values must lie in 0..{levels - 1}, got values from "
            f"{x.min()} to {x.max()}"
        )
    return x


def require_no_embedding(model, what):
    """Raise a clear error when ``what`` (a feature that does not yet map the
    level embedding) meets a model with one (config ``embedding > 0``)."""
    if getattr(model, "embedding", 0):
        raise ValueError(
            f"{what} does not support the level embedding yet; this "
            f"{model.kind} has embedding={model.embedding} (train without "
            f"--embedding to use it)")


class _ImageModel:
    """What the two PixelCNNs share: input scaling, the output head, the loss.

    Subclasses define ``self.layers`` (all parameterised layers, for
    :meth:`init_params`) and ``_body_forward/_body_backward`` mapping the
    scaled input to a feature map ``(F, N, H, W)``. Inside the models every
    map is kept channels-first, ``(C, N, H, W)``, so that each convolution
    is one matrix product with no transposes.
    """

    kind = None

    def __init__(self, config, params=None, seed=0):
        self.config = dict(config)
        self.image_channels = self.config["image_channels"]
        self.levels = self.config.get("levels", LEVELS)
        embedding = self.config.get("embedding", 0)
        if isinstance(embedding, bool) or not isinstance(
                embedding, (int, np.integer)) or embedding < 0:
            raise ValueError(
                f"embedding must be an integer >= 0 (0: none), got {embedding!r}")
        self.embedding = int(embedding)
        if "embedding" in self.config:  # a plain int, as the JSON header needs
            self.config["embedding"] = self.embedding
        # Channels of the first layer's input: per colour, the scaled value
        # and its level's D-vector (colour c in block c, as the masks read).
        self.input_channels = self.image_channels * (1 + self.embedding)
        self._build()
        if self.embedding:
            self.embed = Embedding("embed", self.image_channels, self.levels,
                                   self.embedding)
            self.layers = self.layers + [self.embed]
        self.params = self.init_params(seed) if params is None else params
        self._check_params()

    # ---- parameters -------------------------------------------------------

    def init_params(self, seed=0, dtype=np.float32):
        """Fresh parameters from ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        params = {}
        for layer in self.layers:
            params.update(layer.init(rng, dtype))
        return params

    def _check_params(self):
        expected = self.init_params(0).keys()
        missing = sorted(set(expected) - set(self.params))
        extra = sorted(set(self.params) - set(expected))
        if missing or extra:
            raise ValueError(
                f"parameters do not match a {self.kind} with config "
                f"{self.config}: missing {missing}, unexpected {extra}"
            )
        shapes = {k: v.shape for k, v in self.init_params(0).items()}
        for name, value in self.params.items():
            if value.shape != shapes[name]:
                raise ValueError(
                    f"parameter {name} has shape {value.shape}, this config "
                    f"needs {shapes[name]}"
                )

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype

    def astype(self, dtype):
        """A copy of the model with parameters in ``dtype`` (float64 for
        gradient checks)."""
        params = {k: v.astype(dtype) for k, v in self.params.items()}
        return type(self)(self.config, params)

    def n_params(self):
        """Number of trainable scalars (masked taps included)."""
        return int(sum(v.size for v in self.params.values()))

    # ---- forward and backward ---------------------------------------------

    def _scale(self, x):
        # Map levels 0..V-1 to [-1, 1], in the (C, N, H, W) layout used inside.
        scaled = x.astype(self.dtype) * (2.0 / (self.levels - 1)) - 1.0
        return np.ascontiguousarray(scaled.transpose(1, 0, 2, 3))

    def _input_forward(self, params, x):
        # (N, C, H, W) integers -> the first layer's input (C (1 + D), N, H, W):
        # per colour its scaled value, then (with an embedding) its D-vector.
        scaled = self._scale(x)
        if not self.embedding:
            return scaled, None
        vectors, cache = self.embed.forward(params, x)  # (C, D, N, H, W)
        inputs = np.concatenate([scaled[:, None], vectors], axis=1)
        return inputs.reshape((self.input_channels,) + scaled.shape[1:]), cache

    def _input_backward(self, params, dx, cache):
        # dx of the first layer's input -> (embedding grads, d scaled value).
        if not self.embedding:
            return {}, dx
        blocks = dx.reshape((self.image_channels, 1 + self.embedding)
                            + dx.shape[1:])
        grads = self.embed.backward(params, cache, blocks[:, 1:])
        return grads, np.ascontiguousarray(blocks[:, 0])

    def _head_layers(self, features):
        groups = self.image_channels
        hidden = self.config["head_channels"]
        out = self.image_channels * self.levels
        in_g = channel_groups(features, groups)
        mid_g = channel_groups(hidden, groups)
        out_g = np.repeat(np.arange(groups), self.levels)
        m1 = causal_mask((hidden, features, 1, 1), "B", mid_g, in_g)[:, :, 0, 0]
        m2 = causal_mask((out, hidden, 1, 1), "B", out_g, mid_g)[:, :, 0, 0]
        masked = groups > 1
        return (Dense("head1", features, hidden, m1 if masked else None),
                Dense("head2", hidden, out, m2 if masked else None))

    def _one_hot(self, labels, n_batch):
        # Class labels (N,) -> one-hot rows y (N, classes) in the model dtype;
        # None for an unconditional model (config "classes" 0 or absent).
        classes = self.config.get("classes", 0)
        if labels is None:
            if classes:
                raise ValueError(
                    f"this {self.kind} is class-conditional ({classes} classes): "
                    f"pass labels, (N,) integers in 0..{classes - 1}"
                )
            return None
        if not classes:
            raise ValueError(
                f"this {self.kind} is unconditional (classes = 0): labels must "
                f"be None, got {type(labels).__name__}"
            )
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.shape != (n_batch,):
            raise ValueError(
                f"labels must have shape ({n_batch},), one per image, got "
                f"{labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(
                f"labels must lie in 0..{classes - 1}, got values from "
                f"{labels.min()} to {labels.max()}"
            )
        y = np.zeros((n_batch, classes), dtype=self.dtype)
        y[np.arange(n_batch), labels] = 1.0
        return y

    def forward(self, params, x, labels=None):
        """Logits of every sub-pixel.

        Args:
            params: the parameter dict.
            x: ``(N, C, H, W)`` integer images.
            labels: ``(N,)`` integer classes for a class-conditional model
                (config ``classes > 0``), else None.

        Returns:
            logits: ``(N H W, C V)`` rows (one row per pixel, the ``V``
            levels of colour ``c`` in columns ``c V .. c V + V - 1``), and
            the cache for :meth:`backward`.
        """
        y = self._one_hot(labels, x.shape[0])
        inputs, input_cache = self._input_forward(params, x)
        features, body_cache = self._body_forward(params, inputs, y)
        shape = features.shape
        head1, head2 = self.head

        a, relu1_cache = relu_forward(features)
        rows = a.reshape(shape[0], -1).T
        hidden, head1_cache = head1.forward(params, rows)
        hidden, relu2_cache = relu_forward(hidden)
        logits, head2_cache = head2.forward(params, hidden)
        cache = (shape, body_cache, relu1_cache, head1_cache, relu2_cache,
                 head2_cache, input_cache)
        return logits, cache

    def backward(self, params, cache, dlogits, input_grad=False):
        """Gradients of every parameter given ``dlogits`` ``(N H W, C V)``.

        With ``input_grad`` the gradient with respect to the scaled input is
        returned too, ``(grads, dx)`` with ``dx`` ``(N, C, H, W)``: what the
        causality checks use to ask which inputs one logit depends on.
        """
        (shape, body_cache, relu1_cache, head1_cache, relu2_cache, head2_cache,
         input_cache) = cache
        head1, head2 = self.head

        dhidden, grads = head2.backward(params, head2_cache, dlogits)
        dhidden = relu_backward(dhidden, relu2_cache)
        drows, g = head1.backward(params, head1_cache, dhidden)
        grads.update(g)
        dfeatures = relu_backward(np.ascontiguousarray(drows.T).reshape(shape),
                                  relu1_cache)
        body_grads, dx = self._body_backward(params, body_cache, dfeatures,
                                             input_grad or self.embedding > 0)
        grads.update(body_grads)
        if self.embedding:
            embed_grads, dx = self._input_backward(params, dx, input_cache)
            grads.update(embed_grads)
        if input_grad:
            return grads, np.ascontiguousarray(dx.transpose(1, 0, 2, 3))
        return grads

    def _targets(self, x):
        # (N, C, H, W) -> rows (N H W * C,) matching logits.reshape(-1, V).
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1).astype(
            np.int64)

    def loss_and_grads(self, x, params=None, labels=None):
        """Mean negative log-likelihood per sub-pixel (nats) and its gradient.

        Args:
            x: ``(N, C, H, W)`` integer images.
            params: a parameter dict to use instead of ``self.params``.
            labels: ``(N,)`` integer classes (class-conditional models only).

        Returns:
            ``(loss, grads)`` with ``grads`` a dict shaped like ``params``.
        """
        if params is not None and not isinstance(params, dict):
            raise TypeError(
                f"params must be a dict of arrays or None, got "
                f"{type(params).__name__}; pass class labels as labels=..."
            )
        params = self.params if params is None else params
        check_images(x, self.image_channels, self.levels)
        logits, cache = self.forward(params, x, labels)
        flat = logits.reshape(-1, self.levels)
        nll, ce_cache = softmax_cross_entropy_forward(flat, self._targets(x))
        loss = float(nll.mean())
        dnll = np.full(nll.shape, 1.0 / nll.size, dtype=nll.dtype)
        dlogits = softmax_cross_entropy_backward(dnll, ce_cache).reshape(logits.shape)
        return loss, self.backward(params, cache, dlogits)

    def logit_input_gradient(self, x, channel, row, column, level):
        """Gradient of one logit ``z[:, channel, row, column, level]`` (summed
        over the batch) with respect to the scaled input, ``(N, C, H, W)``.

        A causal model has zero gradient at every input position at or after
        ``(row, column)`` in raster order (and at later colours of it). With
        a level embedding this is the gradient of the scaled value only; the
        embedding's path is seen by perturbing the levels."""
        check_images(x, self.image_channels, self.levels)
        logits, cache = self.forward(self.params, x)
        n_batch, _, height, width = x.shape
        dlogits = np.zeros_like(logits).reshape(n_batch, height, width,
                                                self.image_channels, self.levels)
        dlogits[:, row, column, channel, level] = 1.0
        _, dx = self.backward(self.params, cache, dlogits.reshape(logits.shape),
                              input_grad=True)
        return dx

    def logits(self, x, labels=None):
        """Logits ``(N, C, H, W, V)`` for integer images ``x`` ``(N, C, H, W)``
        (and ``(N,)`` class ``labels`` for a class-conditional model)."""
        check_images(x, self.image_channels, self.levels)
        rows, _ = self.forward(self.params, x, labels)
        n_batch, channels, height, width = x.shape
        out = rows.reshape(n_batch, height, width, channels, self.levels)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2, 4))

    def log_prob(self, x, labels=None):
        """Per-image log-likelihood in nats, ``(N,)`` float64."""
        logp = log_softmax(self.logits(x, labels).astype(np.float64), axis=-1)
        picked = np.take_along_axis(logp, x[..., None].astype(np.int64), axis=-1)
        return picked.reshape(x.shape[0], -1).sum(axis=1)

    def nll_sum(self, x, labels=None):
        """Summed negative log-likelihood (nats, float64) of a batch."""
        check_images(x, self.image_channels, self.levels)
        rows, _ = self.forward(self.params, x, labels)
        nll, _ = softmax_cross_entropy_forward(rows.reshape(-1, self.levels),
                                               self._targets(x))
        return float(nll.astype(np.float64).sum())


@register
class GatedPixelCNN(_ImageModel):
    """Gated PixelCNN with vertical and horizontal stacks (van den Oord et
    al. 2016b, fig. 2).

    Config keys: ``image_channels`` (C of the images), ``channels`` (hidden
    width ``F``, a multiple of ``image_channels``), ``layers`` (number of
    gated layers, the first of mask type A), ``kernel`` (odd ``K`` of the
    later layers), ``first_kernel`` (odd ``K`` of the first layer),
    ``head_channels``, ``levels`` (V), ``classes`` (0: unconditional) and
    ``embedding`` (D: the first layer also reads a learned D-vector per input
    level, :mod:`npar.ops.embedding`; 0 or absent: none).

    One gated layer, with ``v`` and ``h`` the two stacks, ``*`` a
    convolution and ``down`` the one-row shift:

    .. math::  \\hat v = W_v * v,\\qquad
               v' = \\tanh(\\hat v_a) \\odot \\sigma(\\hat v_b)

    .. math::  \\hat h = W_h * h + W_{vh}\\, \\mathrm{down}(\\hat v),\\qquad
               h' = h + W_o\\, (\\tanh(\\hat h_a) \\odot \\sigma(\\hat h_b))

    ``W_v`` is a ``(K//2 + 1) x K`` kernel over the rows up to the current
    one; the shift makes what reaches ``h`` strictly above the pixel.
    ``W_h`` is a ``1 x (K//2 + 1)`` kernel ending at the current column,
    whose last tap is masked (type A in the first layer, B after).
    Nothing flows from ``h`` to ``v``. The first layer has no residual.

    With ``classes > 0`` the model is class-conditional (van den Oord et al.
    2016b, eq. 4): a one-hot class ``y`` adds a learned per-class bias
    inside every gate of both stacks,

    .. math::  \\hat v \\mathrel{+}= V_v^\\top y,\\qquad
               \\hat h \\mathrel{+}= V_h^\\top y,

    with ``V_v`` = ``l{i}.vy.w`` and ``V_h`` = ``l{i}.hy.w``, each
    ``(2F, classes)``; the bias of ``v`` reaches ``h`` only through the
    down-shift, like the rest of ``v``.
    """

    kind = "gated_pixelcnn"

    @staticmethod
    def default_config():
        return dict(image_channels=1, channels=32, layers=6, kernel=3,
                    first_kernel=7, head_channels=64, levels=LEVELS, classes=0)

    def _build(self):
        cfg = self.config
        groups = self.image_channels
        width = cfg["channels"]
        classes = cfg.get("classes", 0)
        if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) \
                or classes < 0:
            raise ValueError(f"classes must be an integer >= 0, got {classes!r}")
        for key in ("kernel", "first_kernel"):
            if cfg[key] < 1 or cfg[key] % 2 == 0:
                raise ValueError(f"{key} must be an odd integer >= 1, got {cfg[key]}")
        if cfg["layers"] < 1:
            raise ValueError(f"layers must be >= 1, got {cfg['layers']}")
        self.stack = []
        self.class_bias = []
        for index in range(cfg["layers"]):
            k = cfg["first_kernel"] if index == 0 else cfg["kernel"]
            c_in = self.input_channels if index == 0 else width
            mask_type = "A" if index == 0 else "B"
            in_g = channel_groups(c_in, groups)
            gate_g = channel_groups(width, groups, repeats=2)
            width_g = channel_groups(width, groups)

            v_conv = Conv2d(f"l{index}.v", c_in, 2 * width, (k // 2 + 1, k),
                            padding=(k // 2, 0, k // 2, k // 2))
            h_mask = causal_mask((2 * width, c_in, 1, k // 2 + 1), mask_type,
                                 gate_g, in_g, centre=(0, k // 2))
            h_conv = Conv2d(f"l{index}.h", c_in, 2 * width, (1, k // 2 + 1),
                            padding=(0, 0, k // 2, 0), mask=h_mask)
            v_to_h = Conv2d(f"l{index}.vh", 2 * width, 2 * width, (1, 1))
            out_mask = causal_mask((width, width, 1, 1), "B", width_g, width_g)
            h_out = Conv2d(f"l{index}.ho", width, width, (1, 1),
                           mask=out_mask if groups > 1 else None)
            self.stack.append((v_conv, h_conv, v_to_h, h_out))
            if classes:
                self.class_bias.append((
                    Dense(f"l{index}.vy", classes, 2 * width, bias=False),
                    Dense(f"l{index}.hy", classes, 2 * width, bias=False)))
        self.head = self._head_layers(width)
        self.layers = [layer for group in self.stack for layer in group]
        self.layers += list(self.head)
        self.layers += [layer for pair in self.class_bias for layer in pair]

    def receptive_field(self):
        """Rows above and columns to each side that the logits can read."""
        ks = [self.config["first_kernel"]] + [self.config["kernel"]] * (
            self.config["layers"] - 1)
        return {"rows_above": sum(k // 2 for k in ks) + 1,
                "columns_each_side": sum(k // 2 for k in ks)}

    def _body_forward(self, params, x, y=None):
        v, h = x, x
        caches = []
        class_caches = []
        for index, (v_conv, h_conv, v_to_h, h_out) in enumerate(self.stack):
            v_pre, v_cache = v_conv.forward(params, v)
            if y is not None:
                v_bias, h_bias = self.class_bias[index]
                bias, vy_cache = v_bias.forward(params, y)
                v_pre += bias.T[:, :, None, None]
            link, link_cache = v_to_h.forward(params, shift_down_forward(v_pre))
            h_pre, h_cache = h_conv.forward(params, h)
            h_pre += link
            if y is not None:
                bias, hy_cache = h_bias.forward(params, y)
                h_pre += bias.T[:, :, None, None]
                class_caches.append((vy_cache, hy_cache))
            v, v_gate_cache = gate_forward(v_pre, axis=0)
            h_gated, h_gate_cache = gate_forward(h_pre, axis=0)
            h_res, out_cache = h_out.forward(params, h_gated)
            h = h_res if index == 0 else h + h_res
            caches.append((v_cache, link_cache, h_cache, v_gate_cache,
                           h_gate_cache, out_cache))
        if y is not None:
            caches.append(class_caches)
        return h, caches

    def _body_backward(self, params, caches, dh, input_grad=False):
        grads = {}
        dv = None
        conditional = len(caches) > len(self.stack)
        class_caches = caches[len(self.stack)] if conditional else None
        for index in reversed(range(len(self.stack))):
            v_conv, h_conv, v_to_h, h_out = self.stack[index]
            (v_cache, link_cache, h_cache, v_gate_cache, h_gate_cache,
             out_cache) = caches[index]

            dh_gated, g = h_out.backward(params, out_cache, dh)
            grads.update(g)
            dh_pre = gate_backward(dh_gated, h_gate_cache)
            dh_in, g = h_conv.backward(params, h_cache, dh_pre,
                                       need_dx=index > 0 or input_grad)
            grads.update(g)
            dlink, g = v_to_h.backward(params, link_cache, dh_pre)
            grads.update(g)
            dv_pre = shift_down_backward(dlink)
            if dv is not None:
                dv_pre += gate_backward(dv, v_gate_cache)
            if class_caches is not None:
                # The bias of image n is the same at every pixel: its gradient
                # is the sum of the pre-activation gradient over (H, W).
                v_bias, h_bias = self.class_bias[index]
                vy_cache, hy_cache = class_caches[index]
                _, g = h_bias.backward(params, hy_cache, dh_pre.sum(axis=(2, 3)).T)
                grads.update(g)
                _, g = v_bias.backward(params, vy_cache, dv_pre.sum(axis=(2, 3)).T)
                grads.update(g)
            dv, g = v_conv.backward(params, v_cache, dv_pre,
                                    need_dx=index > 0 or input_grad)
            grads.update(g)
            # The residual carries dh straight through to the layer below.
            if index > 0:
                dh = dh + dh_in
        dx = dv + dh_in if input_grad else None
        return grads, dx


@register
class PixelCNN(_ImageModel):
    """The plain masked PixelCNN (van den Oord et al. 2016a, sec. 3.4).

    A ``first_kernel x first_kernel`` convolution with mask type A, then
    ``layers`` residual blocks ``h' = h + W_2 * relu(W_1 * relu(h))`` whose
    ``kernel x kernel`` convolutions use mask type B, then the output head.
    Its receptive field has a blind spot above and to the right of the
    pixel, which the Gated PixelCNN removes.
    """

    kind = "pixelcnn"

    @staticmethod
    def default_config():
        return dict(image_channels=1, channels=32, layers=5, kernel=3,
                    first_kernel=7, head_channels=64, levels=LEVELS)

    def _build(self):
        cfg = self.config
        groups = self.image_channels
        width = cfg["channels"]
        for key in ("kernel", "first_kernel"):
            if cfg[key] < 1 or cfg[key] % 2 == 0:
                raise ValueError(f"{key} must be an odd integer >= 1, got {cfg[key]}")
        if cfg["layers"] < 0:
            raise ValueError(
                f"layers must be >= 0 (residual blocks), got {cfg['layers']}")
        width_g = channel_groups(width, groups)
        k0 = cfg["first_kernel"]
        first_mask = causal_mask((width, self.input_channels, k0, k0), "A",
                                 width_g,
                                 channel_groups(self.input_channels, groups))
        self.first = Conv2d("l0", self.input_channels, width, (k0, k0),
                            padding=centred_padding(k0, k0), mask=first_mask)
        self.blocks = []
        k = cfg["kernel"]
        for index in range(1, cfg["layers"] + 1):
            mask = causal_mask((width, width, k, k), "B", width_g, width_g)
            self.blocks.append((
                Conv2d(f"l{index}.a", width, width, (k, k),
                       padding=centred_padding(k, k), mask=mask),
                Conv2d(f"l{index}.b", width, width, (k, k),
                       padding=centred_padding(k, k), mask=mask),
            ))
        self.head = self._head_layers(width)
        self.layers = [self.first] + [c for pair in self.blocks for c in pair]
        self.layers += list(self.head)

    def _body_forward(self, params, x, y=None):
        # y is always None: the plain PixelCNN has no classes (see _one_hot).
        h, first_cache = self.first.forward(params, x)
        caches = []
        for conv_a, conv_b in self.blocks:
            a, relu_a = relu_forward(h)
            a, cache_a = conv_a.forward(params, a)
            b, relu_b = relu_forward(a)
            b, cache_b = conv_b.forward(params, b)
            h = h + b
            caches.append((relu_a, cache_a, relu_b, cache_b))
        return h, (first_cache, caches)

    def _body_backward(self, params, cache, dh, input_grad=False):
        first_cache, caches = cache
        grads = {}
        for (conv_a, conv_b), (relu_a, cache_a, relu_b, cache_b) in zip(
                reversed(self.blocks), reversed(caches)):
            db, g = conv_b.backward(params, cache_b, dh)
            grads.update(g)
            da, g = conv_a.backward(params, cache_a, relu_backward(db, relu_b))
            grads.update(g)
            dh = dh + relu_backward(da, relu_a)
        dx, g = self.first.backward(params, first_cache, dh, need_dx=input_grad)
        grads.update(g)
        return grads, dx

"""PixelCNN generation: a naive engine and a cached one.

Both draw the sub-pixels of ``N`` images in raster order, row ``i``, column
``j``, then colour ``c``, from

.. math::  x_{c i j} \\sim \\pi(z_{c i j}),\\qquad
           z = f(x_{<(c, i, j)}),

with ``pi`` a decoding rule of :mod:`npar.sampling.strategies`
(temperature, top-k, top-p) and one ``rng.random(N)`` per sub-pixel, so that
two engines that compute the same logits make the same choices.

- The naive engine runs ``model.forward`` on the whole batch for every
  sub-pixel: ``C H W`` full passes, each of cost ``O(H W)``.
- The cached engine keeps what earlier pixels computed (in the spirit of
  Ramachandran et al. 2017, "Fast generation for convolutional
  autoregressive models") and computes each layer at each pixel once:

  * Gated PixelCNN: the vertical stack of row ``i`` depends only on rows
    ``<= i``, and the horizontal stack of row ``i`` reads it only through
    the one-row down-shift. So once row ``i`` is complete, every layer's
    vertical pre-activation ``\\hat v_\\ell`` of that row is computed in one
    matrix product per layer, together with its link into the horizontal
    stack of row ``i + 1``,
    ``W_{vh}\\,\\mathrm{down}(\\hat v_\\ell)``. On row ``i`` the horizontal
    stack is then computed pixel by pixel: at ``(i, j)`` each layer reads
    only its ``K//2 + 1`` left neighbours on the same row, kept in a row
    buffer, so a pixel costs ``O(1)`` instead of a pass over the image.
  * plain PixelCNN: every masked convolution at ``(i, j)`` reads its
    previous layer at earlier positions only, all computed already; each
    layer is computed at ``(i, j)`` from full per-layer maps, over the taps
    that its mask leaves open.

  For colour images each colour of a pixel re-runs that pixel's step with
  the colours drawn so far (the masks hide the rest); the values left in
  the caches are those of the last colour's step, which the masks make
  equal to the full forward pass.

The per-pixel work runs in one Numba kernel per sub-pixel, the row-wise
vertical stack in two per layer and row. They are serial loops with no
BLAS call: the matrices are small, and a threaded BLAS only loses time to
thread hand-offs there (most of all on a busy machine).
"""

import logging
from dataclasses import dataclass, field

import numba
import numpy as np

from npar.ops.activations import gate_forward
from npar.sampling import strategies

log = logging.getLogger(__name__)

ENGINES = ("cached", "naive")
# MNIST's size: what sample_images makes when the model config names none.
DEFAULT_SIZE = (28, 28)
_KINDS = ("gated_pixelcnn", "pixelcnn")


# ---- compiled per-pixel kernels ----------------------------------------------


# Activations are kept batch-major, (N, C) per pixel, and weights transposed
# to (C_in, C_out), so that every innermost loop runs over output channels
# (32 to 256 long): long loops that the compiler vectorises.


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _add_product(acc, a, w, count):
    # acc (O,) += sum_{k < count} a[k] w[k, :], w (K, O): four rows of w per
    # pass over acc, so that each load and store of acc carries four
    # multiply-adds instead of one.
    n_out = acc.shape[0]
    count4 = count - count % 4
    for k in range(0, count4, 4):
        a0, a1, a2, a3 = a[k], a[k + 1], a[k + 2], a[k + 3]
        for o in range(n_out):
            acc[o] += (a0 * w[k, o] + a1 * w[k + 1, o]) + (
                a2 * w[k + 2, o] + a3 * w[k + 3, o])
    for k in range(count4, count):
        a0 = a[k]
        for o in range(n_out):
            acc[o] += a0 * w[k, o]


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _head(features, w1, b1, w2, b2, relu_features, hidden, out):
    # out (N, V) = relu(relu(features) W1 + b1) W2 + b2, features (N, F),
    # w1 (F, F_head), w2 (F_head, V).
    n_batch = features.shape[0]
    n_features, n_hidden = w1.shape
    for n in range(n_batch):
        for f in range(n_features):
            a = features[n, f]
            relu_features[f] = a if a > 0 else 0.0
        hidden[n, :] = b1
        _add_product(hidden[n], relu_features, w1, n_features)
        for o in range(n_hidden):
            if hidden[n, o] < 0:
                hidden[n, o] = 0.0
        out[n, :] = b2
        _add_product(out[n], hidden[n], w2, n_hidden)


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _gated_pixel(rows, j, pad, taps, c_in, w_h, b_h, link, w_o, b_o,
                 w1, b1, w2, b2, pre, gated, relu_features, hidden, out):
    # One pixel (i, j) of the horizontal stack of every layer, then the head.
    # rows[l] (W + pad, N, C) holds the current row of the input of layer l
    # (slot 0: the scaled image and any level embedding, slot l + 1: h_l, in
    # its first F channels), with ``pad`` zero columns
    # on the left; link[l, :, j N + n] (2F,) is W_vh down(v_hat) + biases at
    # (i, j) of image n.
    # w_h (L, taps, C_in, 2F), w_o (L, F, F) as (in, out).
    n_layers = w_h.shape[0]
    two_f = w_h.shape[3]
    n_features = two_f // 2
    n_batch = rows.shape[2]
    for layer in range(n_layers):
        src = rows[layer]
        dst = rows[layer + 1]
        n_taps = taps[layer]
        for n in range(n_batch):
            for o in range(two_f):
                pre[n, o] = b_h[layer, o] + link[layer, o, j * n_batch + n]
            # h_hat = W_h * h over the n_taps columns ending at j.
            for q in range(n_taps):
                col = pad + j - (n_taps - 1) + q
                _add_product(pre[n], src[col, n], w_h[layer, q], c_in[layer])
            # tanh(a) sigmoid(b) with tanh|a| = (1 - e) / (1 + e), e = exp(-2|a|),
            # and sigmoid(b) = 1 / (1 + exp(-b)): two exp calls, which cost
            # half as much as two tanh calls; nothing overflows but exp(-b)
            # for b < -88 (float32), which gives inf and sigmoid 0, correctly.
            for f in range(n_features):
                a = pre[n, f]
                e = np.exp(-2.0 * abs(a))
                t = (1.0 - e) / (1.0 + e)
                if a < 0:
                    t = -t
                gated[n, f] = t / (1.0 + np.exp(-pre[n, n_features + f]))
            # h' = h + W_o gated + b_o (no residual in the first layer).
            h_new = dst[pad + j, n]
            for f in range(n_features):
                h_new[f] = b_o[layer, f]
            if layer > 0:
                for f in range(n_features):
                    h_new[f] += src[pad + j, n, f]
            _add_product(h_new, gated[n], w_o[layer], n_features)
    _head(rows[n_layers, pad + j], w1, b1, w2, b2, relu_features, hidden, out)


@numba.njit(cache=True)
def _row_patches(v_in, i, k_h, k_w, cols):
    # cols[(c K_h + p) K_w + q, j N + n] = v_in[i + p, c, j + q, n]: the
    # patches of one output row; v_in (H + K_h - 1, C, W + K_w - 1, N) is
    # zero-padded above and at both sides.
    c_in, n_batch = v_in.shape[1], v_in.shape[3]
    width = cols.shape[1] // n_batch
    for c in range(c_in):
        for p in range(k_h):
            for q in range(k_w):
                row = (c * k_h + p) * k_w + q
                for j in range(width):
                    for n in range(n_batch):
                        cols[row, j * n_batch + n] = v_in[i + p, c, j + q, n]


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _affine(w, x, bias, out):
    # out (O, W N) = w (O, R) x (R, W N) + bias (O, N) at every column j.
    # Two output rows and four inputs per pass over a row of out, so that
    # each load and store of out carries eight multiply-adds: about three
    # times the speed of one multiply-add per pass.
    n_out, n_in = w.shape
    run = x.shape[1]
    n_batch = bias.shape[1]
    in4 = n_in - n_in % 4
    for o in range(n_out):
        for t in range(run):
            out[o, t] = bias[o, t % n_batch]
    for o in range(0, n_out - 1, 2):
        for r in range(0, in4, 4):
            a0, a1, a2, a3 = w[o, r], w[o, r + 1], w[o, r + 2], w[o, r + 3]
            b0, b1 = w[o + 1, r], w[o + 1, r + 1]
            b2, b3 = w[o + 1, r + 2], w[o + 1, r + 3]
            for t in range(run):
                x0, x1, x2, x3 = x[r, t], x[r + 1, t], x[r + 2, t], x[r + 3, t]
                out[o, t] += (a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3)
                out[o + 1, t] += (b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3)
        for r in range(in4, n_in):
            a, b = w[o, r], w[o + 1, r]
            for t in range(run):
                out[o, t] += a * x[r, t]
                out[o + 1, t] += b * x[r, t]
    if n_out % 2:
        o = n_out - 1
        for r in range(n_in):
            a = w[o, r]
            for t in range(run):
                out[o, t] += a * x[r, t]


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _conv_at(src, i, j, tap_p, tap_q, w, b, out):
    # out (N, O) = b + sum_t src[i + p_t, j + q_t] w[t]: a masked convolution
    # at one pixel over its open taps; src (H + pad, W + 2 pad, N, C) padded,
    # w (T, C, O).
    n_in = w.shape[1]
    for n in range(src.shape[2]):
        out[n, :] = b
        for t in range(tap_p.shape[0]):
            _add_product(out[n], src[i + tap_p[t], j + tap_q[t], n], w[t], n_in)


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _plain_pixel(x_map, relu_h, relu_a, i, j, pad, tap0_p, tap0_q, w0, b0,
                 tap_p, tap_q, w_a, b_a, w_b, b_b, w1, b1, w2, b2,
                 h, tmp, relu_features, hidden, out):
    # One pixel (i, j) of every layer of the plain PixelCNN, then the head.
    # relu_h[l] holds relu(h_l), relu_a[l] relu(a_{l+1}), padded by ``pad``.
    _conv_at(x_map, i, j, tap0_p, tap0_q, w0, b0, h)
    n_batch, n_features = h.shape
    for block in range(w_a.shape[0]):
        for n in range(n_batch):
            for f in range(n_features):
                a = h[n, f]
                relu_h[block, i + pad, j + pad, n, f] = a if a > 0 else 0.0
        _conv_at(relu_h[block], i, j, tap_p, tap_q, w_a[block], b_a[block], tmp)
        for n in range(n_batch):
            for f in range(n_features):
                a = tmp[n, f]
                relu_a[block, i + pad, j + pad, n, f] = a if a > 0 else 0.0
        _conv_at(relu_a[block], i, j, tap_p, tap_q, w_b[block], b_b[block], tmp)
        for n in range(n_batch):
            for f in range(n_features):
                h[n, f] += tmp[n, f]
    _head(h, w1, b1, w2, b2, relu_features, hidden, out)


# ---- engines -----------------------------------------------------------------


def _effective(layer, params):
    # The weights the layer really uses: masked taps at exactly zero.
    w = params[layer.w_name]
    return w if layer.mask is None else w * layer.mask.astype(w.dtype)


def _bias(layer, params, size, dtype):
    if layer.bias:
        return params[layer.b_name]
    return np.zeros(size, dtype)


class _Engine:
    """What the generation loop asks of an engine: logits of one sub-pixel,
    and notice of every value drawn and every row completed."""

    def __init__(self, model, n_batch, height, width, labels):
        self.model = model
        self.labels = labels

    def logits(self, x, i, j, c):
        raise NotImplementedError

    def observe(self, x, i, j, c):
        pass

    def row_done(self, x, i):
        pass


class NaiveEngine(_Engine):
    """One full ``model.forward`` of the batch per sub-pixel."""

    def logits(self, x, i, j, c):
        model = self.model
        rows, _ = model.forward(model.params, x, self.labels)
        n_batch, channels, height, width = x.shape
        rows = rows.reshape(n_batch, height, width, channels, model.levels)
        return rows[:, i, j, c]


class _HeadWeights:
    # The output head with masks applied, as (in, out), split per colour.
    def __init__(self, model, params):
        head1, head2 = model.head
        dtype = model.dtype
        self.w1 = np.ascontiguousarray(_effective(head1, params).T)
        self.b1 = _bias(head1, params, head1.c_out, dtype)
        w2 = _effective(head2, params)
        b2 = _bias(head2, params, head2.c_out, dtype)
        levels = model.levels
        self.w2 = [np.ascontiguousarray(w2[c * levels:(c + 1) * levels].T)
                   for c in range(model.image_channels)]
        self.b2 = [np.ascontiguousarray(b2[c * levels:(c + 1) * levels])
                   for c in range(model.image_channels)]


class GatedCachedEngine(_Engine):
    """Cached generation for :class:`npar.models.pixelcnn.GatedPixelCNN`.

    State: the link of every layer into the current row (``(L, 2F, W N)``),
    the current row of every horizontal-stack layer, and the vertical
    stack's inputs of all rows so far.
    """

    def __init__(self, model, n_batch, height, width, labels):
        super().__init__(model, n_batch, height, width, labels)
        params = model.params
        cfg = model.config
        dtype = model.dtype
        n_layers = cfg["layers"]
        features = cfg["channels"]
        kernels = [cfg["first_kernel"]] + [cfg["kernel"]] * (n_layers - 1)
        c_ins = [model.input_channels] + [features] * (n_layers - 1)
        width_c = max(features, model.input_channels)  # channels of a row slot
        self.height, self.width = height, width
        self.kernels = kernels
        self.pad = max(k // 2 for k in kernels)
        self.taps = np.array([k // 2 + 1 for k in kernels], dtype=np.int64)
        self.c_in = np.array(c_ins, dtype=np.int64)

        # Horizontal stack: W_h as (L, taps, C_in, 2F), zero beyond each
        # layer's own taps and channels; W_o as (L, F_in, F_out).
        two_f = 2 * features
        self.w_h = np.zeros((n_layers, self.taps.max(), width_c, two_f), dtype)
        self.b_h = np.zeros((n_layers, two_f), dtype)
        self.w_o = np.zeros((n_layers, features, features), dtype)
        self.b_o = np.zeros((n_layers, features), dtype)
        self.v_layers = []
        for index, (v_conv, h_conv, v_to_h, h_out) in enumerate(model.stack):
            w = _effective(h_conv, params)[:, :, 0, :]  # (2F, C_in, taps)
            self.w_h[index, :w.shape[2], :w.shape[1]] = w.transpose(2, 1, 0)
            self.b_h[index] = _bias(h_conv, params, two_f, dtype)
            self.w_o[index] = _effective(h_out, params)[:, :, 0, 0].T
            self.b_o[index] = _bias(h_out, params, features, dtype)
            # Vertical stack: W_v as (2F, C K_h K_w) and W_vh, each with its
            # bias per image, (2F, N): b_v + V_v^T y and b_vh + V_h^T y (the
            # class biases are zero for an unconditional model).
            v_bias = np.repeat(_bias(v_conv, params, two_f, dtype)[:, None],
                               n_batch, axis=1)
            link_bias = np.repeat(_bias(v_to_h, params, two_f, dtype)[:, None],
                                  n_batch, axis=1)
            if labels is not None:
                y = model._one_hot(labels, n_batch)
                v_y, h_y = model.class_bias[index]
                v_bias += params[v_y.w_name] @ y.T
                link_bias += params[h_y.w_name] @ y.T
            w_v = _effective(v_conv, params)
            self.v_layers.append((
                np.ascontiguousarray(w_v.reshape(two_f, -1)), v_bias,
                np.ascontiguousarray(_effective(v_to_h, params)[:, :, 0, 0]),
                link_bias, w_v.shape[2:]))
        self.head = _HeadWeights(model, params)

        # Vertical stack inputs (H + K//2, C, W + 2 (K//2), N), zero-padded,
        # row i of the image at index i + K//2; the patches of one row; v_hat.
        self.v_in = [np.zeros((height + k // 2, c, width + 2 * (k // 2), n_batch),
                              dtype) for c, k in zip(c_ins, kernels)]
        self.cols = [np.empty((c * (k // 2 + 1) * k, width * n_batch), dtype)
                     for c, k in zip(c_ins, kernels)]
        self.v_hat = np.empty((two_f, width * n_batch), dtype)
        # Row 0 sees down(v_hat) = 0: the link is its bias alone.
        self.link = np.empty((n_layers, two_f, width * n_batch), dtype)
        for index, layer in enumerate(self.v_layers):
            self.link[index] = np.tile(layer[3], (1, width))
        self.rows = np.zeros((n_layers + 1, width + self.pad, n_batch, width_c),
                             dtype)
        self.scratch = (np.empty((n_batch, two_f), dtype),
                        np.empty((n_batch, features), dtype),
                        np.empty(features, dtype),
                        np.empty((n_batch, self.head.w1.shape[1]), dtype),
                        np.empty((n_batch, model.levels), dtype))

    def logits(self, x, i, j, c):
        pre, gated, relu_features, hidden, out = self.scratch
        _gated_pixel(self.rows, j, self.pad, self.taps, self.c_in, self.w_h,
                     self.b_h, self.link, self.w_o, self.b_o, self.head.w1,
                     self.head.b1, self.head.w2[c], self.head.b2[c], pre, gated,
                     relu_features, hidden, out)
        return out.copy()

    def observe(self, x, i, j, c):
        size = 1 + self.model.embedding
        self.rows[0, self.pad + j, :, c * size:(c + 1) * size] = _inputs(
            x[:, c, i, j], c, self.model)

    def row_done(self, x, i):
        # Row i is complete: every layer's v_hat of row i, the gated input of
        # the next layer, and the links into row i + 1.
        if i + 1 == self.height:
            return
        model = self.model
        v_row = np.stack([_inputs(x[:, c, i, :], c, model)
                          for c in range(model.image_channels)])  # (C, N, W, 1+D)
        v_row = v_row.transpose(0, 3, 2, 1).reshape(-1, self.width, x.shape[0])
        v_hat = self.v_hat
        shape = (v_hat.shape[0], self.width, -1)
        for index, (w_v, v_bias, w_vh, link_bias, (k_h, k_w)) in enumerate(
                self.v_layers):
            v_in = self.v_in[index]
            v_in[i + k_h - 1, :, k_w // 2:k_w // 2 + self.width] = v_row
            _row_patches(v_in, i, k_h, k_w, self.cols[index])
            _affine(w_v, self.cols[index], v_bias, v_hat)
            _affine(w_vh, v_hat, link_bias, self.link[index])
            if index + 1 < len(self.v_layers):
                v_row, _ = gate_forward(v_hat.reshape(shape), axis=0)


class PlainCachedEngine(_Engine):
    """Cached generation for the plain :class:`npar.models.pixelcnn.PixelCNN`:
    full maps of every layer's (ReLU'd) input, each pixel computed once."""

    def __init__(self, model, n_batch, height, width, labels):
        super().__init__(model, n_batch, height, width, labels)
        model._one_hot(labels, n_batch)  # the plain PixelCNN takes no labels
        params = model.params
        cfg = model.config
        dtype = model.dtype
        k0, k = cfg["first_kernel"], cfg["kernel"]
        features = cfg["channels"]
        self.pad = max(k0 // 2, k // 2)

        def open_taps(layer):
            # Taps where the mask leaves anything open, as (p, q) shifted to
            # the shared padding, and the weights (T, C_in, C_out) there.
            w = _effective(layer, params)
            kh, kw = layer.kernel
            mask = np.ones(w.shape) if layer.mask is None else layer.mask
            open_pq = [(p, q) for p in range(kh) for q in range(kw)
                       if mask[:, :, p, q].any()]
            shift_h, shift_w = self.pad - kh // 2, self.pad - kw // 2
            tap_p = np.array([p + shift_h for p, _ in open_pq], dtype=np.int64)
            tap_q = np.array([q + shift_w for _, q in open_pq], dtype=np.int64)
            weights = np.stack([w[:, :, p, q].T for p, q in open_pq])
            return tap_p, tap_q, np.ascontiguousarray(weights)

        self.tap0_p, self.tap0_q, self.w0 = open_taps(model.first)
        self.b0 = _bias(model.first, params, features, dtype)
        w_a, w_b, b_a, b_b = [], [], [], []
        for conv_a, conv_b in model.blocks:
            self.tap_p, self.tap_q, w = open_taps(conv_a)
            w_a.append(w)
            w_b.append(open_taps(conv_b)[2])
            b_a.append(_bias(conv_a, params, features, dtype))
            b_b.append(_bias(conv_b, params, features, dtype))
        n_blocks = len(model.blocks)
        if n_blocks == 0:
            self.tap_p = self.tap_q = np.zeros(0, np.int64)
            self.w_a = self.w_b = np.zeros((0, 0, features, features), dtype)
            self.b_a = self.b_b = np.zeros((0, features), dtype)
        else:
            self.w_a, self.w_b = np.stack(w_a), np.stack(w_b)
            self.b_a, self.b_b = np.stack(b_a), np.stack(b_b)
        self.head = _HeadWeights(model, params)

        shape = (height + self.pad, width + 2 * self.pad)
        self.x_map = np.zeros(shape + (n_batch, model.input_channels), dtype)
        self.relu_h = np.zeros((n_blocks,) + shape + (n_batch, features), dtype)
        self.relu_a = np.zeros((n_blocks,) + shape + (n_batch, features), dtype)
        self.scratch = (np.empty((n_batch, features), dtype),
                        np.empty((n_batch, features), dtype),
                        np.empty(features, dtype),
                        np.empty((n_batch, self.head.w1.shape[1]), dtype),
                        np.empty((n_batch, model.levels), dtype))

    def logits(self, x, i, j, c):
        h, tmp, relu_features, hidden, out = self.scratch
        _plain_pixel(self.x_map, self.relu_h, self.relu_a, i, j, self.pad,
                     self.tap0_p, self.tap0_q, self.w0, self.b0, self.tap_p,
                     self.tap_q, self.w_a, self.b_a, self.w_b, self.b_b,
                     self.head.w1, self.head.b1, self.head.w2[c],
                     self.head.b2[c], h, tmp, relu_features, hidden, out)
        return out.copy()

    def observe(self, x, i, j, c):
        size = 1 + self.model.embedding
        self.x_map[i + self.pad, j + self.pad, :, c * size:(c + 1) * size] = \
            _inputs(x[:, c, i, j], c, self.model)


def _inputs(values, c, model):
    # The first layer's input channels of colour c for integer levels
    # ``values`` (any shape): (..., 1 + D), the scaled value (the same
    # expression as _ImageModel._scale) then the level's embedding, if any.
    scaled = values.astype(model.dtype) * (2.0 / (model.levels - 1)) - 1.0
    if not model.embedding:
        return scaled[..., None]
    table = model.params[model.embed.w_name][c]
    return np.concatenate([scaled[..., None], table[values]], axis=-1)


def make_engine(model, engine, n_batch, height, width, labels=None):
    """The engine object ``engine`` (``"cached"`` or ``"naive"``) for ``model``."""
    if engine == "naive":
        return NaiveEngine(model, n_batch, height, width, labels)
    if engine != "cached":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if model.kind == "gated_pixelcnn":
        return GatedCachedEngine(model, n_batch, height, width, labels)
    return PlainCachedEngine(model, n_batch, height, width, labels)


# ---- the generation loop -----------------------------------------------------


@dataclass
class Generation:
    """What :func:`generate` returns.

    Attributes:
        images: ``(N, C, H, W)`` uint8.
        probs: ``(N, C, H, W, V)`` float64, the model's distribution of every
            sub-pixel (softmax of its logits at temperature 1, before any
            decoding rule; with guidance, of the guided logits), when asked
            for; else None.
        snapshots: ``(S, N, C, H, W)`` uint8, the images after every
            ``snapshot_every`` sub-pixels (the last one complete), when asked
            for; else None. Sub-pixels not yet drawn are 0.
        snapshot_steps: ``(S,)`` number of sub-pixels drawn at each snapshot.
    """

    images: np.ndarray
    probs: np.ndarray = None
    snapshots: np.ndarray = None
    snapshot_steps: np.ndarray = field(default=None)


def _check_size(size):
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
            for s in size):
        raise ValueError(f"size must be (H, W) with integers >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _check_labels(model, labels, n_batch):
    if labels is None:
        return None
    if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
        labels = np.full(n_batch, labels, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.shape != (n_batch,):
        raise ValueError(
            f"labels must be one class or {n_batch} classes (one per image), got "
            f"shape {labels.shape}"
        )
    return labels


def _check_guidance(model, labels, guidance, unconditional):
    if guidance is None:
        if unconditional is not None:
            raise ValueError("an unconditional model is used only with guidance: "
                             "give guidance too, or leave unconditional out")
        return
    strategies.check_guidance(guidance)
    if labels is None:
        raise ValueError("guidance needs a class-conditional model and labels")
    if unconditional is None:
        raise ValueError(
            "guidance needs an unconditional model to guide against: pass "
            "unconditional= (an unconditional PixelCNN of the same levels)")
    if getattr(unconditional, "kind", None) not in _KINDS:
        raise ValueError(
            f"the unconditional model must be one of {_KINDS}, got "
            f"{getattr(unconditional, 'kind', type(unconditional).__name__)!r}")
    if unconditional.config.get("classes", 0):
        raise ValueError(
            "the unconditional model must have no classes, got one with "
            f"{unconditional.config['classes']} classes")
    for what in ("levels", "image_channels"):
        ours, theirs = getattr(model, what), getattr(unconditional, what)
        if ours != theirs:
            raise ValueError(
                f"guidance needs models of the same {what}: the conditional model "
                f"has {ours}, the unconditional one {theirs}")


def generate(model, n, rng, size=DEFAULT_SIZE, engine="cached", temperature=1.0,
             top_k=None, top_p=None, labels=None, record_probs=False,
             snapshot_every=None, progress=False, stop_after=None, guidance=None,
             unconditional=None):
    """Draw ``n`` images from a PixelCNN or Gated PixelCNN.

    Args:
        model: a :class:`npar.models.pixelcnn.GatedPixelCNN` or ``PixelCNN``.
        n: number of images ``N``.
        rng: :class:`numpy.random.Generator`; one ``rng.random(N)`` per
            sub-pixel, in raster order then colour (none when greedy).
        size: ``(H, W)``.
        engine: ``"cached"`` or ``"naive"``.
        temperature, top_k, top_p: the decoding rule, see
            :func:`npar.sampling.strategies.sample`.
        labels: ``(N,)`` classes, or one class for all, for a
            class-conditional model; None otherwise.
        record_probs: keep ``(N, C, H, W, V)`` probabilities (see
            :class:`Generation`).
        snapshot_every: keep a copy of the images every this many sub-pixels.
        progress: show a progress bar over rows (tqdm).
        stop_after: stop after this many sub-pixels (for timing a part of a
            run); the rest of the images stays 0.
        guidance: weight ``w`` of class guidance
            (:func:`npar.sampling.strategies.guided_logits`): each sub-pixel
            is drawn from ``w log p(. | y) + (1 - w) log p(.)``, the
            conditional ``model`` with ``labels`` against ``unconditional``;
            None (default) draws from ``model`` alone.
        unconditional: an unconditional (Gated) PixelCNN with the model's
            levels and colours, run beside ``model`` by the same engine;
            needed with ``guidance``.

    Returns:
        a :class:`Generation`.
    """
    if model.kind not in _KINDS:
        raise ValueError(
            f"PixelCNN generation needs a model of kind {_KINDS}, got {model.kind!r}"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
        )
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if snapshot_every is not None and (
            not isinstance(snapshot_every, (int, np.integer)) or snapshot_every < 1):
        raise ValueError(
            f"snapshot_every must be an integer >= 1 or None, got {snapshot_every!r}"
        )
    strategies.check_temperature(temperature)
    if top_k is not None:
        strategies.check_top_k(top_k)
    if top_p is not None:
        strategies.check_top_p(top_p)
    height, width = _check_size(size)
    n = int(n)
    labels = _check_labels(model, labels, n)
    model._one_hot(labels, n)  # a clear error for missing or stray labels now
    _check_guidance(model, labels, guidance, unconditional)
    channels = model.image_channels
    worker = make_engine(model, engine, n, height, width, labels)
    workers = [worker]
    if guidance is not None:
        workers.append(make_engine(unconditional, engine, n, height, width, None))

    x = np.zeros((n, channels, height, width), dtype=np.uint8)
    probs = (np.zeros((n, channels, height, width, model.levels))
             if record_probs else None)
    snapshots, steps = [], []
    done = 0
    total = channels * height * width if stop_after is None else int(stop_after)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=height, unit="row", desc=f"sample ({engine})")
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                if done == total:
                    break
                logits = worker.logits(x, i, j, c)
                if guidance is not None:
                    logits = strategies.guided_logits(
                        logits, workers[1].logits(x, i, j, c), guidance)
                if record_probs:
                    probs[:, c, i, j] = strategies.temperature_probs(logits, 1.0)
                x[:, c, i, j] = strategies.sample(logits, rng, temperature, top_k,
                                                  top_p)
                for each in workers:
                    each.observe(x, i, j, c)
                done += 1
                if snapshot_every and done % snapshot_every == 0:
                    snapshots.append(x.copy())
                    steps.append(done)
        if done == total and (i + 1) * width * channels > total:
            break  # stopped inside this row (stop_after)
        for each in workers:
            each.row_done(x, i)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if snapshot_every and (not steps or steps[-1] != done):
        snapshots.append(x.copy())
        steps.append(done)
    return Generation(
        images=x, probs=probs,
        snapshots=np.stack(snapshots) if snapshot_every else None,
        snapshot_steps=np.array(steps, dtype=np.int64) if snapshot_every else None)


def image_size(model):
    """``(H, W)`` a model was trained on: its config's ``image_size`` (set by
    ``npar train pixelcnn --crop``), else MNIST's 28 x 28."""
    return tuple(model.config.get("image_size", DEFAULT_SIZE))


def sample_images(model, n, rng, temperature=1.0, engine="cached", labels=None,
                  size=None, top_k=None, top_p=None):
    """``n`` images ``(n, C, H, W)`` uint8 from a (Gated) PixelCNN.

    ``size`` is ``(H, W)``; by default the config's ``image_size`` if it has
    one, else MNIST's 28 x 28. See :func:`generate` for the other arguments.
    """
    if size is None:
        size = image_size(model)
    return generate(model, n, rng, size=size, engine=engine,
                    temperature=temperature, top_k=top_k, top_p=top_p,
                    labels=labels).images

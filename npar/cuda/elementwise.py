"""CUDA elementwise kernels: the gated activation, ReLU, the one-row
down-shift, sums and products, and the input and target maps of the image
models. Each is a grid-stride loop over a flat index (one thread per
element at the GPU launch size, a few threads that stride at the
simulator's; see :mod:`npar.cuda.runtime`).

Gated activation (van den Oord et al. 2016b, eq. 2; WaveNet eq. 3), with
``a`` and ``b`` the two halves of the input's channel axis:

.. math::  y = \\tanh(a) \\odot \\sigma(b),\\qquad
           \\sigma(b) = (1 + \\tanh(b / 2)) / 2,

.. math::  \\partial y / \\partial a = (1 - \\tanh^2 a)\\, \\sigma(b),\\qquad
           \\partial y / \\partial b = \\tanh(a)\\, \\sigma(b)\\,(1 - \\sigma(b)).

ReLU ``y = max(x, 0)`` with ``dx = dy [x > 0]``; the down-shift
``y[:, :, i] = x[:, :, i - 1]`` (row 0 zero) with its adjoint
``dx[:, :, i] = dy[:, :, i + 1]``. The functions mirror
:mod:`npar.ops.activations` and :mod:`npar.nn.layers` on device arrays.
"""

import functools
import math

import numba
import numpy as np
from numba import cuda

from npar.cuda.runtime import check_device_array, empty, flat, launch_plan


def _launch(kernel, n_items, *args):
    plan = launch_plan()
    kernel[plan.blocks(n_items, plan.threads), plan.threads](*args)


@functools.cache
def _kernels(dtype):
    ft = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def gate_forward(x, m, t, s, y):
        # x viewed as (P, 2, m): a = x[p, 0, k], b = x[p, 1, k]; t, s, y (P, m).
        half = ft(0.5)
        one = ft(1.0)
        for idx in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
            p = idx // m
            k = idx - p * m
            tanh_a = ft(math.tanh(x[2 * m * p + k]))
            sigma_b = (ft(math.tanh(x[2 * m * p + m + k] * half)) + one) * half
            t[idx] = tanh_a
            s[idx] = sigma_b
            y[idx] = tanh_a * sigma_b

    @cuda.jit
    def gate_backward(t, s, dy, m, dx):
        one = ft(1.0)
        for idx in range(cuda.grid(1), dy.shape[0], cuda.gridsize(1)):
            p = idx // m
            k = idx - p * m
            tanh_a = t[idx]
            sigma_b = s[idx]
            g = dy[idx]
            dx[2 * m * p + k] = g * (one - tanh_a * tanh_a) * sigma_b
            dx[2 * m * p + m + k] = g * tanh_a * sigma_b * (one - sigma_b)

    @cuda.jit
    def relu_forward(x, y):
        zero = ft(0.0)
        for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            v = x[idx]
            y[idx] = v if v > zero else zero

    @cuda.jit
    def relu_backward(x, dy, dx):
        zero = ft(0.0)
        for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            dx[idx] = dy[idx] if x[idx] > zero else zero

    @cuda.jit
    def add(a, b, out):
        for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[idx] = a[idx] + b[idx]

    @cuda.jit
    def multiply(a, b, out):
        for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[idx] = a[idx] * b[idx]

    @cuda.jit
    def scale(a, alpha, out):
        factor = ft(alpha)
        for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[idx] = a[idx] * factor

    @cuda.jit
    def fill(out, value):
        v = ft(value)
        for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            out[idx] = v

    @cuda.jit
    def shift_down(x, height, width, y):
        # y[..., i, j] = x[..., i - 1, j], zero in row 0; flat over (A, B, H, W).
        zero = ft(0.0)
        for idx in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
            i = (idx // width) % height
            y[idx] = x[idx - width] if i > 0 else zero

    @cuda.jit
    def shift_up(dy, height, width, dx):
        # The adjoint: dx[..., i, j] = dy[..., i + 1, j], zero in the last row.
        zero = ft(0.0)
        for idx in range(cuda.grid(1), dx.shape[0], cuda.gridsize(1)):
            i = (idx // width) % height
            dx[idx] = dy[idx + width] if i < height - 1 else zero

    @cuda.jit
    def swap_axes01(x, d0, d1, inner, y):
        # y[j, i, k] = x[i, j, k] for x (d0, d1, inner), flat.
        for idx in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
            k = idx % inner
            rest = idx // inner
            i = rest % d0
            j = rest // d0
            y[idx] = x[(i * d1 + j) * inner + k]

    @cuda.jit
    def scale_images(x, channels, batch, pixels, step, out):
        # out[c, n, p] = x[n, c, p] * step - 1, x integer (N, C, H W) flat.
        one = ft(1.0)
        factor = ft(step)
        for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            p = idx % pixels
            n = (idx // pixels) % batch
            c = idx // (pixels * batch)
            out[idx] = ft(x[(n * channels + c) * pixels + p]) * factor - one

    return dict(gate_forward=gate_forward, gate_backward=gate_backward,
                relu_forward=relu_forward, relu_backward=relu_backward, add=add,
                multiply=multiply, scale=scale, fill=fill, shift_down=shift_down,
                shift_up=shift_up, swap_axes01=swap_axes01,
                scale_images=scale_images)


@cuda.jit
def _pixel_targets(x, channels, pixels, targets):
    # targets[(n * H W + p) * C + c] = x[n, c, p], the order of the logits'
    # rows (one row per sub-pixel, colours innermost).
    for idx in range(cuda.grid(1), targets.shape[0], cuda.gridsize(1)):
        c = idx % channels
        p = (idx // channels) % pixels
        n = idx // (channels * pixels)
        targets[idx] = x[(n * channels + c) * pixels + p]


def _k(a, name):
    return _kernels(np.dtype(a.dtype))[name]


# ---- gated activation and ReLU ----------------------------------------------


def gate_forward(x, axis=1):
    """Gated activation ``y = tanh(a) * sigmoid(b)`` of a device array.

    Args:
        x: ``(N, 2C, ...)`` (``axis=1``) or ``(2C, N, ...)`` (``axis=0``),
            float32 or float64; channels ``[:C]`` are ``a``, ``[C:]`` ``b``.

    Returns:
        y: ``(N, C, ...)`` (the input's layout), and the cache
        ``(tanh(a), sigmoid(b), x.shape, M)`` for :func:`gate_backward`, with
        ``M`` the number of entries of ``y`` per index before ``axis``.
    """
    check_device_array("x", x)
    shape = tuple(x.shape)
    if not 0 <= axis < len(shape) or shape[axis] % 2:
        raise ValueError(
            f"gated activation needs an even channel count on axis {axis}, got "
            f"shape {shape}"
        )
    n_outer = int(np.prod(shape[:axis], dtype=np.int64))
    out_shape = shape[:axis] + (shape[axis] // 2,) + shape[axis + 1:]
    m = int(np.prod(out_shape, dtype=np.int64)) // max(n_outer, 1)
    y = empty(out_shape, x.dtype)
    t = empty(out_shape, x.dtype)
    s = empty(out_shape, x.dtype)
    _launch(_k(x, "gate_forward"), y.size, flat(x), m, flat(t), flat(s), flat(y))
    return y, (t, s, shape, m)


def gate_backward(dy, cache):
    """Gradient of :func:`gate_forward`: ``dx`` of the input's shape."""
    t, s, x_shape, m = cache
    check_device_array("dy", dy, dtype=t.dtype)
    if tuple(dy.shape) != tuple(t.shape):
        raise ValueError(f"dy must have shape {tuple(t.shape)}, got {dy.shape}")
    dx = empty(x_shape, t.dtype)
    _launch(_k(dy, "gate_backward"), t.size, flat(t), flat(s), flat(dy), m, flat(dx))
    return dx


def relu_forward(x):
    """``y = max(x, 0)`` of a device array; returns ``(y, cache)``."""
    check_device_array("x", x)
    y = empty(x.shape, x.dtype)
    _launch(_k(x, "relu_forward"), x.size, flat(x), flat(y))
    return y, x


def relu_backward(dy, cache):
    """``dx = dy [x > 0]`` (the kink at 0 takes 0)."""
    x = cache
    check_device_array("dy", dy, dtype=x.dtype)
    dx = empty(x.shape, x.dtype)
    _launch(_k(x, "relu_backward"), x.size, flat(x), flat(dy), flat(dx))
    return dx


# ---- sums, products, fills --------------------------------------------------


def add(a, b, out=None):
    """``out = a + b`` (same shape); ``out`` may be ``a`` (in place)."""
    check_device_array("b", b, dtype=a.dtype)
    if a.size != b.size:
        raise ValueError(f"cannot add shapes {a.shape} and {b.shape}")
    out = empty(a.shape, a.dtype) if out is None else out
    _launch(_k(a, "add"), a.size, flat(a), flat(b), flat(out))
    return out


def multiply(a, b, out=None):
    """``out = a * b`` elementwise (a mask times weights); ``out`` may be
    ``a``."""
    check_device_array("b", b, dtype=a.dtype)
    if a.size != b.size:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    out = empty(a.shape, a.dtype) if out is None else out
    _launch(_k(a, "multiply"), a.size, flat(a), flat(b), flat(out))
    return out


def scale(a, alpha, out=None):
    """``out = alpha * a``, with ``alpha`` rounded to ``a``'s dtype first
    (as NumPy does for ``float32_array * python_float``)."""
    out = empty(a.shape, a.dtype) if out is None else out
    _launch(_k(a, "scale"), a.size, flat(a), float(alpha), flat(out))
    return out


def fill(out, value):
    """Set every entry of the device array ``out`` to ``value``."""
    _launch(_k(out, "fill"), out.size, flat(out), float(value))
    return out


def zeros(shape, dtype):
    """A device array of zeros."""
    return fill(empty(shape, dtype), 0.0)


# ---- layout changes and the down-shift --------------------------------------


def shift_down_forward(x):
    """Shift a device ``(A, B, H, W)`` map one row down (row 0 zero), as
    :func:`npar.nn.layers.shift_down_forward`."""
    check_device_array("x", x, ndim=4)
    y = empty(x.shape, x.dtype)
    _launch(_k(x, "shift_down"), x.size, flat(x), x.shape[2], x.shape[3], flat(y))
    return y


def shift_down_backward(dy):
    """Adjoint of :func:`shift_down_forward`: ``dx[:, :, i] = dy[:, :, i+1]``."""
    check_device_array("dy", dy, ndim=4)
    dx = empty(dy.shape, dy.dtype)
    _launch(_k(dy, "shift_up"), dy.size, flat(dy), dy.shape[2], dy.shape[3],
            flat(dx))
    return dx


def swap_batch_channels(x):
    """``(N, C, ...)`` <-> ``(C, N, ...)`` as a new contiguous device array."""
    check_device_array("x", x)
    shape = tuple(x.shape)
    inner = int(np.prod(shape[2:], dtype=np.int64))
    y = empty((shape[1], shape[0]) + shape[2:], x.dtype)
    _launch(_k(x, "swap_axes01"), x.size, flat(x), shape[0], shape[1], inner,
            flat(y))
    return y


def scale_images(x, levels, dtype):
    """Integer images on the device, ``(N, C, H, W)``, to the model input
    ``(C, N, H, W)``: ``x * (2 / (V - 1)) - 1`` in ``dtype`` (as
    :meth:`npar.models.pixelcnn._ImageModel._scale`)."""
    n_batch, channels, height, width = x.shape
    out = empty((channels, n_batch, height, width), dtype)
    step = float(np.dtype(dtype).type(2.0 / (levels - 1)))
    _launch(_kernels(np.dtype(dtype))["scale_images"], out.size, flat(x), channels,
            n_batch, height * width, step, flat(out))
    return out


def pixel_targets(x):
    """Targets ``(N H W C,)`` int64 of integer device images ``(N, C, H, W)``,
    in the order of the logits' rows (as ``_ImageModel._targets``)."""
    n_batch, channels, height, width = x.shape
    targets = empty((x.size,), np.int64)
    _launch(_pixel_targets, x.size, flat(x), channels, height * width, targets)
    return targets

"""Gated activation unit and ReLU.

The gated unit of van den Oord et al. (2016b, eq. 2) and WaveNet (2016c,
eq. 3) splits the channel axis of its input in two halves, ``a`` (the
first C channels) and ``b`` (the last C channels), and computes

.. math::  y = \\tanh(a) \\odot \\sigma(b)

Its derivatives are

.. math::  \\partial y / \\partial a = (1 - \\tanh^2 a)\\, \\sigma(b),\\qquad
           \\partial y / \\partial b = \\tanh(a)\\, \\sigma(b)\\,(1 - \\sigma(b)).
"""

import numba
import numpy as np

from npar.ops._checks import check_float_array


@numba.njit(cache=True)
def _product_kernel(t, s, y):
    # y = t * s, elementwise over flat arrays.
    for k in range(y.size):
        y[k] = t[k] * s[k]


@numba.njit(cache=True)
def _gate_backward_kernel(t_in, s_in, dy, dx):
    n_outer, m = t_in.shape
    for p in range(n_outer):
        for k in range(m):
            t = t_in[p, k]
            s = s_in[p, k]
            g = dy[p, k]
            dx[p, 0, k] = g * (1.0 - t * t) * s
            dx[p, 1, k] = g * t * s * (1.0 - s)


def _split_shape(x, axis):
    if not 0 <= axis < x.ndim or x.shape[axis] % 2:
        raise ValueError(
            f"gated activation needs an even channel count on axis {axis}, got "
            f"shape {x.shape}"
        )
    n_outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    out_shape = x.shape[:axis] + (x.shape[axis] // 2,) + x.shape[axis + 1:]
    return n_outer, out_shape


def gate_forward(x, axis=1):
    """Gated activation ``y = tanh(a) * sigmoid(b)``, ``a, b`` = halves of ``x``.

    Args:
        x: ``(N, 2C, ...)`` float32 or float64; channels ``[:C]`` are ``a``,
            ``[C:]`` are ``b``. ``axis`` names the channel axis (0 for the
            ``(2C, N, H, W)`` layout that the models use inside).

    Returns:
        y: ``(N, C, ...)``, and the cache for :func:`gate_backward`.
    """
    check_float_array("x", x)
    n_outer, out_shape = _split_shape(x, axis)
    x = np.ascontiguousarray(x)
    y = np.empty(out_shape, dtype=x.dtype)
    halves = x.reshape(n_outer, 2, -1)

    # tanh(a), and sigmoid(b) = (1 + tanh(b / 2)) / 2, which never overflows.
    # NumPy's vectorised tanh is several times faster than the scalar libm
    # call a Numba loop makes on CPUs without SVML.
    t = np.tanh(halves[:, 0])
    s = np.tanh(halves[:, 1] * x.dtype.type(0.5))
    s += 1
    s *= 0.5
    _product_kernel(t.reshape(-1), s.reshape(-1), y.reshape(-1))
    return y, (t, s, x.shape)


def gate_backward(dy, cache):
    """Gradient of :func:`gate_forward`.

    Args:
        dy: ``(N, C, ...)`` upstream gradient.
        cache: ``tanh(a)``, ``sigmoid(b)`` and the input shape, kept by the
            forward pass.

    Returns:
        dx: ``(N, 2C, ...)``, ``[da, db]`` on the channel axis.
    """
    t, s, x_shape = cache
    dy = np.ascontiguousarray(dy, dtype=t.dtype)
    dx = np.empty(x_shape, dtype=t.dtype)
    n_outer = t.shape[0]
    _gate_backward_kernel(t, s, dy.reshape(n_outer, -1), dx.reshape(n_outer, 2, -1))
    return dx


def gate_reference(x, axis=1):
    """Plain NumPy gated activation, straight from the equation."""
    a, b = np.split(x, 2, axis=axis)
    with np.errstate(over="ignore"):  # exp(-b) = inf gives sigmoid 0, exactly
        return np.tanh(a) * (1.0 / (1.0 + np.exp(-b)))


@numba.njit(cache=True)
def _relu_forward_kernel(x, y):
    for i in range(x.size):
        v = x[i]
        y[i] = 0.0 if v <= 0 else v  # NaN stays NaN, as in the reference


@numba.njit(cache=True)
def _relu_backward_kernel(x, dy, dx):
    for i in range(x.size):
        dx[i] = dy[i] if x[i] > 0 else 0.0


def relu_forward(x):
    """Rectified linear unit ``y = max(x, 0)``, any shape.

    Returns ``y`` (same shape as ``x``) and the cache for
    :func:`relu_backward`.
    """
    check_float_array("x", x)
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _relu_forward_kernel(x.reshape(-1), y.reshape(-1))
    return y, x


def relu_backward(dy, cache):
    """Gradient of ReLU: ``dx = dy * [x > 0]`` (the kink at 0 takes 0)."""
    x = cache
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    dx = np.empty_like(x)
    _relu_backward_kernel(x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
    return dx


def relu_reference(x):
    """Plain NumPy ReLU."""
    return np.maximum(x, 0)

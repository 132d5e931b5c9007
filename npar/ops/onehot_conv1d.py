"""Causal 1-D convolution of one-hot codes, computed as table look-ups.

WaveNet's first layer reads the past mu-law codes ``q`` ``(N, T)`` (integers
in ``0 .. V-1``) as one-hot vectors, delayed by ``S`` steps so that the
output at ``t`` sees only codes before ``t`` (``S = 1``). With weights
``w`` ``(C_out, V, K)`` and bias ``b`` ``(C_out,)`` this is
:func:`npar.ops.conv1d.conv1d_forward` applied to
``x_{n v t} = [q_{n, t - S} = v]`` (zero for ``t < S``):

.. math::  y_{n o t} = b_o + \\sum_{v, k} w_{o v k}\\,
           x_{n, v,\\, t - (K - 1 - k)}
           = b_o + \\sum_{k:\\ t - S - (K - 1 - k) \\ge 0}
             w_{o,\\, q_{n, t - S - (K - 1 - k)},\\, k}.

Only one ``v`` per tap is non-zero, so the sum over ``v`` is a look-up of
one column of ``w`` and the layer costs ``O(C_out K)`` per position instead
of ``O(C_out V K)``. The gradients are

.. math::  \\partial L/\\partial w_{o v k} = \\sum_{n, t:\\ q_{n, t - S -
           (K - 1 - k)} = v} \\delta_{n o t},\\qquad
           \\partial L/\\partial b_o = \\sum_{n t} \\delta_{n o t},

with ``delta = dL/dy``; the codes have no gradient.
"""

import numba
import numpy as np

from npar.ops._checks import check_float_array, check_nonnegative_int
from npar.ops.conv1d import conv1d_reference


@numba.njit(cache=True)
def _lookup_forward(q, w, b, delay, y):
    # y[o, n, t] = b[o] + sum_k w[o, q[n, t - delay - (K-1-k)], k]
    c_out, _, k_size = w.shape
    n_batch, length = q.shape
    for o in range(c_out):
        for n in range(n_batch):
            for t in range(length):
                acc = b[o]
                for k in range(k_size):
                    s = t - delay - (k_size - 1 - k)
                    if s >= 0:
                        acc += w[o, q[n, s], k]
                y[o, n, t] = acc


@numba.njit(cache=True)
def _lookup_backward(q, dy, delay, dw, db):
    # Scatter-add dy[o, n, t] into the column that the forward read.
    c_out, levels, k_size = dw.shape
    n_batch, length = q.shape
    for o in range(c_out):
        for v in range(levels):
            for k in range(k_size):
                dw[o, v, k] = 0.0
        total = 0.0
        for n in range(n_batch):
            for t in range(length):
                g = dy[o, n, t]
                total += g
                for k in range(k_size):
                    s = t - delay - (k_size - 1 - k)
                    if s >= 0:
                        dw[o, q[n, s], k] += g
        db[o] = total


def check_codes(q, levels):
    """Raise unless ``q`` is an integer ``(N, T)`` array with values in
    ``0 .. levels-1``; return it as a contiguous int64 array."""
    if not isinstance(q, np.ndarray):
        raise TypeError(f"codes must be a numpy.ndarray, got {type(q).__name__}")
    if q.dtype.kind not in "iu":
        raise TypeError(
            f"codes must be integers in 0..{levels - 1} (mu-law codes), got "
            f"dtype {q.dtype}; encode audio with npar.data.audio.mu_law_encode"
        )
    if q.ndim != 2 or q.shape[1] < 1:
        raise ValueError(f"codes must have shape (N, T) with T >= 1, got {q.shape}")
    if q.size and (q.min() < 0 or q.max() >= levels):
        raise ValueError(
            f"codes must lie in 0..{levels - 1}, got values from {q.min()} to "
            f"{q.max()}"
        )
    return np.ascontiguousarray(q, dtype=np.int64)


def onehot_conv1d_forward(q, w, b, delay=1):
    """Causal convolution of delayed one-hot codes (see the module docstring).

    Args:
        q: ``(N, T)`` integer codes in ``0 .. V-1``.
        w: ``(C_out, V, K)`` float32 or float64.
        b: ``(C_out,)``, same dtype.
        delay: ``S >= 0``; 1 makes ``y[t]`` depend on ``q[< t]`` only.

    Returns:
        y: ``(C_out, N, T)`` (channels first, the models' inside layout),
        and the cache for :func:`onehot_conv1d_backward`.
    """
    check_float_array("w", w, ndim=3)
    check_float_array("b", b, ndim=1)
    if b.dtype != w.dtype or b.shape != (w.shape[0],):
        raise ValueError(
            f"b must be a {w.dtype} array of shape ({w.shape[0]},), got "
            f"{b.dtype} {b.shape}"
        )
    delay = check_nonnegative_int("delay", delay)
    q = check_codes(q, w.shape[1])
    y = np.empty((w.shape[0],) + q.shape, dtype=w.dtype)
    _lookup_forward(q, np.ascontiguousarray(w), b, delay, y)
    return y, (q, w.shape, w.dtype, delay)


def onehot_conv1d_backward(dy, cache):
    """Gradients ``(dw (C_out, V, K), db (C_out,))`` of
    :func:`onehot_conv1d_forward`, given ``dy`` ``(C_out, N, T)``."""
    q, w_shape, dtype, delay = cache
    expected = (w_shape[0],) + q.shape
    if not isinstance(dy, np.ndarray) or dy.shape != expected:
        raise ValueError(
            f"dy must be an array of shape {expected}, got "
            f"{getattr(dy, 'shape', type(dy).__name__)}"
        )
    dw = np.empty(w_shape, dtype=dtype)
    db = np.empty(w_shape[0], dtype=dtype)
    _lookup_backward(q, np.ascontiguousarray(dy, dtype=dtype), delay, dw, db)
    return dw, db


def onehot_delayed(q, levels, delay=1, dtype=np.float64):
    """``x[n, v, t] = [q[n, t - delay] = v]`` ``(N, V, T)``, zero for
    ``t < delay``: the one-hot input that the look-ups stand for."""
    n_batch, length = q.shape
    x = np.zeros((n_batch, levels, length), dtype=dtype)
    if delay >= length:
        return x
    n_index, t_index = np.meshgrid(np.arange(n_batch), np.arange(length - delay),
                                   indexing="ij")
    x[n_index, q[:, :length - delay], t_index + delay] = 1.0
    return x


def onehot_conv1d_reference(q, w, b, delay=1):
    """Plain NumPy twin: the one-hot matrix, then the reference convolution.

    Returns ``y`` ``(N, C_out, T)`` (the ``"NCT"`` layout)."""
    x = onehot_delayed(q, w.shape[1], delay, w.dtype)
    return conv1d_reference(x, w, b)


def onehot_conv1d_input_gradient(dy, w, delay=1):
    """Gradient with respect to the one-hot input ``x`` (which the codes
    have none of, being integers): the adjoint of the delayed convolution,

    .. math::  \\partial L/\\partial x_{n v s} = \\sum_{o, k} w_{o v k}\\,
               \\delta_{n, o,\\, s + S + (K - 1 - k)},

    used to read off which past codes a logit depends on.

    Args:
        dy: ``(C_out, N, T)``; w: ``(C_out, V, K)``; delay: ``S``.

    Returns:
        dx: ``(N, V, T)``.
    """
    c_out, levels, k_size = w.shape
    _, n_batch, length = dy.shape
    dx = np.zeros((n_batch, levels, length), dtype=dy.dtype)
    for k in range(k_size):
        shift = delay + k_size - 1 - k
        if shift < length:
            dx[:, :, :length - shift] += np.einsum("ov,ont->nvt", w[:, :, k],
                                                   dy[:, :, shift:])
    return dx

"""Dense (fully connected) map over rows, and the layout changes around it.

For rows ``x`` ``(M, C_in)``, weights ``w`` ``(C_out, C_in)``, an optional
mask ``m`` and bias ``b``:

.. math::  y_{r o} = b_o + \\sum_c m_{o c} w_{o c} x_{r c}

.. math::  \\partial L/\\partial x = \\delta\\, (m \\odot w),\\quad
           \\partial L/\\partial w = m \\odot (\\delta^\\top x),\\quad
           \\partial L/\\partial b = \\textstyle\\sum_r \\delta_r .

A 1x1 convolution is this map applied at every pixel: :func:`to_rows` turns
``(N, C, H, W)`` into ``(N H W, C)`` so that the output comes out with the
channel axis last, the layout that softmax over V levels wants.
"""

import numba
import numpy as np

from npar.ops._checks import check_float_array, check_same_dtype


@numba.njit(cache=True)
def _to_rows_kernel(x, rows):
    n_batch, channels, m = x.shape
    for n in range(n_batch):
        for c in range(channels):
            for k in range(m):
                rows[n * m + k, c] = x[n, c, k]


@numba.njit(cache=True)
def _from_rows_kernel(rows, x):
    n_batch, channels, m = x.shape
    for n in range(n_batch):
        for c in range(channels):
            for k in range(m):
                x[n, c, k] = rows[n * m + k, c]


def to_rows(x):
    """``(N, C, *S)`` -> ``(N * prod(S), C)``: one row per position."""
    x = np.ascontiguousarray(x)
    n_batch, channels = x.shape[:2]
    rows = np.empty((x.size // channels, channels), dtype=x.dtype)
    _to_rows_kernel(x.reshape(n_batch, channels, -1), rows)
    return rows


def from_rows(rows, shape):
    """Inverse of :func:`to_rows`: ``(N * prod(S), C)`` -> ``shape = (N, C, *S)``."""
    rows = np.ascontiguousarray(rows)
    x = np.empty(shape, dtype=rows.dtype)
    _from_rows_kernel(rows, x.reshape(shape[0], shape[1], -1))
    return x


def dense_forward(x, w, b=None, mask=None):
    """``y = x (m * w)^T + b``.

    Args:
        x: ``(M, C_in)``; w: ``(C_out, C_in)``; b: ``(C_out,)`` or None;
        mask: ``(C_out, C_in)`` or None.

    Returns:
        y: ``(M, C_out)`` and the cache for :func:`dense_backward`.
    """
    check_float_array("x", x, ndim=2)
    check_float_array("w", w, ndim=2)
    check_same_dtype(x=x, w=w, b=b)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} columns but w {w.shape} expects C_in = {w.shape[1]}"
        )
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    if mask is not None and np.shape(mask) != w.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from w shape {w.shape}")
    w_eff = w if mask is None else w * mask.astype(w.dtype, copy=False)
    y = x @ w_eff.T
    if b is not None:
        y += b
    return y, (x, w_eff, mask, b is not None)


def dense_backward(dy, cache):
    """Gradients ``(dx (M, C_in), dw (C_out, C_in), db (C_out,) or None)``."""
    x, w_eff, mask, has_bias = cache
    dx = dy @ w_eff
    dw = dy.T @ x
    if mask is not None:
        dw *= mask
    db = dy.sum(axis=0) if has_bias else None
    return dx, dw, db


def dense_reference(x, w, b=None, mask=None):
    """Plain NumPy twin: ``y_ro = b_o + sum_c m_oc w_oc x_rc``."""
    w_eff = w if mask is None else w * mask
    y = np.einsum("oc,rc->ro", w_eff, x)
    return y if b is None else y + b

"""1-D causal dilated cross-correlation (WaveNet, van den Oord et al. 2016c,
sec. 2.1).

With input ``x`` ``(N, C_in, T)``, weights ``w`` ``(C_out, C_in, K)``, bias
``b`` ``(C_out,)`` and dilation ``D``:

.. math::  y_{n o t} = b_o + \\sum_{c, k} w_{o c k}\\,
           x_{n, c,\\, t - D (K - 1 - k)},

with ``x`` taken as zero at negative time. The output has the input's
length ``T``; tap ``k = K - 1`` reads the present sample ``t``, tap ``k = 0``
reads ``t - D (K - 1)``, and nothing reads the future, so ``y[t]`` depends
on ``x[t - D (K - 1) .. t]`` only.

The gradients, with ``delta = dL/dy``, are

.. math::  \\partial L/\\partial b_o = \\sum_{n t} \\delta_{n o t},\\quad
           \\partial L/\\partial w_{o c k} = \\sum_{n t} \\delta_{n o t}\\,
           x_{n, c,\\, t - D (K - 1 - k)},

.. math::  \\partial L/\\partial x_{n c s} = \\sum_{o, k}
           w_{o c k}\\, \\delta_{n, o,\\, s + D (K - 1 - k)},

the last sum taken over the ``k`` with ``s + D (K - 1 - k) < T``.

The compiled version gathers the shifted copies into a matrix of shape
``(C_in K, N T)`` (Numba) and does the sum over ``(c, k)`` as one matrix
product (BLAS); :func:`conv1d_reference` and
:func:`conv1d_backward_reference` are the literal sums over taps.
"""

import numba
import numpy as np

from npar.ops._checks import (
    check_float_array,
    check_positive_int,
    check_same_dtype,
)
from npar.ops.conv2d import _add_bias_rows, _sum_rows, swap_batch_channels

LAYOUTS = ("NCT", "CNT")


@numba.njit(cache=True)
def _im2col_causal(x, k_size, dilation, cols):
    # cols[c*K + k, n, t] = x[c, n, t - D (K-1-k)], zero at negative time,
    # with x in (C, N, T) layout.
    c_in, n_batch, length = x.shape
    for c in range(c_in):
        for k in range(k_size):
            row = c * k_size + k
            shift = dilation * (k_size - 1 - k)
            start = min(shift, length)
            for n in range(n_batch):
                for t in range(start):
                    cols[row, n, t] = 0.0
                for t in range(start, length):
                    cols[row, n, t] = x[c, n, t - shift]


@numba.njit(cache=True)
def _col2im_causal(dcols, k_size, dilation, dx):
    # The adjoint of _im2col_causal: dx[c, n, s] = sum_k
    # dcols[c*K + k, n, s + D (K-1-k)] over the taps that stay inside T.
    c_in, n_batch, length = dx.shape
    for c in range(c_in):
        for n in range(n_batch):
            for s in range(length):
                dx[c, n, s] = 0.0
            for k in range(k_size):
                row = c * k_size + k
                shift = dilation * (k_size - 1 - k)
                for s in range(length - shift):
                    dx[c, n, s] += dcols[row, n, s + shift]


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCT' or 'CNT', got {layout!r}")


def _check_arguments(x, w, b, dilation, layout):
    _check_layout(layout)
    check_float_array("x", x, ndim=3)
    check_float_array("w", w, ndim=3)
    if b is not None:
        check_float_array("b", b, ndim=1)
        if b.shape[0] != w.shape[0]:
            raise ValueError(
                f"b must have shape ({w.shape[0]},) to match w {w.shape}, "
                f"got {b.shape}"
            )
    check_same_dtype(x=x, w=w, b=b)
    dilation = check_positive_int("dilation", dilation)
    c_in = x.shape[1] if layout == "NCT" else x.shape[0]
    if c_in != w.shape[1]:
        raise ValueError(
            f"x has {c_in} channels (shape {x.shape}, layout {layout}) but w "
            f"{w.shape} expects C_in = {w.shape[1]}"
        )
    if w.shape[2] < 1:
        raise ValueError(f"w must have a kernel size K >= 1, got shape {w.shape}")
    if x.shape[2] < 1:
        raise ValueError(f"x must have at least one time step, got shape {x.shape}")
    return dilation


def conv1d_forward(x, w, b=None, dilation=1, layout="NCT"):
    """Causal dilated 1-D cross-correlation (see the module docstring).

    Args:
        x: ``(N, C_in, T)`` float32 or float64; ``(C_in, N, T)`` when
            ``layout="CNT"``, the channels-first layout the models use
            inside so that the sum over taps is one matrix product with no
            transposes.
        w: ``(C_out, C_in, K)``, same dtype, any ``K >= 1``.
        b: ``(C_out,)`` or None.
        dilation: ``D >= 1`` (1 is a dense kernel).
        layout: ``"NCT"`` or ``"CNT"``, for both ``x`` and ``y``.

    Returns:
        y: ``(N, C_out, T)`` (or ``(C_out, N, T)``), and the cache for
        :func:`conv1d_backward`.
    """
    dilation = _check_arguments(x, w, b, dilation, layout)
    x_cn = swap_batch_channels(x) if layout == "NCT" else np.ascontiguousarray(x)
    c_in, n_batch, length = x_cn.shape
    c_out, _, k_size = w.shape

    if k_size == 1:
        cols = x_cn.reshape(c_in, -1)
    else:
        cols = np.empty((c_in * k_size, n_batch, length), dtype=x.dtype)
        _im2col_causal(x_cn, k_size, dilation, cols)
        cols = cols.reshape(cols.shape[0], -1)
    y = w.reshape(c_out, -1) @ cols
    if b is not None:
        _add_bias_rows(y, b)

    y = y.reshape(c_out, n_batch, length)
    if layout == "NCT":
        y = swap_batch_channels(y)
    cache = (cols, w, b is not None, (c_in, n_batch, length), dilation, layout)
    return y, cache


def conv1d_backward(dy, cache, need_dx=True):
    """Gradients of :func:`conv1d_forward` (see the module docstring).

    Args:
        dy: ``(N, C_out, T)``, or ``(C_out, N, T)`` in the ``"CNT"`` layout.
        cache: from the forward pass.
        need_dx: False skips ``dx`` (for a first layer fed by data).

    Returns:
        dx ``(N, C_in, T)`` (layout as in the forward; None when ``need_dx``
        is False), dw ``(C_out, C_in, K)``, db ``(C_out,)`` or None when the
        forward had no bias.
    """
    cols, w, has_bias, (c_in, n_batch, length), dilation, layout = cache
    c_out, _, k_size = w.shape
    expected = ((n_batch, c_out, length) if layout == "NCT"
                else (c_out, n_batch, length))
    if not isinstance(dy, np.ndarray) or dy.shape != expected:
        raise ValueError(
            f"dy must be an array of shape {expected}, got "
            f"{getattr(dy, 'shape', type(dy).__name__)}"
        )
    dy = dy.astype(w.dtype, copy=False)
    dy_cn = swap_batch_channels(dy) if layout == "NCT" else np.ascontiguousarray(dy)
    dy_cn = dy_cn.reshape(c_out, -1)

    dw = (dy_cn @ cols.T).reshape(w.shape)
    db = None
    if has_bias:
        db = np.empty(c_out, dtype=w.dtype)
        _sum_rows(dy_cn, db)
    if not need_dx:
        return None, dw, db

    dcols = w.reshape(c_out, -1).T @ dy_cn
    if k_size == 1:
        dx = dcols.reshape(c_in, n_batch, length)
    else:
        dx = np.empty((c_in, n_batch, length), dtype=w.dtype)
        _col2im_causal(dcols.reshape(-1, n_batch, length), k_size, dilation, dx)
    if layout == "NCT":
        dx = swap_batch_channels(dx)
    return dx, dw, db


def causal_shift(x, shift):
    """``x[..., t - shift]`` with zeros at negative time, any leading axes."""
    y = np.zeros_like(x)
    if shift < x.shape[-1]:
        y[..., shift:] = x[..., :x.shape[-1] - shift]
    return y


def conv1d_reference(x, w, b=None, dilation=1):
    """Plain NumPy twin of :func:`conv1d_forward` (``"NCT"`` layout): a sum
    over the ``K`` taps of shifted copies of ``x``.

    Args:
        x: ``(N, C_in, T)``; w: ``(C_out, C_in, K)``; b: ``(C_out,)`` or None.

    Returns:
        y: ``(N, C_out, T)``.
    """
    dilation = _check_arguments(x, w, b, dilation, "NCT")
    k_size = w.shape[2]
    y = np.zeros((x.shape[0], w.shape[0], x.shape[2]), dtype=np.result_type(x, w))
    for k in range(k_size):
        shifted = causal_shift(x, dilation * (k_size - 1 - k))
        y += np.einsum("oc,nct->not", w[:, :, k], shifted)
    if b is not None:
        y += b[None, :, None]
    return y


def conv1d_backward_reference(x, w, dy, dilation=1):
    """Plain NumPy twin of :func:`conv1d_backward` (``"NCT"`` layout),
    written straight from the gradient equations of the module docstring.

    Args:
        x: ``(N, C_in, T)``; w: ``(C_out, C_in, K)``; dy: ``(N, C_out, T)``.

    Returns:
        dx ``(N, C_in, T)``, dw ``(C_out, C_in, K)``, db ``(C_out,)``.
    """
    dilation = check_positive_int("dilation", dilation)
    k_size = w.shape[2]
    length = x.shape[2]
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dw = np.zeros(w.shape, dtype=dy.dtype)
    for k in range(k_size):
        shift = dilation * (k_size - 1 - k)
        # dw[o, c, k] = sum_{n, t} dy[n, o, t] x[n, c, t - shift]
        dw[:, :, k] = np.einsum("not,nct->oc", dy, causal_shift(x, shift))
        # dx[n, c, s] += sum_o w[o, c, k] dy[n, o, s + shift], s + shift < T
        if shift < length:
            dx[:, :, :length - shift] += np.einsum(
                "oc,not->nct", w[:, :, k], dy[:, :, shift:])
    return dx, dw, dy.sum(axis=(0, 2))

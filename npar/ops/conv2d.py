"""2-D cross-correlation with dilation, asymmetric zero padding and a mask.

With input ``x`` ``(N, C_in, H, W)``, weights ``w`` ``(C_out, C_in, K_h, K_w)``,
bias ``b`` ``(C_out,)``, an optional mask ``m`` of the weights' shape,
padding ``(P_t, P_b, P_l, P_r)`` and dilation ``(D_h, D_w)``:

.. math::  y_{n o i j} = b_o + \\sum_{c, p, q} m_{o c p q}\\, w_{o c p q}\\,
           \\tilde x_{n, c,\\, i + D_h p,\\, j + D_w q}

where ``x~`` is ``x`` padded with ``P_t`` zero rows on top, ``P_b`` below,
``P_l`` zero columns on the left and ``P_r`` on the right. The output is
``(N, C_out, H_out, W_out)`` with ``H_out = H + P_t + P_b - D_h (K_h - 1)``
and ``W_out = W + P_l + P_r - D_w (K_w - 1)``.

The gradients, with ``w' = m * w`` the effective weights, are

.. math::  \\partial L/\\partial b_o = \\sum_{n i j} \\delta_{n o i j},\\quad
           \\partial L/\\partial w_{o c p q} = m_{o c p q} \\sum_{n i j}
           \\delta_{n o i j}\\, \\tilde x_{n, c,\\, i + D_h p,\\, j + D_w q},

.. math::  \\partial L/\\partial \\tilde x_{n, c,\\, i + D_h p,\\, j + D_w q}
           \\mathrel{+}= \\sum_o w'_{o c p q}\\, \\delta_{n o i j},

with ``delta = dL/dy``. The mask multiplies the weight gradient too, so a
masked weight receives exactly zero gradient and never drifts from zero.

The compiled version gathers the patches into a matrix of shape
``(C_in K_h K_w, N H_out W_out)`` (Numba) and does the sum over
``(c, p, q)`` as one matrix product (BLAS); the reference version
:func:`conv2d_reference` is the literal sum over taps.
"""

import numba
import numpy as np

from npar.ops._checks import (
    check_float_array,
    check_nonnegative_int,
    check_positive_int,
    check_same_dtype,
)


@numba.njit(cache=True)
def _im2col(x, k_h, k_w, pad_top, pad_left, d_h, d_w, h_out, w_out, cols):
    # cols[(c*K_h + p)*K_w + q, n, i, j] = x_pad[c, n, i + D_h p, j + D_w q]
    # with x in (C, N, H, W) layout.
    c_in, n_batch, height, width = x.shape
    n_rows = c_in * k_h * k_w
    for row in range(n_rows):
        c = row // (k_h * k_w)
        p = (row // k_w) % k_h
        q = row % k_w
        for n in range(n_batch):
            for i in range(h_out):
                src_i = i + d_h * p - pad_top
                if src_i < 0 or src_i >= height:
                    for j in range(w_out):
                        cols[row, n, i, j] = 0.0
                    continue
                for j in range(w_out):
                    src_j = j + d_w * q - pad_left
                    if src_j < 0 or src_j >= width:
                        cols[row, n, i, j] = 0.0
                    else:
                        cols[row, n, i, j] = x[c, n, src_i, src_j]


@numba.njit(cache=True)
def _col2im(dcols, k_h, k_w, pad_top, pad_left, d_h, d_w, dx):
    # The adjoint of _im2col: scatter-add every patch entry back to its pixel.
    c_in, n_batch, height, width = dx.shape
    h_out, w_out = dcols.shape[2], dcols.shape[3]
    for c in range(c_in):
        for n in range(n_batch):
            for i0 in range(height):
                for j0 in range(width):
                    dx[c, n, i0, j0] = 0.0
            for p in range(k_h):
                for q in range(k_w):
                    row = (c * k_h + p) * k_w + q
                    for i in range(h_out):
                        src_i = i + d_h * p - pad_top
                        if src_i < 0 or src_i >= height:
                            continue
                        for j in range(w_out):
                            src_j = j + d_w * q - pad_left
                            if 0 <= src_j < width:
                                dx[c, n, src_i, src_j] += dcols[row, n, i, j]


@numba.njit(cache=True)
def _add_bias_rows(y, b):
    # y[o, :] += b[o] on a (C_out, M) matrix.
    for o in range(y.shape[0]):
        bias = b[o]
        for k in range(y.shape[1]):
            y[o, k] += bias


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _sum_rows(dy, out):
    # out[o] = sum_k dy[o, k]
    for o in range(dy.shape[0]):
        s = 0.0
        for k in range(dy.shape[1]):
            s += dy[o, k]
        out[o] = s


def swap_batch_channels(x):
    """``(N, C, ...)`` <-> ``(C, N, ...)`` as a contiguous copy."""
    return np.ascontiguousarray(np.swapaxes(x, 0, 1))


def _pair(name, value):
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return tuple(check_positive_int(name, v) for v in value)


def _padding(value):
    if isinstance(value, (int, np.integer)):
        value = (value,) * 4
    if not isinstance(value, (tuple, list)):
        raise TypeError(
            "padding must be an int, (P_h, P_w) or (top, bottom, left, right), "
            f"got {value!r}"
        )
    value = tuple(value)
    if len(value) == 2:
        value = (value[0], value[0], value[1], value[1])
    if len(value) != 4:
        raise ValueError(
            "padding must be an int, (P_h, P_w) or (top, bottom, left, right), "
            f"got {value!r}"
        )
    return tuple(check_nonnegative_int("padding", v) for v in value)


def conv2d_output_shape(x_shape, w_shape, padding=0, dilation=1):
    """``(N, C_out, H_out, W_out)`` of :func:`conv2d_forward`; errors if empty."""
    n_batch, c_in, height, width = x_shape
    c_out, c_in_w, k_h, k_w = w_shape
    pad_top, pad_bottom, pad_left, pad_right = _padding(padding)
    d_h, d_w = _pair("dilation", dilation)
    if c_in != c_in_w:
        raise ValueError(
            f"x has {c_in} channels but w expects C_in = {c_in_w} (w shape "
            f"{tuple(w_shape)}, x shape {tuple(x_shape)})"
        )
    h_out = height + pad_top + pad_bottom - d_h * (k_h - 1)
    w_out = width + pad_left + pad_right - d_w * (k_w - 1)
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"a {k_h}x{k_w} kernel with dilation {(d_h, d_w)} does not fit a "
            f"{height}x{width} input padded by {padding!r}: output would be "
            f"{h_out}x{w_out}"
        )
    return n_batch, c_out, h_out, w_out


def conv2d_forward(x, w, b=None, padding=0, dilation=1, mask=None,
                   layout="NCHW"):
    """Masked, dilated 2-D cross-correlation (see the module docstring).

    Args:
        x: ``(N, C_in, H, W)`` float32 or float64; ``(C_in, N, H, W)`` when
            ``layout="CNHW"``, the channels-first layout the models use
            inside so that the sum over taps is one matrix product with no
            transposes.
        w: ``(C_out, C_in, K_h, K_w)``, same dtype.
        b: ``(C_out,)`` or None.
        padding: int, ``(P_h, P_w)`` or ``(P_t, P_b, P_l, P_r)``.
        dilation: int or ``(D_h, D_w)``, each >= 1 (1 is a dense kernel).
        mask: ``(C_out, C_in, K_h, K_w)`` of zeros and ones, or None.
        layout: ``"NCHW"`` or ``"CNHW"``, for both ``x`` and ``y``.

    Returns:
        y: ``(N, C_out, H_out, W_out)`` (or ``(C_out, N, H_out, W_out)``), and
        the cache for :func:`conv2d_backward`.
    """
    if layout not in ("NCHW", "CNHW"):
        raise ValueError(f"layout must be 'NCHW' or 'CNHW', got {layout!r}")
    check_float_array("x", x, ndim=4)
    check_float_array("w", w, ndim=4)
    if b is not None:
        check_float_array("b", b, ndim=1)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    check_same_dtype(x=x, w=w, b=b)
    if mask is not None and mask.shape != w.shape:
        raise ValueError(f"mask shape {mask.shape} differs from w shape {w.shape}")
    x_cn = swap_batch_channels(x) if layout == "NCHW" else np.ascontiguousarray(x)
    pad = _padding(padding)
    d_h, d_w = _pair("dilation", dilation)
    nchw_shape = (x_cn.shape[1], x_cn.shape[0]) + x_cn.shape[2:]
    n_batch, c_out, h_out, w_out = conv2d_output_shape(nchw_shape, w.shape, pad,
                                                       (d_h, d_w))
    _, c_in, k_h, k_w = w.shape

    w_eff = w if mask is None else w * mask.astype(w.dtype, copy=False)
    if (k_h, k_w) == (1, 1) and pad == (0, 0, 0, 0):
        cols = x_cn.reshape(c_in, -1)
    else:
        cols = np.empty((c_in * k_h * k_w, n_batch, h_out, w_out), dtype=x.dtype)
        _im2col(x_cn, k_h, k_w, pad[0], pad[2], d_h, d_w, h_out, w_out, cols)
        cols = cols.reshape(cols.shape[0], -1)
    y = w_eff.reshape(c_out, -1) @ cols
    if b is not None:
        _add_bias_rows(y, b)

    y = y.reshape(c_out, n_batch, h_out, w_out)
    if layout == "NCHW":
        y = swap_batch_channels(y)
    geometry = (nchw_shape, (h_out, w_out), pad, (d_h, d_w), layout)
    cache = (cols, w_eff, mask, b is not None, geometry)
    return y, cache


def conv2d_backward(dy, cache, need_dx=True):
    """Gradients of :func:`conv2d_forward` (see the module docstring).

    Args:
        dy: ``(N, C_out, H_out, W_out)``, or ``(C_out, N, H_out, W_out)`` in
            the ``"CNHW"`` layout.
        cache: from the forward pass.
        need_dx: False skips ``dx`` (for a first layer fed by data).

    Returns:
        dx ``(N, C_in, H, W)`` (layout as in the forward; None when
        ``need_dx`` is False), dw ``(C_out, C_in, K_h, K_w)`` (zero where the
        mask is zero), db ``(C_out,)`` or None when the forward had no bias.
    """
    cols, w_eff, mask, has_bias, geometry = cache
    (n_batch, c_in, height, width), (h_out, w_out), pad, (d_h, d_w), layout = geometry
    c_out, _, k_h, k_w = w_eff.shape
    expected = ((n_batch, c_out, h_out, w_out) if layout == "NCHW"
                else (c_out, n_batch, h_out, w_out))
    if dy.shape != expected:
        raise ValueError(f"dy must have shape {expected}, got {dy.shape}")
    dy = dy.astype(w_eff.dtype, copy=False)
    dy_cn = swap_batch_channels(dy) if layout == "NCHW" else np.ascontiguousarray(dy)
    dy_cn = dy_cn.reshape(c_out, -1)

    dw = (dy_cn @ cols.T).reshape(w_eff.shape)
    if mask is not None:
        dw *= mask
    db = None
    if has_bias:
        db = np.empty(c_out, dtype=dy.dtype)
        _sum_rows(dy_cn, db)
    if not need_dx:
        return None, dw, db

    dcols = w_eff.reshape(c_out, -1).T @ dy_cn
    if (k_h, k_w) == (1, 1) and pad == (0, 0, 0, 0):
        dx = dcols.reshape(c_in, n_batch, height, width)
    else:
        dx = np.empty((c_in, n_batch, height, width), dtype=dy.dtype)
        _col2im(dcols.reshape(-1, n_batch, h_out, w_out), k_h, k_w, pad[0],
                pad[2], d_h, d_w, dx)
    if layout == "NCHW":
        dx = swap_batch_channels(dx)
    return dx, dw, db


def conv2d_reference(x, w, b=None, padding=0, dilation=1, mask=None):
    """Plain NumPy twin of :func:`conv2d_forward`: a sum over kernel taps."""
    pad_top, pad_bottom, pad_left, pad_right = _padding(padding)
    d_h, d_w = _pair("dilation", dilation)
    _, c_out, h_out, w_out = conv2d_output_shape(x.shape, w.shape, padding, dilation)
    w_eff = w if mask is None else w * mask
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))

    y = np.zeros((x.shape[0], c_out, h_out, w_out), dtype=np.result_type(x, w))
    for p in range(w.shape[2]):
        for q in range(w.shape[3]):
            window = x_pad[:, :, d_h * p:d_h * p + h_out, d_w * q:d_w * q + w_out]
            y += np.einsum("oc,ncij->noij", w_eff[:, :, p, q], window)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_backward_reference(x, w, dy, padding=0, dilation=1, mask=None):
    """Plain NumPy twin of :func:`conv2d_backward`: returns ``(dx, dw, db)``."""
    pad_top, pad_bottom, pad_left, pad_right = _padding(padding)
    d_h, d_w = _pair("dilation", dilation)
    h_out, w_out = dy.shape[2], dy.shape[3]
    w_eff = w if mask is None else w * mask
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))

    dx_pad = np.zeros_like(x_pad, dtype=dy.dtype)
    dw = np.zeros_like(w, dtype=dy.dtype)
    for p in range(w.shape[2]):
        for q in range(w.shape[3]):
            rows = slice(d_h * p, d_h * p + h_out)
            cols = slice(d_w * q, d_w * q + w_out)
            dw[:, :, p, q] = np.einsum("noij,ncij->oc", dy, x_pad[:, :, rows, cols])
            tap = w_eff[:, :, p, q]
            dx_pad[:, :, rows, cols] += np.einsum("oc,noij->ncij", tap, dy)
    if mask is not None:
        dw *= mask
    height, width = x.shape[2], x.shape[3]
    dx = dx_pad[:, :, pad_top:pad_top + height, pad_left:pad_left + width]
    return dx, dw, dy.sum(axis=(0, 2, 3))

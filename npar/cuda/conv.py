"""CUDA convolutions and the dense map, mirroring :mod:`npar.ops.conv2d`,
:mod:`npar.ops.conv1d` and :mod:`npar.ops.dense` on device arrays.

2-D masked dilated cross-correlation (equations in
:mod:`npar.ops.conv2d`), with ``w' = m * w``:

1. ``im2col`` (elementwise, one thread per entry, grid-stride) gathers
   ``cols[(c K_h + p) K_w + q, n, i, j] = x~[c, n, i + D_h p, j + D_w q]``,
   a ``(C_in K_h K_w, N H_out W_out)`` matrix, from ``x`` in the
   ``(C, N, H, W)`` layout (zero where the tap falls in the padding);
2. ``y = w'.reshape(C_out, -1) @ cols + b`` is one tiled matmul
   (:func:`npar.cuda.linalg.matmul`), the bias added in its epilogue;
3. backward: ``dw = m * (dy @ cols^T)`` and ``dcols = w'^T @ dy`` (two
   matmuls), ``db`` a row sum of ``dy``, and ``col2im``, the adjoint of
   step 1, written as a gather: one thread per entry of ``dx`` sums the
   ``dcols`` entries of the taps that read it, in the order ``p, q`` of the
   CPU kernel's scatter. A gather needs no atomics, so the result is the
   same on every run.

A ``1 x 1`` kernel without padding skips ``im2col``: ``cols`` is ``x``.

The 1-D causal dilated convolution of WaveNet (equations in
:mod:`npar.ops.conv1d`) is the same pair of kernels on ``(C, N, 1, T)``
with ``K_h = 1``, ``K_w = K``, dilation ``(1, D)`` and ``D (K - 1)`` zero
columns of padding on the left only: tap ``k`` then reads
``x[t - D (K - 1 - k)]``.
"""

import functools

import numba
import numpy as np
from numba import cuda

from npar.cuda.elementwise import multiply, swap_batch_channels
from npar.cuda.linalg import column_sums, matmul, row_sums
from npar.cuda.runtime import (
    check_device_array,
    empty,
    flat,
    is_device_array,
    launch_plan,
    to_device,
)
from npar.ops.conv2d import _padding, _pair, conv2d_output_shape


@functools.cache
def _kernels(dtype):
    ft = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def im2col(x, k_h, k_w, pad_top, pad_left, d_h, d_w, h_out, w_out, cols):
        # cols flat over (C K_h K_w, N, H_out, W_out); x (C, N, H, W).
        n_batch = x.shape[1]
        height = x.shape[2]
        width = x.shape[3]
        zero = ft(0.0)
        for idx in range(cuda.grid(1), cols.shape[0], cuda.gridsize(1)):
            j = idx % w_out
            rest = idx // w_out
            i = rest % h_out
            rest //= h_out
            n = rest % n_batch
            row = rest // n_batch
            c = row // (k_h * k_w)
            p = (row // k_w) % k_h
            q = row % k_w
            src_i = i + d_h * p - pad_top
            src_j = j + d_w * q - pad_left
            if 0 <= src_i < height and 0 <= src_j < width:
                cols[idx] = x[c, n, src_i, src_j]
            else:
                cols[idx] = zero

    @cuda.jit
    def col2im(dcols, k_h, k_w, pad_top, pad_left, d_h, d_w, dx):
        # dx[c, n, i0, j0] = sum over the taps (p, q) that read pixel
        # (i0, j0) of dcols[(c K_h + p) K_w + q, n, i, j]; dcols is
        # (C K_h K_w, N, H_out, W_out), dx (C, N, H, W).
        n_batch = dx.shape[1]
        height = dx.shape[2]
        width = dx.shape[3]
        h_out = dcols.shape[2]
        w_out = dcols.shape[3]
        n_entries = dx.shape[0] * n_batch * height * width
        for idx in range(cuda.grid(1), n_entries, cuda.gridsize(1)):
            j0 = idx % width
            rest = idx // width
            i0 = rest % height
            rest //= height
            n = rest % n_batch
            c = rest // n_batch
            acc = ft(0.0)
            for p in range(k_h):
                i = i0 + pad_top - d_h * p
                if 0 <= i < h_out:
                    for q in range(k_w):
                        j = j0 + pad_left - d_w * q
                        if 0 <= j < w_out:
                            acc += dcols[(c * k_h + p) * k_w + q, n, i, j]
            dx[c, n, i0, j0] = acc

    return im2col, col2im


def _launch(kernel, n_items, *args):
    plan = launch_plan()
    kernel[plan.blocks(n_items, plan.threads), plan.threads](*args)


def _device_mask(mask, w):
    # Masks may come from the host (layer objects keep NumPy masks).
    if mask is None:
        return None
    if not is_device_array(mask):
        if tuple(mask.shape) != tuple(w.shape):
            raise ValueError(f"mask shape {mask.shape} differs from w shape {w.shape}")
        mask = to_device(np.asarray(mask, dtype=w.dtype))
    check_device_array("mask", mask, dtype=w.dtype)
    if tuple(mask.shape) != tuple(w.shape):
        raise ValueError(f"mask shape {mask.shape} differs from w shape {w.shape}")
    return mask


# ---- the (C, N, H, W) core shared by the 2-D and 1-D convolutions -----------


def _forward_cn(x_cn, w_eff, b, k_hw, pad, dilation, out_hw):
    # x_cn (C_in, N, H, W), w_eff (C_out, C_in K_h K_w) -> y (C_out, N, H_out,
    # W_out) and cols (C_in K_h K_w, N H_out W_out).
    c_in, n_batch, height, width = x_cn.shape
    k_h, k_w = k_hw
    h_out, w_out = out_hw
    if (k_h, k_w) == (1, 1) and pad == (0, 0, 0, 0):
        cols = x_cn.reshape(c_in, n_batch * height * width)
    else:
        cols = empty((c_in * k_h * k_w, n_batch * h_out * w_out), x_cn.dtype)
        im2col = _kernels(np.dtype(x_cn.dtype))[0]
        _launch(im2col, cols.size, x_cn, k_h, k_w, pad[0], pad[2], dilation[0],
                dilation[1], h_out, w_out, flat(cols))
    y = matmul(w_eff, cols, bias=b, bias_axis=0)
    return y.reshape(w_eff.shape[0], n_batch, h_out, w_out), cols


def _backward_cn(dy_cn, cols, w_eff, mask, has_bias, x_shape, k_hw, pad,
                 dilation, need_dx, dw_out, db_out):
    # Returns dx (C_in, N, H, W) or None, dw (C_out, C_in K_h K_w), db or None.
    c_out = w_eff.shape[0]
    c_in, n_batch, height, width = x_shape
    k_h, k_w = k_hw
    dy2 = dy_cn.reshape(c_out, dy_cn.size // c_out)

    dw = matmul(dy2, cols, trans_b=True, out=dw_out)
    if mask is not None:
        multiply(dw, mask, out=dw)
    db = row_sums(dy2, out=db_out) if has_bias else None
    if not need_dx:
        return None, dw, db

    dcols = matmul(w_eff, dy2, trans_a=True)
    if (k_h, k_w) == (1, 1) and pad == (0, 0, 0, 0):
        return dcols.reshape(c_in, n_batch, height, width), dw, db
    dx = empty((c_in, n_batch, height, width), dy_cn.dtype)
    h_out, w_out = dy_cn.shape[2], dy_cn.shape[3]
    col2im = _kernels(np.dtype(dy_cn.dtype))[1]
    _launch(col2im, dx.size, dcols.reshape(dcols.shape[0], n_batch, h_out, w_out),
            k_h, k_w, pad[0], pad[2], dilation[0], dilation[1], dx)
    return dx, dw, db


# ---- 2-D --------------------------------------------------------------------


def conv2d_forward(x, w, b=None, padding=0, dilation=1, mask=None, layout="NCHW"):
    """Masked, dilated 2-D cross-correlation of device arrays (as
    :func:`npar.ops.conv2d.conv2d_forward`).

    Args:
        x: ``(N, C_in, H, W)``, or ``(C_in, N, H, W)`` when ``layout="CNHW"``;
            a float32 or float64 device array.
        w: ``(C_out, C_in, K_h, K_w)`` device array, same dtype.
        b: ``(C_out,)`` device array or None.
        padding: int, ``(P_h, P_w)`` or ``(P_t, P_b, P_l, P_r)``.
        dilation: int or ``(D_h, D_w)``.
        mask: ``(C_out, C_in, K_h, K_w)`` (device, or host: copied) or None.
        layout: ``"NCHW"`` or ``"CNHW"``, for both ``x`` and ``y``.

    Returns:
        y: ``(N, C_out, H_out, W_out)`` (or ``(C_out, N, H_out, W_out)``) and
        the cache for :func:`conv2d_backward`.
    """
    if layout not in ("NCHW", "CNHW"):
        raise ValueError(f"layout must be 'NCHW' or 'CNHW', got {layout!r}")
    check_device_array("x", x, ndim=4)
    check_device_array("w", w, ndim=4, dtype=x.dtype)
    if b is not None:
        check_device_array("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    mask = _device_mask(mask, w)
    pad = _padding(padding)
    d_hw = _pair("dilation", dilation)
    x_cn = swap_batch_channels(x) if layout == "NCHW" else x
    nchw = (x_cn.shape[1], x_cn.shape[0]) + tuple(x_cn.shape[2:])
    _, c_out, h_out, w_out = conv2d_output_shape(nchw, w.shape, pad, d_hw)
    k_hw = tuple(w.shape[2:])

    w_eff = w if mask is None else multiply(w, mask)
    w2 = w_eff.reshape(c_out, w_eff.size // c_out)
    y, cols = _forward_cn(x_cn, w2, b, k_hw, pad, d_hw, (h_out, w_out))
    if layout == "NCHW":
        y = swap_batch_channels(y)
    geometry = (tuple(x_cn.shape), k_hw, pad, d_hw, layout)
    return y, (cols, w_eff, mask, b is not None, geometry)


def conv2d_backward(dy, cache, need_dx=True, dw_out=None, db_out=None):
    """Gradients of :func:`conv2d_forward` on the device.

    Args:
        dy: ``(N, C_out, H_out, W_out)`` (``(C_out, N, ...)`` in ``"CNHW"``).
        cache: from the forward pass.
        need_dx: False skips ``dx``.
        dw_out, db_out: device arrays to write ``dw`` and ``db`` into
            (views of a flat gradient buffer), or None.

    Returns:
        dx (the forward's layout, or None), dw ``(C_out, C_in, K_h, K_w)``
        (zero where the mask is zero), db ``(C_out,)`` or None.
    """
    cols, w_eff, mask, has_bias, (x_shape, k_hw, pad, d_hw, layout) = cache
    check_device_array("dy", dy, ndim=4, dtype=w_eff.dtype)
    c_out = w_eff.shape[0]
    dy_cn = swap_batch_channels(dy) if layout == "NCHW" else dy
    if dy_cn.shape[0] != c_out or dy_cn.shape[1] != x_shape[1]:
        raise ValueError(f"dy shape {dy.shape} does not match the forward pass")
    w2 = w_eff.reshape(c_out, w_eff.size // c_out)
    dw2 = None if dw_out is None else dw_out.reshape(*w2.shape)
    dx, dw, db = _backward_cn(dy_cn, cols, w2, mask, has_bias, x_shape, k_hw, pad,
                              d_hw, need_dx, dw2, db_out)
    if dx is not None and layout == "NCHW":
        dx = swap_batch_channels(dx)
    return dx, dw.reshape(*w_eff.shape), db


# ---- 1-D causal -------------------------------------------------------------


def conv1d_forward(x, w, b=None, dilation=1, layout="NCT"):
    """Causal dilated 1-D cross-correlation of device arrays (as
    :func:`npar.ops.conv1d.conv1d_forward`).

    Args:
        x: ``(N, C_in, T)``, or ``(C_in, N, T)`` when ``layout="CNT"``.
        w: ``(C_out, C_in, K)``, same dtype.
        b: ``(C_out,)`` or None.
        dilation: ``D >= 1``.
        layout: ``"NCT"`` or ``"CNT"``, for both ``x`` and ``y``.

    Returns:
        y: ``(N, C_out, T)`` (or ``(C_out, N, T)``) and the cache for
        :func:`conv1d_backward`.
    """
    if layout not in ("NCT", "CNT"):
        raise ValueError(f"layout must be 'NCT' or 'CNT', got {layout!r}")
    check_device_array("x", x, ndim=3)
    check_device_array("w", w, ndim=3, dtype=x.dtype)
    if b is not None:
        check_device_array("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    dilation = _pair("dilation", dilation)[0]
    x_cn = swap_batch_channels(x) if layout == "NCT" else x
    c_in, n_batch, length = x_cn.shape
    c_out, c_in_w, k_size = w.shape
    if c_in != c_in_w:
        raise ValueError(
            f"x has {c_in} channels (shape {x.shape}, layout {layout}) but w "
            f"{w.shape} expects C_in = {c_in_w}"
        )
    pad = (0, 0, dilation * (k_size - 1), 0)
    x4 = x_cn.reshape(c_in, n_batch, 1, length)
    w2 = w.reshape(c_out, c_in * k_size)
    y, cols = _forward_cn(x4, w2, b, (1, k_size), pad, (1, dilation), (1, length))
    y = y.reshape(c_out, n_batch, length)
    if layout == "NCT":
        y = swap_batch_channels(y)
    geometry = ((c_in, n_batch, 1, length), (1, k_size), pad, (1, dilation), layout)
    return y, (cols, w, b is not None, geometry)


def conv1d_backward(dy, cache, need_dx=True, dw_out=None, db_out=None):
    """Gradients of :func:`conv1d_forward`: ``dx`` (or None), ``dw``
    ``(C_out, C_in, K)``, ``db`` (or None); ``dw_out``/``db_out`` as in
    :func:`conv2d_backward`."""
    cols, w, has_bias, (x_shape, k_hw, pad, d_hw, layout) = cache
    check_device_array("dy", dy, ndim=3, dtype=w.dtype)
    c_out = w.shape[0]
    dy_cn = swap_batch_channels(dy) if layout == "NCT" else dy
    if tuple(dy_cn.shape) != (c_out, x_shape[1], x_shape[3]):
        raise ValueError(f"dy shape {dy.shape} does not match the forward pass")
    dy4 = dy_cn.reshape(c_out, x_shape[1], 1, x_shape[3])
    w2 = w.reshape(c_out, w.size // c_out)
    dw2 = None if dw_out is None else dw_out.reshape(*w2.shape)
    dx, dw, db = _backward_cn(dy4, cols, w2, None, has_bias, x_shape, k_hw, pad,
                              d_hw, need_dx, dw2, db_out)
    if dx is not None:
        dx = dx.reshape(x_shape[0], x_shape[1], x_shape[3])
        if layout == "NCT":
            dx = swap_batch_channels(dx)
    return dx, dw.reshape(*w.shape), db


# ---- dense (1x1 convolution on rows) ----------------------------------------


def dense_forward(x, w, b=None, mask=None, layout="rows"):
    """``y = x (m * w)^T + b`` on the device (as
    :func:`npar.ops.dense.dense_forward`).

    Args:
        x: ``(M, C_in)`` (``layout="rows"``) or ``(C_in, M)``
            (``layout="columns"``: a channels-first feature map, read
            transposed by the matmul with no copy).
        w: ``(C_out, C_in)``; b: ``(C_out,)`` or None; mask: ``(C_out, C_in)``
            or None.

    Returns:
        y: ``(M, C_out)``, and the cache for :func:`dense_backward`.
    """
    if layout not in ("rows", "columns"):
        raise ValueError(f"layout must be 'rows' or 'columns', got {layout!r}")
    check_device_array("x", x, ndim=2)
    check_device_array("w", w, ndim=2, dtype=x.dtype)
    c_in = x.shape[1] if layout == "rows" else x.shape[0]
    if c_in != w.shape[1]:
        raise ValueError(
            f"x {x.shape} (layout {layout}) has {c_in} channels but w {w.shape} "
            f"expects C_in = {w.shape[1]}"
        )
    if b is not None:
        check_device_array("b", b, ndim=1, dtype=x.dtype)
    mask = _device_mask(mask, w)
    w_eff = w if mask is None else multiply(w, mask)
    y = matmul(x, w_eff, trans_a=layout == "columns", trans_b=True, bias=b,
               bias_axis=1)
    return y, (x, w_eff, mask, b is not None, layout)


def dense_backward(dy, cache, need_dx=True, dw_out=None, db_out=None):
    """Gradients ``(dx, dw (C_out, C_in), db (C_out,) or None)``; ``dx`` in
    the forward's layout (None when not ``need_dx``)."""
    x, w_eff, mask, has_bias, layout = cache
    check_device_array("dy", dy, ndim=2, dtype=w_eff.dtype)
    columns = layout == "columns"
    dw = matmul(dy, x, trans_a=True, trans_b=columns, out=dw_out)
    if mask is not None:
        multiply(dw, mask, out=dw)
    db = column_sums(dy, out=db_out) if has_bias else None
    if not need_dx:
        return None, dw, db
    if columns:
        dx = matmul(w_eff, dy, trans_a=True, trans_b=True)
    else:
        dx = matmul(dy, w_eff)
    return dx, dw, db

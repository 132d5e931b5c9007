"""CUDA matrix product and reductions: the kernels under every convolution,
dense map, bias gradient, loss mean and gradient norm.

Matrix product, with ``op(a)`` either ``a`` or its transpose:

.. math::  c_{r p} = \\sum_k \\mathrm{op}(a)_{r k}\\, \\mathrm{op}(b)_{k p}
           \\;[+\\, \\beta_r \\text{ or } \\beta_p],

computed by a tiled kernel: a block of ``tile x tile`` threads owns one
``tile x tile`` tile of ``c``; for each step of ``tile`` along ``k`` it loads
one tile of ``op(a)`` and one of ``op(b)`` into shared memory (each thread one
entry of each, read along the array's contiguous axis so that neighbouring
threads read neighbouring addresses, the transposed operand written
transposed into shared memory, whose rows are padded by one entry against
bank conflicts), waits for the block, and adds ``tile`` products to its
accumulator. The grid is 1-D and strides over the tiles of ``c``.

Reductions: ``row_sums`` (one block per row, a tree in shared memory; the
bias gradient of a convolution in the ``(C, N H W)`` layout),
``column_sums`` (one thread per column; the bias gradient of a dense map on
rows) and ``sum_all`` (one block, float64 accumulator; the loss and the
squared gradient norm). No warp-level operations: the tree uses
``syncthreads`` only, so the simulator runs it as it is.
"""

import functools

import numba
import numpy as np
from numba import cuda

from npar.cuda.runtime import check_device_array, dummy, empty, flat, launch_plan


@functools.cache
def _matmul_kernel(dtype, tile):
    ft = numba.from_dtype(np.dtype(dtype))
    padded = tile + 1  # shared-array shapes must be compile-time constants

    @cuda.jit
    def matmul(a, b, c, trans_a, trans_b, bias, bias_axis):
        # a_tile[r, k] = op(a)[row0 + r, k0 + k], b_tile[k, p] = op(b)[k0 + k,
        # col0 + p]; one extra column against shared-memory bank conflicts.
        a_tile = cuda.shared.array((tile, padded), dtype=ft)
        b_tile = cuda.shared.array((tile, padded), dtype=ft)
        ty = cuda.threadIdx.y
        tx = cuda.threadIdx.x
        m_rows = c.shape[0]
        p_cols = c.shape[1]
        k_inner = a.shape[0] if trans_a else a.shape[1]
        tiles_p = (p_cols + tile - 1) // tile
        n_tiles = ((m_rows + tile - 1) // tile) * tiles_p
        n_steps = (k_inner + tile - 1) // tile
        zero = ft(0.0)

        for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
            row0 = (t // tiles_p) * tile
            col0 = (t % tiles_p) * tile
            acc = zero
            for step in range(n_steps):
                k0 = step * tile
                if trans_a:
                    k = k0 + ty
                    r = row0 + tx
                    a_tile[tx, ty] = a[k, r] if k < k_inner and r < m_rows else zero
                else:
                    r = row0 + ty
                    k = k0 + tx
                    a_tile[ty, tx] = a[r, k] if k < k_inner and r < m_rows else zero
                if trans_b:
                    p = col0 + ty
                    k = k0 + tx
                    b_tile[tx, ty] = b[p, k] if k < k_inner and p < p_cols else zero
                else:
                    k = k0 + ty
                    p = col0 + tx
                    b_tile[ty, tx] = b[k, p] if k < k_inner and p < p_cols else zero
                cuda.syncthreads()
                for kk in range(tile):
                    acc += a_tile[ty, kk] * b_tile[kk, tx]
                cuda.syncthreads()

            row = row0 + ty
            col = col0 + tx
            if row < m_rows and col < p_cols:
                if bias_axis == 0:
                    acc += bias[row]
                elif bias_axis == 1:
                    acc += bias[col]
                c[row, col] = acc

    return matmul


def matmul(a, b, trans_a=False, trans_b=False, bias=None, bias_axis=0, out=None,
           tile=None):
    """``c = op(a) @ op(b) (+ bias)`` on the device (see the module docstring).

    Args:
        a: ``(R, K)``, or ``(K, R)`` when ``trans_a``; a device array.
        b: ``(K, P)``, or ``(P, K)`` when ``trans_b``; same dtype.
        bias: ``(R,)`` added along rows (``bias_axis=0``) or ``(P,)`` along
            columns (``bias_axis=1``), or None.
        out: ``(R, P)`` device array to write, or None for a new one.
        tile: tile side (default: the launch plan's).

    Returns:
        c: ``(R, P)``.
    """
    check_device_array("a", a, ndim=2)
    check_device_array("b", b, ndim=2, dtype=a.dtype)
    m_rows, k_a = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k_b, p_cols = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k_a != k_b:
        raise ValueError(
            f"inner sizes differ: op(a) is {(m_rows, k_a)} (a {a.shape}, "
            f"trans_a={trans_a}), op(b) is {(k_b, p_cols)} (b {b.shape}, "
            f"trans_b={trans_b})"
        )
    if out is None:
        out = empty((m_rows, p_cols), a.dtype)
    check_device_array("out", out, ndim=2, dtype=a.dtype)
    if out.shape != (m_rows, p_cols):
        raise ValueError(f"out must have shape {(m_rows, p_cols)}, got {out.shape}")
    if bias is None:
        bias, bias_axis = dummy(a.dtype), -1
    else:
        check_device_array("bias", bias, ndim=1, dtype=a.dtype)
        expected = (m_rows, p_cols)[bias_axis]
        if bias.shape[0] != expected:
            raise ValueError(
                f"bias along axis {bias_axis} must have {expected} entries, got "
                f"{bias.shape}"
            )
    plan = launch_plan()
    tile = plan.tile if tile is None else tile
    n_tiles = -(-m_rows // tile) * -(-p_cols // tile)
    kernel = _matmul_kernel(np.dtype(a.dtype), tile)
    kernel[plan.blocks(n_tiles, 1), (tile, tile)](
        a, b, out, int(bool(trans_a)), int(bool(trans_b)), bias, int(bias_axis))
    return out


@functools.cache
def _reduction_kernels(dtype, threads):
    ft = numba.from_dtype(np.dtype(dtype))
    f64 = numba.float64

    @cuda.jit(device=True)
    def tree_sum(buf, tid):
        # buf[0] = sum(buf[:threads]); every thread of the block calls it.
        cuda.syncthreads()
        width = threads // 2
        while width > 0:
            if tid < width:
                buf[tid] += buf[tid + width]
            cuda.syncthreads()
            width //= 2

    @cuda.jit
    def row_sums(a, out):
        # out[r] = sum_k a[r, k]; one block per row.
        buf = cuda.shared.array(threads, dtype=ft)
        tid = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, a.shape[0], cuda.gridDim.x):
            s = ft(0.0)
            for k in range(tid, a.shape[1], threads):
                s += a[r, k]
            buf[tid] = s
            tree_sum(buf, tid)
            if tid == 0:
                out[r] = buf[0]
            cuda.syncthreads()

    @cuda.jit
    def column_sums(a, out):
        # out[p] = sum_r a[r, p]; one thread per column.
        for p in range(cuda.grid(1), a.shape[1], cuda.gridsize(1)):
            s = ft(0.0)
            for r in range(a.shape[0]):
                s += a[r, p]
            out[p] = s

    @cuda.jit
    def sum_all(x, out, slot, square):
        # out[slot] = sum_k x[k] (or x[k]^2), float64; one block.
        buf = cuda.shared.array(threads, dtype=f64)
        tid = cuda.threadIdx.x
        s = f64(0.0)
        for k in range(tid, x.shape[0], threads):
            v = f64(x[k])
            s += v * v if square else v
        buf[tid] = s
        tree_sum(buf, tid)
        if tid == 0:
            out[slot] = buf[0]

    return row_sums, column_sums, sum_all


def row_sums(a, out=None):
    """``out[r] = sum_k a[r, k]`` for a device ``(R, L)``; returns ``(R,)``."""
    check_device_array("a", a, ndim=2)
    out = empty((a.shape[0],), a.dtype) if out is None else out
    plan = launch_plan()
    kernel = _reduction_kernels(np.dtype(a.dtype), plan.row_threads)[0]
    kernel[plan.blocks(a.shape[0], 1), plan.row_threads](a, out)
    return out


def column_sums(a, out=None):
    """``out[p] = sum_r a[r, p]`` for a device ``(L, P)``; returns ``(P,)``."""
    check_device_array("a", a, ndim=2)
    out = empty((a.shape[1],), a.dtype) if out is None else out
    plan = launch_plan()
    kernel = _reduction_kernels(np.dtype(a.dtype), plan.row_threads)[1]
    kernel[plan.blocks(a.shape[1], plan.threads), plan.threads](a, out)
    return out


def sum_all(x, out=None, slot=0, square=False):
    """``out[slot] = sum(x)`` (or ``sum(x**2)``) in float64, one block.

    Args:
        x: any C-contiguous device array (float32 or float64).
        out: float64 device array with a ``slot`` entry, or None for a new
            ``(1,)`` one.

    Returns:
        out.
    """
    check_device_array("x", x)
    out = empty((1,), np.float64) if out is None else out
    check_device_array("out", out, ndim=1, dtype=np.float64)
    plan = launch_plan()
    kernel = _reduction_kernels(np.dtype(x.dtype), plan.row_threads)[2]
    kernel[1, plan.row_threads](flat(x), out, int(slot), int(bool(square)))
    return out

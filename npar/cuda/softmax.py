"""CUDA softmax cross-entropy over V levels, mirroring
:mod:`npar.ops.softmax`.

For logits ``z`` ``(M, V)`` and targets ``t`` ``(M,)``:

.. math::  \\ell_m = \\log \\sum_v e^{z_{mv} - \\mu_m} - (z_{m t_m} - \\mu_m),
           \\quad \\mu_m = \\max_v z_{mv},

.. math::  \\partial \\ell_m / \\partial z_{mv} = \\mathrm{softmax}(z_m)_v
           - [v = t_m].

Forward: one block of ``row_threads`` threads per row (grid-stride over
rows). The threads take the row's entries ``v = tid, tid + threads, ...``;
a tree in shared memory gives the maximum, then (in float64, as the CPU
kernel does) the sum of ``exp(z - mu)``; every exponent is at most 0, so
nothing overflows, and the loss never subtracts two large numbers. The
softmax is kept for the backward pass, which is elementwise over ``M V``.
"""

import functools
import math

import numba
import numpy as np
from numba import cuda

from npar.cuda.runtime import (
    check_device_array,
    dummy,
    empty,
    flat,
    is_device_array,
    launch_plan,
    to_device,
)
from npar.ops.softmax import _check


@functools.cache
def _kernels(dtype, threads):
    ft = numba.from_dtype(np.dtype(dtype))
    f64 = numba.float64

    @cuda.jit(device=True)
    def tree_max(buf, tid):
        cuda.syncthreads()
        width = threads // 2
        while width > 0:
            if tid < width and buf[tid + width] > buf[tid]:
                buf[tid] = buf[tid + width]
            cuda.syncthreads()
            width //= 2

    @cuda.jit(device=True)
    def tree_sum(buf, tid):
        cuda.syncthreads()
        width = threads // 2
        while width > 0:
            if tid < width:
                buf[tid] += buf[tid + width]
            cuda.syncthreads()
            width //= 2

    @cuda.jit
    def forward(z, t, prob, nll):
        top = cuda.shared.array(threads, dtype=ft)
        total = cuda.shared.array(threads, dtype=f64)
        tid = cuda.threadIdx.x
        v_levels = z.shape[1]
        for m in range(cuda.blockIdx.x, z.shape[0], cuda.gridDim.x):
            best = z[m, 0]
            for v in range(tid, v_levels, threads):
                if z[m, v] > best:
                    best = z[m, v]
            top[tid] = best
            tree_max(top, tid)
            mu = top[0]

            partial = f64(0.0)
            for v in range(tid, v_levels, threads):
                e = ft(math.exp(z[m, v] - mu))
                prob[m, v] = e
                partial += f64(e)
            total[tid] = partial
            tree_sum(total, tid)
            row_total = total[0]
            if tid == 0:
                target_shift = z[m, t[m]] - mu
                nll[m] = ft(math.log(row_total) - f64(target_shift))
            inv = f64(1.0) / row_total
            for v in range(tid, v_levels, threads):
                prob[m, v] = ft(f64(prob[m, v]) * inv)
            cuda.syncthreads()

    @cuda.jit
    def backward(prob, t, dnll, g_all, use_scalar, dz):
        v_levels = prob.shape[1]
        for idx in range(cuda.grid(1), dz.shape[0], cuda.gridsize(1)):
            m = idx // v_levels
            v = idx - m * v_levels
            g = ft(g_all) if use_scalar else dnll[m]
            d = g * prob[m, v]
            if v == t[m]:
                d -= g
            dz[idx] = d

    return forward, backward


def softmax_cross_entropy_forward(logits, targets):
    """Per-row negative log-likelihood on the device.

    Args:
        logits: ``(M, V)`` float32 or float64 device array.
        targets: ``(M,)`` int64, a device array (trusted to lie in
            ``0..V-1``) or a host array (checked, then copied).

    Returns:
        nll: ``(M,)`` device array in nats, and the cache
        ``(softmax, targets)`` for :func:`softmax_cross_entropy_backward`.
    """
    check_device_array("logits", logits, ndim=2)
    if not is_device_array(targets):
        _check(np.zeros((logits.shape[0], logits.shape[1]), np.float32), targets)
        targets = to_device(targets.astype(np.int64))
    check_device_array("targets", targets, ndim=1, dtype=np.int64)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape ({logits.shape[0]},) to match logits "
            f"{logits.shape}, got {targets.shape}"
        )
    prob = empty(logits.shape, logits.dtype)
    nll = empty((logits.shape[0],), logits.dtype)
    plan = launch_plan()
    forward = _kernels(np.dtype(logits.dtype), plan.row_threads)[0]
    forward[plan.blocks(logits.shape[0], 1), plan.row_threads](
        logits, targets, prob, nll)
    return nll, (prob, targets)


def softmax_cross_entropy_backward(dnll, cache):
    """``dz_mv = dnll_m (softmax(z_m)_v - [v = t_m])`` on the device.

    Args:
        dnll: ``(M,)`` device array, or one number for every row (``1 / M``
            for the mean loss).
        cache: from :func:`softmax_cross_entropy_forward`.

    Returns:
        dlogits: ``(M, V)`` device array.
    """
    prob, targets = cache
    plan = launch_plan()
    backward = _kernels(np.dtype(prob.dtype), plan.row_threads)[1]
    dz = empty(prob.shape, prob.dtype)
    if is_device_array(dnll):
        check_device_array("dnll", dnll, ndim=1, dtype=prob.dtype)
        row_grads, scalar, use_scalar = dnll, 0.0, 0
    else:
        row_grads, scalar, use_scalar = dummy(prob.dtype), float(dnll), 1
    backward[plan.blocks(dz.size, plan.threads), plan.threads](
        prob, targets, row_grads, scalar, use_scalar, flat(dz))
    return dz

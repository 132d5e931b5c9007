"""Softmax cross-entropy over V levels.

For logits ``z`` ``(M, V)`` and targets ``t`` ``(M,)`` the negative
log-likelihood of row ``m`` is

.. math::  \\ell_m = \\log \\sum_v e^{z_{mv}} - z_{m t_m}
           = \\mu_m + \\log \\sum_v e^{z_{mv} - \\mu_m} - z_{m t_m},
           \\quad \\mu_m = \\max_v z_{mv},

computed as ``log sum_v exp(z_mv - mu_m) - (z_{m t_m} - mu_m)``: no
exponent is positive, the sum is at least 1, and no large number is
subtracted from another, so the loss is finite and accurate to the working
precision for any finite logits (all equal, +-1e4, mixed 1e8). Its
gradient is

.. math::  \\partial \\ell_m / \\partial z_{mv} = \\mathrm{softmax}(z_m)_v
           - [v = t_m].
"""

import numba
import numpy as np

from npar.ops._checks import check_float_array


@numba.njit(cache=True)
def _shift_by_row_max(z, t, shifted, mu, target_shift):
    # shifted[m, v] = z[m, v] - mu[m], mu[m] = max_v z[m, v]
    m_rows, v_levels = z.shape
    for m in range(m_rows):
        best = z[m, 0]
        for v in range(1, v_levels):
            if z[m, v] > best:
                best = z[m, v]
        mu[m] = best
        for v in range(v_levels):
            shifted[m, v] = z[m, v] - best
        target_shift[m] = z[m, t[m]] - best


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _normalise_rows(e, target_shift, nll):
    # With e = exp(z - mu): nll = log(sum e) - (z[t] - mu), never the
    # difference of two large numbers; then e becomes softmax(z) in place,
    # kept for the backward pass.
    m_rows, v_levels = e.shape
    for m in range(m_rows):
        total = 0.0
        for v in range(v_levels):
            total += e[m, v]
        nll[m] = np.log(total) - target_shift[m]
        inv = 1.0 / total
        for v in range(v_levels):
            e[m, v] *= inv


@numba.njit(cache=True)
def _ce_backward_kernel(prob, t, dnll, dz):
    m_rows, v_levels = prob.shape
    for m in range(m_rows):
        g = dnll[m]
        for v in range(v_levels):
            dz[m, v] = g * prob[m, v]
        dz[m, t[m]] -= g


def _check(logits, targets):
    check_float_array("logits", logits, ndim=2)
    if not isinstance(targets, np.ndarray) or targets.dtype.kind not in "iu":
        raise TypeError(
            "targets must be an integer numpy.ndarray, got "
            f"{getattr(targets, 'dtype', type(targets).__name__)}"
        )
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"targets must have shape ({logits.shape[0]},) to match logits "
            f"{logits.shape}, got {targets.shape}"
        )
    v_levels = logits.shape[1]
    if targets.size and (targets.min() < 0 or targets.max() >= v_levels):
        raise ValueError(
            f"targets must lie in 0..{v_levels - 1}, got values from "
            f"{targets.min()} to {targets.max()}"
        )
    if not np.all(np.isfinite(logits)):
        raise FloatingPointError("logits contain NaN or inf")


def softmax_cross_entropy_forward(logits, targets):
    """Per-row negative log-likelihood ``l_m = logsumexp(z_m) - z_m[t_m]``.

    Args:
        logits: ``(M, V)`` float32 or float64.
        targets: ``(M,)`` integers in ``0..V-1``.

    Returns:
        nll: ``(M,)`` in nats, same dtype as ``logits``; and the cache for
        :func:`softmax_cross_entropy_backward`.
    """
    _check(logits, targets)
    logits = np.ascontiguousarray(logits)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    m_rows = logits.shape[0]
    mu = np.empty(m_rows, dtype=logits.dtype)
    prob = np.empty_like(logits)
    target_shift = np.empty(m_rows, dtype=logits.dtype)
    _shift_by_row_max(logits, targets, prob, mu, target_shift)
    # Every exponent is <= 0, so exp cannot overflow; NumPy's exp is
    # vectorised, several times faster than Numba's scalar libm call.
    np.exp(prob, out=prob)
    nll = np.empty(m_rows, dtype=logits.dtype)
    _normalise_rows(prob, target_shift, nll)
    return nll, (prob, targets)


def softmax_cross_entropy_backward(dnll, cache):
    """Gradient ``dz_mv = dnll_m * (softmax(z_m)_v - [v = t_m])``.

    Args:
        dnll: ``(M,)`` upstream gradient of each row's loss.
        cache: from :func:`softmax_cross_entropy_forward`.

    Returns:
        dlogits: ``(M, V)``.
    """
    prob, targets = cache
    dnll = np.ascontiguousarray(np.broadcast_to(dnll, prob.shape[:1]),
                                dtype=prob.dtype)
    dz = np.empty_like(prob)
    _ce_backward_kernel(prob, targets, dnll, dz)
    return dz


def softmax_cross_entropy_reference(logits, targets):
    """Plain NumPy twin: ``max + log(sum(exp(z - max))) - z[t]`` per row."""
    mu = logits.max(axis=1, keepdims=True)
    lse = mu[:, 0] + np.log(np.exp(logits - mu).sum(axis=1))
    return lse - logits[np.arange(logits.shape[0]), targets]


def log_softmax(logits, axis=-1):
    """Stable ``log softmax`` along ``axis``: ``z - max - log(sum(exp(z - max)))``.

    Any shape; returns an array of the same shape and dtype.
    """
    mu = np.max(logits, axis=axis, keepdims=True)
    shifted = logits - mu
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))

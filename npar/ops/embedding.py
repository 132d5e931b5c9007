"""Level embedding: each input level ``v`` looked up as a learned vector.

For integer codes ``x`` ``(N, H, W)`` in ``0..V-1`` and a table ``E``
``(V, D)`` the output, channels first, is

.. math::  y_{d n i j} = E_{x_{n i j}, d},

which is a 1x1 convolution of the one-hot input with ``E^T``: the model
can tell level 253 from level 254 with one weight instead of resolving a
difference of 1/127.5 on the scaled input. Its gradient scatters the
upstream gradient back to the rows that were read,

.. math::  \\partial L / \\partial E_{v d} = \\sum_{n i j : x_{n i j} = v}
           \\partial L / \\partial y_{d n i j}.
"""

import numba
import numpy as np

from npar.ops._checks import check_float_array


@numba.njit(cache=True, parallel=True)
def _forward_kernel(codes, table, out):
    n_batch, height, width = codes.shape
    for d in numba.prange(table.shape[1]):
        for n in range(n_batch):
            for i in range(height):
                for j in range(width):
                    out[d, n, i, j] = table[codes[n, i, j], d]


@numba.njit(cache=True, parallel=True)
def _backward_kernel(codes, dy, dtable):
    # One output column d per task: no two tasks write the same entry.
    n_batch, height, width = codes.shape
    for d in numba.prange(dtable.shape[1]):
        for v in range(dtable.shape[0]):
            dtable[v, d] = 0.0
        for n in range(n_batch):
            for i in range(height):
                for j in range(width):
                    dtable[codes[n, i, j], d] += dy[d, n, i, j]


def _check_codes(codes, levels):
    if not isinstance(codes, np.ndarray) or codes.dtype.kind not in "iu":
        raise TypeError(
            "codes must be an integer numpy.ndarray, got "
            f"{getattr(codes, 'dtype', type(codes).__name__)}")
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape (N, H, W), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= levels):
        raise ValueError(
            f"codes must lie in 0..{levels - 1} (the table has {levels} rows), "
            f"got values from {codes.min()} to {codes.max()}")


def embedding_forward(codes, table):
    """Look up every code: ``(N, H, W)`` integers and ``(V, D)`` table ->
    ``(D, N, H, W)`` in the table's dtype; and the cache for
    :func:`embedding_backward`."""
    check_float_array("table", table, ndim=2)
    _check_codes(codes, table.shape[0])
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    table = np.ascontiguousarray(table)
    out = np.empty((table.shape[1],) + codes.shape, dtype=table.dtype)
    _forward_kernel(codes, table, out)
    return out, (codes, table.shape)


def embedding_backward(dy, cache):
    """Gradient of the table ``(V, D)`` from ``dy`` ``(D, N, H, W)``."""
    codes, shape = cache
    check_float_array("dy", dy, ndim=4)
    if dy.shape != (shape[1],) + codes.shape:
        raise ValueError(
            f"dy must have shape {(shape[1],) + codes.shape}, got {dy.shape}")
    dy = np.ascontiguousarray(dy)
    dtable = np.empty(shape, dtype=dy.dtype)
    _backward_kernel(codes, dy, dtable)
    return dtable


def embedding_reference(codes, table):
    """Plain NumPy twin of the forward pass: ``table[codes]`` moved to
    channels first."""
    return np.moveaxis(table[codes], -1, 0)


def embedding_backward_reference(dy, codes, levels):
    """Plain NumPy twin of the backward pass: ``onehot(codes)^T dy``."""
    onehot = np.eye(levels, dtype=dy.dtype)[codes.reshape(-1)]  # (M, V)
    return onehot.T @ dy.reshape(dy.shape[0], -1).T

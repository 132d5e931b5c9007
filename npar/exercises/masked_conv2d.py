"""Exercise masked_conv2d: the backward pass of a masked 2-D convolution.

The forward pass below is the masked convolution of PixelCNN (van den Oord
et al. 2016a, sec. 3.4), written as a sum over the kernel taps. With ``x``
``(N, C_in, H, W)``, weights ``w`` ``(C_out, C_in, K_h, K_w)``, a mask
``m`` of zeros and ones of the weights' shape, bias ``b`` ``(C_out,)`` and
``x_pad`` the input padded with zeros by ``(top, bottom, left, right)``:

    y[n, o, i, j] = b[o] + sum_{c, p, q} m[o, c, p, q] w[o, c, p, q]
                                         x_pad[n, c, i + p, j + q]

Your task: write ``backward(dy, cache)``. Given ``dy = dL/dy``
``(N, C_out, H_out, W_out)``, return ``(dx, dw, db)``: the gradients of L
with respect to ``x``, ``w`` and ``b``, each of the same shape as the
array it belongs to. Masked weights must receive exactly zero gradient,
so that they never drift away from zero during training.

Check your answer with

    npar exercise masked_conv2d --check THIS_FILE

which compares it with float64 centred differences and with the
library's own backward pass, ``npar.ops.conv2d.conv2d_backward``.
"""

import numpy as np


def forward(x, w, b, mask, padding):
    """Masked 2-D cross-correlation; returns ``y`` and the cache.

    Args:
        x: ``(N, C_in, H, W)``; w: ``(C_out, C_in, K_h, K_w)``;
        b: ``(C_out,)``; mask: ``(C_out, C_in, K_h, K_w)``;
        padding: ``(top, bottom, left, right)``.

    Returns:
        y: ``(N, C_out, H_out, W_out)`` with ``H_out = H + top + bottom -
        K_h + 1`` and ``W_out = W + left + right - K_w + 1``; and the cache.
    """
    top, bottom, left, right = padding
    k_h, k_w = w.shape[2], w.shape[3]
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    h_out = x_pad.shape[2] - k_h + 1
    w_out = x_pad.shape[3] - k_w + 1
    w_masked = w * mask

    y = np.zeros((x.shape[0], w.shape[0], h_out, w_out))
    for p in range(k_h):
        for q in range(k_w):
            window = x_pad[:, :, p:p + h_out, q:q + w_out]
            y += np.einsum("oc,ncij->noij", w_masked[:, :, p, q], window)
    y += b[None, :, None, None]

    cache = (x, w, b, mask, padding)
    return y, cache


def backward(dy, cache):
    """Gradients of :func:`forward`: returns ``(dx, dw, db)``."""
    x, w, b, mask, padding = cache
    # --- solution ---
    # The reference solution is the library's own backward pass (read it in
    # npar/ops/conv2d.py): rebuild its cache, then call it.
    from npar.ops.conv2d import conv2d_backward, conv2d_forward

    _, library_cache = conv2d_forward(x, w, b, padding, 1, mask)
    return conv2d_backward(dy, library_cache)
    # --- end of solution ---

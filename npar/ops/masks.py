"""Causal masks for masked convolutions (van den Oord et al. 2016a, sec. 3.4).

A mask ``m`` of shape ``(C_out, C_in, K_h, K_w)`` multiplies the weights so
that the output at pixel ``(i, j)`` reads only pixels that come before it in
raster order. With the kernel's centre tap at ``(c_h, c_w)``, aligned with
the output pixel:

.. math::  m_{o c p q} = \\begin{cases}
    1 & p < c_h \\ \\text{or}\\ (p = c_h \\text{ and } q < c_w) \\\\
    [g(c) < g(o)] & (p, q) = (c_h, c_w),\\ \\text{type A} \\\\
    [g(c) \\le g(o)] & (p, q) = (c_h, c_w),\\ \\text{type B} \\\\
    0 & \\text{otherwise}
  \\end{cases}

where ``g`` assigns each channel to a colour group (R = 0, G = 1, B = 2 for
an RGB image; a single group for a grey image). Type A is for the first
layer, which must not see the pixel it predicts; type B for every later
layer, whose inputs at the centre already exclude it.
"""

import numpy as np

from npar.ops._checks import check_positive_int


def channel_groups(channels, groups, repeats=1):
    """Colour group of each channel: contiguous blocks, ``repeats`` times over.

    ``channel_groups(6, 3)`` is ``[0, 0, 1, 1, 2, 2]``; ``repeats=2`` gives
    the group ids of a gated layer's ``2C`` pre-activation channels, whose
    two halves ``a`` and ``b`` are each split the same way.

    Returns:
        ``(channels * repeats,)`` int64.
    """
    channels = check_positive_int("channels", channels)
    groups = check_positive_int("groups", groups)
    if channels % groups:
        raise ValueError(
            f"channels ({channels}) must be a multiple of the number of colour "
            f"groups ({groups}) so that each group gets the same number"
        )
    one = np.repeat(np.arange(groups), channels // groups)
    return np.tile(one, repeats).astype(np.int64)


def causal_mask(shape, mask_type, out_groups=None, in_groups=None, centre=None):
    """Raster-order causal mask of type ``"A"`` or ``"B"``.

    Args:
        shape: ``(C_out, C_in, K_h, K_w)``.
        mask_type: ``"A"`` (centre excluded within a colour group) or ``"B"``.
        out_groups: ``(C_out,)`` colour group of each output channel; default
            all zero (one group).
        in_groups: ``(C_in,)`` colour group of each input channel.
        centre: ``(c_h, c_w)``, the tap aligned with the output pixel;
            default ``(K_h // 2, K_w // 2)``.

    Returns:
        mask: ``(C_out, C_in, K_h, K_w)`` float64 of zeros and ones.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if len(shape) != 4:
        raise ValueError(f"shape must be (C_out, C_in, K_h, K_w), got {shape!r}")
    c_out, c_in, k_h, k_w = (check_positive_int(n, v) for n, v in
                             zip(("C_out", "C_in", "K_h", "K_w"), shape))
    c_h, c_w = (k_h // 2, k_w // 2) if centre is None else centre
    if not (0 <= c_h < k_h and 0 <= c_w < k_w):
        raise ValueError(f"centre {centre!r} lies outside a {k_h}x{k_w} kernel")
    out_groups = np.zeros(c_out, np.int64) if out_groups is None else out_groups
    in_groups = np.zeros(c_in, np.int64) if in_groups is None else in_groups
    if len(out_groups) != c_out or len(in_groups) != c_in:
        raise ValueError(
            f"out_groups/in_groups must have {c_out}/{c_in} entries, got "
            f"{len(out_groups)}/{len(in_groups)}"
        )

    mask = np.zeros((c_out, c_in, k_h, k_w))
    mask[:, :, :c_h, :] = 1.0
    mask[:, :, c_h, :c_w] = 1.0

    g_out = np.asarray(out_groups)[:, None]
    g_in = np.asarray(in_groups)[None, :]
    allowed = g_in < g_out if mask_type == "A" else g_in <= g_out
    mask[:, :, c_h, c_w] = allowed
    return mask


def centred_padding(k_h, k_w, dilation=(1, 1), centre=None):
    """Padding ``(top, bottom, left, right)`` that aligns the centre tap.

    With it the output pixel ``(i, j)`` sits under tap ``(c_h, c_w)`` and the
    output has the input's size: ``top = D_h c_h``,
    ``bottom = D_h (K_h - 1 - c_h)``, and likewise along the width.
    """
    d_h, d_w = dilation
    c_h, c_w = (k_h // 2, k_w // 2) if centre is None else centre
    return (d_h * c_h, d_h * (k_h - 1 - c_h), d_w * c_w, d_w * (k_w - 1 - c_w))

"""Kernels: each op is a pair of compiled functions (forward, backward) and a
plain NumPy reference written straight from its equation.

Forward functions return ``(y, cache)``; backward functions take
``(dy, cache)`` and return one gradient per differentiable input, in the
order of the forward's arguments.
"""

from npar.ops.activations import (
    gate_backward,
    gate_forward,
    gate_reference,
    relu_backward,
    relu_forward,
    relu_reference,
)
from npar.ops.conv2d import (
    conv2d_backward,
    conv2d_backward_reference,
    conv2d_forward,
    conv2d_output_shape,
    conv2d_reference,
)
from npar.ops.masks import causal_mask, centred_padding, channel_groups
from npar.ops.softmax import (
    log_softmax,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
    softmax_cross_entropy_reference,
)

__all__ = [
    "causal_mask",
    "centred_padding",
    "channel_groups",
    "conv2d_backward",
    "conv2d_backward_reference",
    "conv2d_forward",
    "conv2d_output_shape",
    "conv2d_reference",
    "gate_backward",
    "gate_forward",
    "gate_reference",
    "log_softmax",
    "relu_backward",
    "relu_forward",
    "relu_reference",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_reference",
]

"""Layers built from the ops: parameters live in a plain dict owned by the
model; a layer object holds only its static configuration (shapes, padding,
mask), so ``forward(params, x) -> (y, cache)`` and
``backward(params, cache, dy) -> (dx, grads)`` pair up explicitly and
nothing is remembered between calls.
"""

from npar.nn.layers import Conv2d, Dense, shift_down_backward, shift_down_forward

__all__ = ["Conv2d", "Dense", "shift_down_backward", "shift_down_forward"]

"""Stateless 1-D causal layers for WaveNet: configuration on the object,
parameters in a dict, maps in the channels-first ``(C, N, T)`` layout."""

import numpy as np

from npar.nn.layers import _uniform_fan_in
from npar.ops.conv1d import conv1d_backward, conv1d_forward
from npar.ops.onehot_conv1d import onehot_conv1d_backward, onehot_conv1d_forward


class CausalConv1d:
    """A causal dilated 1-D convolution; parameters ``{name}.w``
    ``(C_out, C_in, K)`` and ``{name}.b`` ``(C_out,)``.

    ``K = 1`` is a 1x1 convolution (a matrix product at every time step).
    """

    def __init__(self, name, c_in, c_out, kernel=1, dilation=1):
        self.name = name
        self.c_in, self.c_out = c_in, c_out
        self.kernel, self.dilation = kernel, dilation
        self.w_name, self.b_name = f"{name}.w", f"{name}.b"

    def init(self, rng, dtype=np.float32):
        """Uniform(+-1/sqrt(C_in K)) weights and bias."""
        fan_in = self.c_in * self.kernel
        shape = (self.c_out, self.c_in, self.kernel)
        return {self.w_name: _uniform_fan_in(rng, shape, fan_in, dtype),
                self.b_name: _uniform_fan_in(rng, (self.c_out,), fan_in, dtype)}

    def forward(self, params, x):
        """``x (C_in, N, T)`` -> ``y (C_out, N, T)``, and the cache."""
        return conv1d_forward(x, params[self.w_name], params[self.b_name],
                              self.dilation, layout="CNT")

    def backward(self, params, cache, dy, need_dx=True):
        """Returns ``dx`` ``(C_in, N, T)`` (None unless ``need_dx``) and
        ``{name.w: dw, name.b: db}``."""
        dx, dw, db = conv1d_backward(dy, cache, need_dx)
        return dx, {self.w_name: dw, self.b_name: db}


class OneHotCausalConv1d:
    """WaveNet's input layer: a causal convolution of the one-hot codes
    delayed by one step, so that its output at ``t`` sees ``q[t - K .. t-1]``
    (see :mod:`npar.ops.onehot_conv1d`). Parameters ``{name}.w``
    ``(C_out, V, K)`` and ``{name}.b``.
    """

    delay = 1

    def __init__(self, name, levels, c_out, kernel=2):
        self.name = name
        self.levels, self.c_out, self.kernel = levels, c_out, kernel
        self.w_name, self.b_name = f"{name}.w", f"{name}.b"

    def init(self, rng, dtype=np.float32):
        """Uniform(+-1/sqrt(K)) weights: only ``K`` of the ``V K`` inputs are
        non-zero at each step, so that is the fan-in that sets the scale."""
        shape = (self.c_out, self.levels, self.kernel)
        return {self.w_name: _uniform_fan_in(rng, shape, self.kernel, dtype),
                self.b_name: _uniform_fan_in(rng, (self.c_out,), self.kernel,
                                             dtype)}

    def forward(self, params, q):
        """``q (N, T)`` integer codes -> ``y (C_out, N, T)``, and the cache."""
        return onehot_conv1d_forward(q, params[self.w_name], params[self.b_name],
                                     self.delay)

    def backward(self, params, cache, dy):
        """``{name.w: dw, name.b: db}``; the codes get no gradient."""
        dw, db = onehot_conv1d_backward(dy, cache)
        return {self.w_name: dw, self.b_name: db}

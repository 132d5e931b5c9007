"""Stateless layers: configuration on the object, parameters in a dict."""

import numpy as np

from npar.ops.conv2d import conv2d_backward, conv2d_forward
from npar.ops.dense import dense_backward, dense_forward
from npar.ops.embedding import embedding_backward, embedding_forward


def _uniform_fan_in(rng, shape, fan_in, dtype):
    # Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), the usual default scale.
    bound = 1.0 / np.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d:
    """A (masked) 2-D convolution; parameters ``{name}.w`` and ``{name}.b``.

    Args:
        name: prefix of the parameter names.
        c_in, c_out: channel counts.
        kernel: ``(K_h, K_w)``.
        padding: ``(P_t, P_b, P_l, P_r)``.
        dilation: ``(D_h, D_w)``.
        mask: ``(C_out, C_in, K_h, K_w)`` or None.
        bias: whether the layer has ``{name}.b``.
        layout: ``"CNHW"`` (the models' inside layout, ``(C, N, H, W)``) or
            ``"NCHW"``.
    """

    def __init__(self, name, c_in, c_out, kernel, padding=(0, 0, 0, 0),
                 dilation=(1, 1), mask=None, bias=True, layout="CNHW"):
        self.name = name
        self.layout = layout
        self.c_in, self.c_out = c_in, c_out
        self.kernel = tuple(kernel)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.mask = mask
        self.bias = bias
        self.w_name, self.b_name = f"{name}.w", f"{name}.b"

    def init(self, rng, dtype=np.float32):
        """Fresh parameters; masked taps start at exactly zero."""
        shape = (self.c_out, self.c_in) + self.kernel
        fan_in = self.c_in * self.kernel[0] * self.kernel[1]
        w = _uniform_fan_in(rng, shape, fan_in, dtype)
        if self.mask is not None:
            w *= self.mask.astype(dtype)
        params = {self.w_name: w}
        if self.bias:
            params[self.b_name] = _uniform_fan_in(rng, (self.c_out,), fan_in, dtype)
        return params

    def forward(self, params, x):
        """``x (C_in, N, H, W)`` -> ``y (C_out, N, H_out, W_out)`` (in the
        ``"CNHW"`` layout), and the cache."""
        return conv2d_forward(x, params[self.w_name], params.get(self.b_name),
                              self.padding, self.dilation, self.mask, self.layout)

    def backward(self, params, cache, dy, need_dx=True):
        """Returns ``dx`` (None if not ``need_dx``) and
        ``{name.w: dw, name.b: db}``."""
        dx, dw, db = conv2d_backward(dy, cache, need_dx)
        grads = {self.w_name: dw}
        if self.bias:
            grads[self.b_name] = db
        return dx, grads


class Embedding:
    """One learned ``D``-vector per input level and colour: the table
    ``{name}.w`` ``(C, V, D)``; colour ``c`` of the images ``(N, C, H, W)``
    reads ``table[c]`` (:mod:`npar.ops.embedding`)."""

    def __init__(self, name, colours, levels, dim):
        self.name = name
        self.colours, self.levels, self.dim = colours, levels, dim
        self.w_name = f"{name}.w"
        self.mask = None

    def init(self, rng, dtype=np.float32):
        # The scale of the scaled input, [-1, 1].
        shape = (self.colours, self.levels, self.dim)
        return {self.w_name: rng.uniform(-1.0, 1.0, size=shape).astype(dtype)}

    def forward(self, params, x):
        """``(N, C, H, W)`` integers -> ``(C, D, N, H, W)`` and the cache."""
        table = params[self.w_name]
        outs, caches = [], []
        for c in range(self.colours):
            out, cache = embedding_forward(x[:, c], table[c])
            outs.append(out)
            caches.append(cache)
        return np.stack(outs), caches

    def backward(self, params, caches, dy):
        """``dy`` ``(C, D, N, H, W)`` -> ``{name.w: (C, V, D)}``."""
        dtable = np.stack([embedding_backward(dy[c], cache)
                           for c, cache in enumerate(caches)])
        return {self.w_name: dtable}


class Dense:
    """A (masked) dense map on rows ``(M, C_in) -> (M, C_out)``: a 1x1
    convolution in channels-last layout."""

    def __init__(self, name, c_in, c_out, mask=None, bias=True):
        self.name = name
        self.c_in, self.c_out = c_in, c_out
        self.mask = mask
        self.bias = bias
        self.w_name, self.b_name = f"{name}.w", f"{name}.b"

    def init(self, rng, dtype=np.float32):
        w = _uniform_fan_in(rng, (self.c_out, self.c_in), self.c_in, dtype)
        if self.mask is not None:
            w *= self.mask.astype(dtype)
        params = {self.w_name: w}
        if self.bias:
            params[self.b_name] = _uniform_fan_in(rng, (self.c_out,), self.c_in,
                                                  dtype)
        return params

    def forward(self, params, x):
        return dense_forward(x, params[self.w_name], params.get(self.b_name),
                             self.mask)

    def backward(self, params, cache, dy):
        dx, dw, db = dense_backward(dy, cache)
        grads = {self.w_name: dw}
        if self.bias:
            grads[self.b_name] = db
        return dx, grads


def shift_down_forward(x):
    """Shift an ``(N, C, H, W)`` or ``(C, N, H, W)`` map one row down:
    ``y[:, :, i] = x[:, :, i-1]``, row 0 zero. This is what keeps the
    vertical stack strictly above the pixel when it feeds the horizontal
    stack (van den Oord et al. 2016b, sec. 2.2)."""
    y = np.zeros_like(x)
    y[:, :, 1:] = x[:, :, :-1]
    return y


def shift_down_backward(dy):
    """Adjoint of :func:`shift_down_forward`: ``dx[:, :, i] = dy[:, :, i+1]``."""
    dx = np.zeros_like(dy)
    dx[:, :, :-1] = dy[:, :, 1:]
    return dx

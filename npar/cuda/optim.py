"""Parameters, gradients and optimizer state on the device, each in one flat
buffer, and the Adam and SGD updates as CUDA kernels.

:class:`FlatArrays` keeps a dict of named arrays in one contiguous device
buffer with a view per name, in the order of the model's ``params`` dict.
The backward passes write each gradient straight into its view of the
gradient buffer, so that the gradient norm is one reduction and an
optimizer step is one elementwise kernel over every parameter at once.

The updates are those of :mod:`npar.train.optim`, entry by entry, with the
hyperparameters and the arithmetic in float64 and the results rounded to
the parameters' dtype, as the CPU kernels do. Adam (Kingma and Ba 2015,
algorithm 1), at step ``t``:

.. math::  m \\leftarrow \\beta_1 m + (1 - \\beta_1) g,\\quad
           v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2,\\quad
           \\theta \\leftarrow \\theta - \\alpha\\,
           \\frac{m / (1 - \\beta_1^t)}{\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon};

SGD with momentum ``mu``: ``u <- mu u + g``, ``theta <- theta - alpha u``.
Gradient clipping by global norm (:func:`npar.train.optim.clip_by_global_norm`)
is a float64 sum of squares over the gradient buffer (one block), one
number copied to the host, and a scale of the buffer when the norm exceeds
the limit.
"""

import math

import numpy as np
from numba import cuda

from npar.cuda.elementwise import scale
from npar.cuda.linalg import sum_all
from npar.cuda.runtime import empty, launch_plan, to_device
from npar.train.optim import SGD, Adam


class FlatArrays:
    """Named arrays in one flat device buffer.

    Args:
        shapes: ``{name: shape}``, in the order of the buffer.
        dtype: float32 or float64.
        buffer: an existing ``(total,)`` device buffer, or None for a new one.

    Attributes:
        buffer: the ``(total,)`` device array.
        views: ``{name: device view of its shape}``.
    """

    def __init__(self, shapes, dtype, buffer=None):
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.dtype = np.dtype(dtype)
        self.offsets = {}
        total = 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            self.offsets[name] = (total, size)
            total += size
        self.size = total
        self.buffer = empty((total,), self.dtype) if buffer is None else buffer
        self.views = {name: self.buffer[start:start + size].reshape(*self.shapes[name])
                      for name, (start, size) in self.offsets.items()}

    @classmethod
    def from_host(cls, arrays, dtype=None):
        """Upload a dict of host arrays (one copy of their concatenation)."""
        dtype = np.dtype(dtype or next(iter(arrays.values())).dtype)
        joined = np.concatenate([np.asarray(a, dtype=dtype).reshape(-1)
                                 for a in arrays.values()])
        shapes = {name: np.shape(a) for name, a in arrays.items()}
        return cls(shapes, dtype, buffer=to_device(joined))

    def zeros_like(self):
        """A new :class:`FlatArrays` of the same layout, all zeros."""
        other = FlatArrays(self.shapes, self.dtype)
        from npar.cuda.elementwise import fill

        fill(other.buffer, 0.0)
        return other

    def to_host(self):
        """``{name: host array}`` (one copy of the whole buffer)."""
        joined = self.buffer.copy_to_host()
        return {name: joined[start:start + size].reshape(self.shapes[name]).copy()
                for name, (start, size) in self.offsets.items()}

    def upload(self, arrays):
        """Overwrite the buffer from a dict of host arrays of this layout."""
        joined = np.concatenate([np.asarray(arrays[name], dtype=self.dtype)
                                 .reshape(-1) for name in self.shapes])
        self.buffer.copy_to_device(joined)

    def __getitem__(self, name):
        return self.views[name]

    def get(self, name, default=None):
        return self.views.get(name, default)

    def __contains__(self, name):
        return name in self.views

    def keys(self):
        return self.views.keys()


@cuda.jit
def _adam_kernel(theta, g, m, v, lr, beta1, beta2, eps, correction1, correction2):
    for k in range(cuda.grid(1), theta.shape[0], cuda.gridsize(1)):
        gk = np.float64(g[k])
        m[k] = beta1 * np.float64(m[k]) + (1.0 - beta1) * gk
        v[k] = beta2 * np.float64(v[k]) + (1.0 - beta2) * gk * gk
        m_hat = np.float64(m[k]) / correction1
        v_hat = np.float64(v[k]) / correction2
        theta[k] = np.float64(theta[k]) - lr * m_hat / (math.sqrt(v_hat) + eps)


@cuda.jit
def _sgd_kernel(theta, g, u, lr, momentum):
    for k in range(cuda.grid(1), theta.shape[0], cuda.gridsize(1)):
        u[k] = momentum * np.float64(u[k]) + np.float64(g[k])
        theta[k] = np.float64(theta[k]) - lr * np.float64(u[k])


def _launch(kernel, n_items, *args):
    plan = launch_plan()
    kernel[plan.blocks(n_items, plan.threads), plan.threads](*args)


def global_norm(grads, out=None):
    """``sqrt(sum g^2)`` over a gradient buffer, float64, as a host float
    (the one number a training step copies back besides the loss)."""
    out = sum_all(grads.buffer, out=out, square=True)
    return math.sqrt(float(out.copy_to_host()[0]))


def clip_by_global_norm(grads, max_norm):
    """Scale the gradient buffer by ``min(1, max_norm / ||g||)`` in place, as
    :func:`npar.train.optim.clip_by_global_norm`; returns the norm before
    clipping (inf or NaN when a gradient is)."""
    norm = global_norm(grads)
    if max_norm is not None and max_norm > 0 and math.isfinite(norm) \
            and norm > max_norm:
        scale(grads.buffer, max_norm / norm, out=grads.buffer)
    return norm


class DeviceOptimizer:
    """The device side of an :class:`npar.train.optim.Adam` or ``SGD``.

    It reads the hyperparameters and the step count ``t`` from the CPU
    optimizer object and advances ``t`` there, and keeps the moments on
    the device; :meth:`to_host` writes them back into the CPU object (its
    ``m``/``v`` or ``u`` dicts), so that a checkpoint saved from it is the
    same as one from a CPU run.

    Args:
        optimizer: the CPU optimizer (its state, if any, is uploaded).
        params: the :class:`FlatArrays` of the parameters.
    """

    def __init__(self, optimizer, params):
        if not isinstance(optimizer, (Adam, SGD)):
            raise TypeError(
                "the CUDA backend updates with npar.train.optim.Adam or SGD, got "
                f"{type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.params = params
        names = list(params.shapes)
        if isinstance(optimizer, Adam):
            self.slots = {"m": optimizer.m, "v": optimizer.v}
        else:
            self.slots = {"u": optimizer.u}
        self.state = {}
        for slot, host in self.slots.items():
            flat = params.zeros_like()
            if host:
                missing = [n for n in names if n not in host]
                if missing:
                    raise ValueError(
                        f"optimizer state {slot!r} lacks parameters {missing}")
                flat.upload(host)
            self.state[slot] = flat

    def step(self, grads, lr=None):
        """Update the parameters in place from the gradient buffer."""
        opt = self.optimizer
        lr = float(opt.lr if lr is None else lr)
        opt.t += 1
        theta = self.params.buffer
        if isinstance(opt, Adam):
            c1 = 1.0 - opt.beta1 ** opt.t
            c2 = 1.0 - opt.beta2 ** opt.t
            _launch(_adam_kernel, theta.shape[0], theta, grads.buffer,
                    self.state["m"].buffer, self.state["v"].buffer, lr, opt.beta1,
                    opt.beta2, opt.eps, c1, c2)
        else:
            _launch(_sgd_kernel, theta.shape[0], theta, grads.buffer,
                    self.state["u"].buffer, lr, opt.momentum)

    def to_host(self):
        """Copy the moments into the CPU optimizer object's dicts."""
        for slot, host in self.slots.items():
            host.clear()
            host.update(self.state[slot].to_host())
        return self.optimizer

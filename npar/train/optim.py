"""Optimizers that update a parameter dict in place.

Adam (Kingma and Ba 2015, algorithm 1), for step ``t = 1, 2, ...``:

.. math::  m \\leftarrow \\beta_1 m + (1 - \\beta_1) g,\\quad
           v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2,

.. math::  \\theta \\leftarrow \\theta - \\alpha\\,
           \\frac{m / (1 - \\beta_1^t)}{\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon}.

SGD with momentum ``mu``: ``u <- mu u + g``, ``theta <- theta - alpha u``.

Neither has weight decay, so a masked weight (whose gradient is exactly
zero) keeps its value, zero, through any number of steps.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def _adam_kernel(theta, g, m, v, lr, beta1, beta2, eps, correction1, correction2):
    for k in range(theta.size):
        m[k] = beta1 * m[k] + (1.0 - beta1) * g[k]
        v[k] = beta2 * v[k] + (1.0 - beta2) * g[k] * g[k]
        m_hat = m[k] / correction1
        v_hat = v[k] / correction2
        theta[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)


@numba.njit(cache=True)
def _sgd_kernel(theta, g, u, lr, momentum):
    for k in range(theta.size):
        u[k] = momentum * u[k] + g[k]
        theta[k] -= lr * u[k]


def _check_lr(lr):
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be a finite number > 0, got {lr!r}")
    return float(lr)


class Adam:
    """Adam with bias correction; state ``m``, ``v`` per parameter and ``t``."""

    name = "adam"

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = _check_lr(lr)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{label} must lie in [0, 1), got {beta!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t = 0
        self.m, self.v = {}, {}

    def step(self, params, grads, lr=None):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        lr = self.lr if lr is None else lr
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        for name, theta in params.items():
            g = np.ascontiguousarray(grads[name], dtype=theta.dtype)
            if name not in self.m:
                self.m[name] = np.zeros_like(theta)
                self.v[name] = np.zeros_like(theta)
            _adam_kernel(theta.reshape(-1), g.reshape(-1), self.m[name].reshape(-1),
                         self.v[name].reshape(-1), lr, self.beta1, self.beta2,
                         self.eps, c1, c2)

    def state_arrays(self):
        """The state as a flat dict of arrays, for a checkpoint."""
        arrays = {"t": np.array(self.t)}
        for name in self.m:
            arrays[f"m.{name}"] = self.m[name]
            arrays[f"v.{name}"] = self.v[name]
        return arrays

    def load_state_arrays(self, arrays):
        self.t = int(arrays["t"])
        self.m = {k[2:]: v.copy() for k, v in arrays.items() if k.startswith("m.")}
        self.v = {k[2:]: v.copy() for k, v in arrays.items() if k.startswith("v.")}


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum."""

    name = "sgd"

    def __init__(self, lr=1e-2, momentum=0.9):
        self.lr = _check_lr(lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.u = {}
        self.t = 0

    def step(self, params, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        for name, theta in params.items():
            g = np.ascontiguousarray(grads[name], dtype=theta.dtype)
            if name not in self.u:
                self.u[name] = np.zeros_like(theta)
            _sgd_kernel(theta.reshape(-1), g.reshape(-1), self.u[name].reshape(-1),
                        lr, self.momentum)

    def state_arrays(self):
        arrays = {"t": np.array(self.t)}
        arrays.update({f"u.{k}": v for k, v in self.u.items()})
        return arrays

    def load_state_arrays(self, arrays):
        self.t = int(arrays["t"])
        self.u = {k[2:]: v.copy() for k, v in arrays.items() if k.startswith("u.")}


def make_optimizer(name, lr):
    """``"adam"`` or ``"sgd"`` with learning rate ``lr``."""
    if name == "adam":
        return Adam(lr)
    if name == "sgd":
        return SGD(lr)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def global_norm(grads):
    """``sqrt(sum_k ||g_k||^2)`` over every gradient array, float64."""
    return float(np.sqrt(sum(float(np.dot(g.reshape(-1).astype(np.float64),
                                          g.reshape(-1).astype(np.float64)))
                             for g in grads.values())))


def clip_by_global_norm(grads, max_norm):
    """Scale every gradient by ``min(1, max_norm / ||g||)`` in place.

    Returns the norm before clipping (inf or NaN when a gradient is)."""
    norm = global_norm(grads)
    if max_norm is not None and max_norm > 0 and np.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale
    return norm

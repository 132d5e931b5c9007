"""Small float64 finite-difference tools for the tests of the kernels."""

import numpy as np


def numeric_directional(f, arrays, directions, eps=1e-6):
    """(f(a + eps d) - f(a - eps d)) / (2 eps) for scalar-valued ``f``."""
    plus = [a + eps * d for a, d in zip(arrays, directions)]
    minus = [a - eps * d for a, d in zip(arrays, directions)]
    return (f(*plus) - f(*minus)) / (2 * eps)


def check_gradients(f, grads, arrays, rng, n_directions=3, eps=1e-6, floor=1e-8):
    """Largest relative error between analytic and centred-difference
    directional derivatives, one random direction set per array at a time.

    ``f(*arrays)`` is a scalar; ``grads[k]`` is its gradient with respect to
    ``arrays[k]``. Returns a list of errors, one per array.
    """
    errors = []
    for k, array in enumerate(arrays):
        worst = 0.0
        for _ in range(n_directions):
            directions = [np.zeros_like(a) for a in arrays]
            directions[k] = rng.standard_normal(array.shape)
            analytic = float(np.sum(grads[k] * directions[k]))
            numeric = numeric_directional(f, arrays, directions, eps)
            scale = max(abs(analytic), abs(numeric), floor)
            worst = max(worst, abs(analytic - numeric) / scale)
        errors.append(worst)
    return errors

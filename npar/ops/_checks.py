"""Argument checks shared by the kernels: errors quote the value and the rule."""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float_array(name, a, ndim=None):
    """Raise unless ``a`` is a float32 or float64 ndarray of ``ndim`` axes."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} axes, got shape {a.shape} ({a.ndim} axes)"
        )
    return a


def check_same_dtype(**arrays):
    """Raise unless every given array has the same dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name}: {dt}" for name, dt in dtypes.items())
        raise TypeError(f"arrays must share one dtype, got {listed}")


def check_positive_int(name, value):
    """Raise unless ``value`` is an integer >= 1; return it as int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_nonnegative_int(name, value):
    """Raise unless ``value`` is an integer >= 0; return it as int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)

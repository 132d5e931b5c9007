"""Comparison helpers of the CUDA simulator tests."""

import numpy as np


def tolerance(dtype):
    """Relative tolerance of a CUDA-vs-CPU comparison in ``dtype``."""
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def assert_close(device, expected, dtype, what=""):
    """``device`` (a device array or host array) equals ``expected`` to the
    dtype's tolerance, relative to the largest entry of ``expected``."""
    got = device.copy_to_host() if hasattr(device, "copy_to_host") else device
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype} != {dtype}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    error = float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0))
    assert error <= tolerance(dtype) * scale, (
        f"{what}: CUDA differs from CPU by {error:.3e} (scale {scale:.3g}, "
        f"tolerance {tolerance(dtype):.0e})")

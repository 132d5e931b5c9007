"""Finding a CUDA device (or Numba's CUDA simulator), launch configurations,
and the small host-side helpers every device op shares.

Nothing here imports ``numba.cuda`` at module import time: ``npar.cuda``
must stay importable where ``numba-cuda`` is missing, so that
:func:`available` can say so instead of crashing.

Launch configuration
--------------------

Every elementwise kernel is a grid-stride loop over a flat index, so its
result does not depend on the launch size; :class:`LaunchPlan` fixes the
sizes. On a GPU:

==================  =====================================================
kernel family       block and grid
==================  =====================================================
elementwise         ``threads = 256`` per block, ``min(ceil(n / 256),
                    32 * SMs)`` blocks (1-D)
tiled matmul        ``tile x tile = 16 x 16`` threads per block, one block
                    per ``16 x 16`` tile of the output, at most ``32 * SMs``
                    blocks (1-D grid, grid-stride over tiles)
row reductions      ``row_threads = 128`` threads per block (a power of
                    two), one block per row, at most ``32 * SMs`` blocks
                    (grid-stride over rows)
single-block sums   one block of ``row_threads`` threads
==================  =====================================================

Under the simulator every thread is a Python thread, and starting threads,
not arithmetic, is what costs; the simulator plan launches at most ``2`` blocks
of ``4`` threads (``4 x 4`` matmul tiles), which still exercises the
grid-stride loops, the tile edges and the reductions across threads and
blocks. Each ``syncthreads`` there is a barrier of Python threads that costs
milliseconds under the default thread switch interval of 5 ms; the
simulator tests lower it with ``sys.setswitchinterval(1e-4)``.
"""

import functools
import logging
import math
from dataclasses import dataclass, replace

import numpy as np

log = logging.getLogger(__name__)

SIMULATOR_VARIABLE = "NUMBA_ENABLE_CUDASIM"


class CudaUnavailableError(ValueError):
    """CUDA was asked for, and neither a GPU nor the simulator is usable.

    A ValueError: ``--device cuda`` is a value this machine cannot honour,
    and the command line reports it as it reports other bad options."""


@dataclass(frozen=True)
class LaunchPlan:
    """Block and grid sizes (see the module docstring).

    Attributes:
        threads: threads per block of the 1-D elementwise kernels.
        max_blocks: most blocks of any grid-stride launch.
        tile: side of the square shared-memory tile of the matmul; its blocks
            have ``tile x tile`` threads.
        row_threads: threads per block of the per-row reductions (a power of
            two).
    """

    threads: int = 256
    max_blocks: int = 4096
    tile: int = 16
    row_threads: int = 128

    def blocks(self, n_items, per_block):
        """Blocks for ``n_items`` work items at ``per_block`` items a block."""
        return max(1, min(self.max_blocks, math.ceil(n_items / per_block)))


SIMULATOR_PLAN = LaunchPlan(threads=4, max_blocks=2, tile=4, row_threads=4)
_plan_override = None


def simulator_enabled():
    """True when ``NUMBA_ENABLE_CUDASIM=1`` was set before Numba started."""
    try:
        import numba
    except ImportError:
        return False
    return bool(numba.config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=1)
def _probe():
    # (usable, description or reason). Cached: the answer cannot change
    # inside one process (the simulator switch is read when Numba starts).
    try:
        from numba import cuda
    except ImportError as error:
        return False, (f"numba-cuda is not installed ({error}); install it with "
                       "pip install 'npar[cuda]'")
    if simulator_enabled():
        return True, f"the CUDA simulator ({SIMULATOR_VARIABLE}=1)"
    try:
        if cuda.is_available():
            device = cuda.get_current_device()
            name = device.name
            name = name.decode() if isinstance(name, bytes) else name
            major, minor = device.compute_capability
            return True, f"{name} (compute capability {major}.{minor})"
        reason = "numba.cuda.is_available() is False"
        try:
            len(cuda.gpus)  # raises with the driver's own explanation
        except Exception as error:  # CudaSupportError and friends
            reason = _one_line(error)
        return False, reason
    except Exception as error:  # a broken driver install must not crash
        return False, _one_line(error)


def _one_line(error):
    # The driver's messages span lines and end in ":"; keep the words.
    return " ".join(str(error).split()).rstrip(" :.")


def available():
    """True when CUDA kernels can run here: a GPU, or the simulator."""
    return _probe()[0]


def describe():
    """What runs the kernels (``"NVIDIA H200 (compute capability 9.0)"``, the
    simulator), or why nothing can."""
    return _probe()[1]


def require():
    """Raise :class:`CudaUnavailableError` unless :func:`available`.

    The message says what was tried and how to run the kernels on the CPU
    through the simulator instead.
    """
    usable, reason = _probe()
    if not usable:
        raise CudaUnavailableError(
            "the CUDA backend was requested but no CUDA device is usable: "
            f"{reason}. Tried: importing numba.cuda and asking the CUDA driver "
            f"for a GPU. To run the same kernels without a GPU, set "
            f"{SIMULATOR_VARIABLE}=1 in the environment before Python starts "
            f"(slow: for tests on tiny shapes), or use the CPU backend "
            "(--device cpu)."
        )
    return reason


@functools.lru_cache(maxsize=1)
def _default_plan():
    if simulator_enabled():
        return SIMULATOR_PLAN
    from numba import cuda

    _quiet_small_grid_warnings()
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return LaunchPlan(max_blocks=32 * int(sms))


def _quiet_small_grid_warnings():
    # numba-cuda warns at every launch of fewer than 128 blocks. The
    # single-block sums and the per-row reductions of a few rows are small
    # on purpose; the warning would only repeat that.
    try:
        from numba.cuda.core import config
    except ImportError:
        return
    if hasattr(config, "CUDA_LOW_OCCUPANCY_WARNINGS"):
        config.CUDA_LOW_OCCUPANCY_WARNINGS = 0


def launch_plan():
    """The :class:`LaunchPlan` in force."""
    return _plan_override if _plan_override is not None else _default_plan()


def set_launch_plan(plan=None, **changes):
    """Replace the launch plan (``None`` restores the default); returns the
    previous override. Tests use it to run kernels under several plans."""
    global _plan_override
    previous = _plan_override
    if plan is None and changes:
        plan = replace(launch_plan(), **changes)
    if plan is not None and (plan.row_threads & (plan.row_threads - 1)):
        raise ValueError(f"row_threads must be a power of two, got {plan.row_threads}")
    _plan_override = plan
    return previous


# ---- device arrays ----------------------------------------------------------


def cuda_module():
    """``numba.cuda``, after :func:`require`."""
    require()
    from numba import cuda

    return cuda


def is_device_array(a):
    """True for a Numba device array (or the simulator's stand-in)."""
    return hasattr(a, "copy_to_host") and not isinstance(a, np.ndarray)


def check_device_array(name, a, ndim=None, dtype=None):
    """Raise unless ``a`` is a device array (of ``ndim`` axes and ``dtype``)."""
    if not is_device_array(a):
        raise TypeError(
            f"{name} must be a numba.cuda device array, got {type(a).__name__}; "
            "copy host arrays with numba.cuda.to_device"
        )
    if ndim is not None and len(a.shape) != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {a.shape}")
    if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
        raise TypeError(f"{name} must be {np.dtype(dtype)}, got {a.dtype}")
    if np.dtype(a.dtype).type not in (np.float32, np.float64, np.int64, np.uint8):
        raise TypeError(f"{name} has unsupported dtype {a.dtype}")
    return a


def empty(shape, dtype):
    """An uninitialised device array."""
    return cuda_module().device_array(shape, dtype=np.dtype(dtype))


def dummy(dtype):
    """A one-entry device array of ``dtype``, passed for an unused optional
    kernel argument (a missing bias); kernels never read it."""
    return _dummy(np.dtype(dtype))


@functools.cache
def _dummy(dtype):
    return empty((1,), dtype)


def to_device(a):
    """Copy a host array to the device (C-contiguous)."""
    return cuda_module().to_device(np.ascontiguousarray(a))


def flat(a):
    """A 1-D view of a C-contiguous device array."""
    return a.reshape(a.size)

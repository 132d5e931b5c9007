"""Shared set-up of the CUDA simulator tests (``sim_*.py``).

These files run only in a process started with ``NUMBA_ENABLE_CUDASIM=1``
(tests/test_cuda.py starts it); the ordinary test run does not collect them
(their names do not start with ``test_``). Here:

- the thread switch interval drops to 0.1 ms: the simulator runs every CUDA
  thread as a Python thread and polls them at each ``syncthreads``, which
  takes milliseconds per barrier at the default 5 ms;
- shared-memory allocation is made thread-safe: the simulator's
  ``cuda.shared.array`` looks the array of a call site up in a dict and
  creates it when missing, without a lock, so two threads of one block
  can each create their own "shared" array and a reduction then reads
  values that half the block never wrote (seen as a rare wrong gradient
  norm). The replacement below keeps the simulator's rule (one array per
  source line and launch) and takes a lock around the look-up;
- with ``NPAR_CUDA_RECORD=path`` every kernel launch is recorded (the
  kernel and the types of its arguments) and written to ``path`` as JSON at
  the end, for the PTX compile check of tests/test_cuda.py.
"""

import json
import os
import sys
import threading

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
_records = {}


def _argument_type(value):
    # A JSON description of one kernel argument, enough to rebuild its Numba
    # type outside the simulator.
    ary = getattr(value, "_ary", None)
    if ary is not None:
        return {"array": str(ary.dtype), "ndim": ary.ndim,
                "layout": "C" if ary.flags.c_contiguous else "A"}
    if isinstance(value, (bool, np.bool_)):
        return {"scalar": "bool"}
    if isinstance(value, (int, np.integer)):
        return {"scalar": "int64"}
    if isinstance(value, (float, np.floating)):
        return {"scalar": "float64"}
    raise TypeError(f"unexpected kernel argument of type {type(value).__name__}")


def _closure(fn):
    values = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        value = cell.cell_contents
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            values[name] = int(value)
        elif name == "ft":
            values[name] = str(value)
    return values


def _install_recorder():
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    launch = FakeCUDAKernel.__call__

    def recording_call(self, *args):
        if not self._device:
            record = {"module": self.fn.__module__, "qualname": self.fn.__qualname__,
                      "closure": _closure(self.fn),
                      "args": [_argument_type(a) for a in args]}
            _records[json.dumps(record, sort_keys=True)] = record
        return launch(self, *args)

    FakeCUDAKernel.__call__ = recording_call


def _install_locked_shared_arrays():
    from numba.cuda.simulator import kernelapi

    unlocked = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory, errors
            return unlocked(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            found = self._allocations.get(caller)
            if found is None:
                found = self._allocations[caller] = np.empty(shape, dtype)
        return found

    kernelapi.FakeCUDAShared.array = array


if SIMULATOR:
    sys.setswitchinterval(1e-4)
    _install_locked_shared_arrays()
    if os.environ.get("NPAR_CUDA_RECORD"):
        _install_recorder()


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("NPAR_CUDA_RECORD")
    if SIMULATOR and path:
        with open(path, "w") as handle:
            json.dump(sorted(_records.values(), key=json.dumps), handle, indent=0)


@pytest.fixture(autouse=True)
def _require_simulator():
    if not SIMULATOR:
        pytest.skip("CUDA simulator tests need NUMBA_ENABLE_CUDASIM=1 (run "
                    "through tests/test_cuda.py)")


@pytest.fixture
def rng():
    return np.random.default_rng(20161)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param

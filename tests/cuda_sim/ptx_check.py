"""Compile every recorded kernel launch for a real GPU (PTX), no GPU needed.

The simulator runs the kernels as Python, so it cannot tell whether they
compile for a GPU: a construct that Python accepts and Numba's CUDA target
does not would pass the simulator tests and fail on the first real device.
This script closes that gap. It reads the launches that the simulator tests
recorded (``NPAR_CUDA_RECORD``, see conftest.py): each kernel and the types
of its arguments; rebuilds each kernel outside the simulator; and compiles
it with ``numba.cuda.compile_ptx`` for a given compute capability, then
assembles the PTX with ``ptxas`` when it is on the PATH or in
``/usr/local/cuda/bin``.

Usage: ``python ptx_check.py RECORDS.json [--cc 9.0]``. Exit status 0: all
compiled; 1: some failed (listed); 77: no CUDA compiler here (NVVM and
NVRTC are needed, from the CUDA toolkit or the nvidia-cuda-nvrtc wheel).
"""

import argparse
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile

NO_TOOLCHAIN = 77


def _numba_type(description):
    import numba
    import numpy as np

    if "array" in description:
        dtype = numba.from_dtype(np.dtype(description["array"]))
        return numba.types.Array(dtype, description["ndim"], description["layout"])
    return {"int64": numba.int64, "float64": numba.float64,
            "bool": numba.boolean}[description["scalar"]]


def _kernel_function(record):
    # The plain Python function of the recorded kernel, rebuilt outside the
    # simulator: module-level kernels directly, factory-made ones by calling
    # the factory with the dtype and sizes found in the kernel's closure.
    module = importlib.import_module(record["module"])
    qualname = record["qualname"]
    if ".<locals>." not in qualname:
        return getattr(module, qualname).py_func
    factory_name, kernel_name = qualname.split(".<locals>.")[0], qualname.split(".")[-1]
    factory = getattr(module, factory_name)
    closure = record["closure"]
    arguments = []
    first_array = next(a["array"] for a in record["args"] if "array" in a)
    for position, name in enumerate(inspect.signature(factory).parameters):
        if position == 0:
            # The factory's dtype; kernels that never name it take their
            # first array argument's.
            arguments.append(closure.get("ft", first_array))
        else:
            arguments.append(closure.get(name, 128))
    built = factory(*arguments)
    if hasattr(built, "py_func"):
        kernels = [built]
    else:
        kernels = built.values() if isinstance(built, dict) else built
    for kernel in kernels:
        if kernel.py_func.__name__ == kernel_name:
            return kernel.py_func
    raise LookupError(f"{factory_name}{tuple(arguments)} makes no {kernel_name}")


class _Device:
    def __init__(self, cc):
        self.compute_capability = cc


def _pretend_current_device(cc):
    # Device functions (the shared-memory reduction trees) are compiled for
    # "the current device", which asks the driver; with no GPU there is no
    # driver, so answer with the compute capability being checked.
    from numba.cuda import dispatcher

    if hasattr(dispatcher, "get_current_device"):
        dispatcher.get_current_device = lambda: _Device(cc)


def _ptxas():
    found = shutil.which("ptxas")
    if found:
        return found
    fallback = "/usr/local/cuda/bin/ptxas"
    return fallback if os.path.exists(fallback) else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records")
    parser.add_argument("--cc", default="9.0", help="compute capability")
    args = parser.parse_args(argv)
    cc = tuple(int(part) for part in args.cc.split("."))
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("run this outside the simulator (NUMBA_ENABLE_CUDASIM unset)")
        return 2

    import numba
    from numba import cuda

    _pretend_current_device(cc)

    def probe(x):
        x[0] = 1.0

    try:
        cuda.compile_ptx(probe, (numba.float32[::1],), cc=cc)
    except Exception as error:  # no NVVM / NVRTC: nothing to check with
        print(f"no CUDA compiler: {' '.join(str(error).split())[:300]}")
        return NO_TOOLCHAIN

    with open(args.records) as handle:
        records = json.load(handle)
    ptxas = _ptxas()
    failures = []
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as folder:
        for index, record in enumerate(records):
            label = f"{record['qualname']}{record['closure']}"
            try:
                function = _kernel_function(record)
                signature = tuple(_numba_type(a) for a in record["args"])
                ptx, _ = cuda.compile_ptx(function, signature, cc=cc)
            except Exception as error:
                failures.append(f"{label}: {' '.join(str(error).split())[:400]}")
                continue
            if ptxas:
                path = os.path.join(folder, f"k{index}.ptx")
                with open(path, "w") as handle:
                    handle.write(ptx)
                done = subprocess.run([ptxas, f"-arch={arch}", path, "-o", os.devnull],
                                      capture_output=True, text=True)
                if done.returncode:
                    failures.append(f"{label}: ptxas: {done.stderr.strip()[:400]}")
    checked = len(records) - len(failures)
    print(f"{checked} of {len(records)} kernel launches compiled for {arch}"
          + (" and assembled by ptxas" if ptxas else " (no ptxas: PTX only)"))
    for failure in failures:
        print("FAILED", failure)
    return 1 if failures or not records else 0


if __name__ == "__main__":
    sys.exit(main())

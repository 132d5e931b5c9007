"""The CUDA target (npar.cuda), tested without a GPU.

The kernels run under Numba's CUDA simulator, which must be switched on
(``NUMBA_ENABLE_CUDASIM=1``) before Numba is imported; so each file of
tests/cuda_sim runs in a pytest process of its own, started here with that
variable set. Those files hold every CUDA kernel equal to its CPU twin
(float64 to 1e-12, float32 to 1e-5), check the CUDA backward passes against
float64 centred differences, and train tiny models on the simulator and on
the CPU side by side. The launches they make are recorded and, where a CUDA
compiler is installed (NVVM and NVRTC), every one is compiled to PTX for a
Hopper GPU and assembled, which the simulator alone cannot show.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cuda

HERE = Path(__file__).resolve().parent
SIM_FILES = ["sim_kernels.py", "sim_gradcheck.py", "sim_training.py",
             "sim_commands.py"]
HAS_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(
    not HAS_NUMBA_CUDA, reason="numba-cuda is not installed (pip install "
    "'npar[cuda]'); the CUDA simulator comes with it")
SIM_TIMEOUT = 900
_runs = {}


def _environment(simulator):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return env


def _run_simulator_file(name, folder):
    # One pytest process per file under the simulator; memoised so that the
    # PTX check reuses the launches that the file tests recorded.
    if name not in _runs:
        record = folder / f"{name}.launches.json"
        env = _environment(simulator=True)
        env["NPAR_CUDA_RECORD"] = str(record)
        command = [sys.executable, "-m", "pytest", str(HERE / "cuda_sim" / name),
                   "-o", "python_files=sim_*.py", "-q", "-p", "no:cacheprovider",
                   "--durations=3"]
        try:
            done = subprocess.run(command, env=env, cwd=HERE.parent, text=True,
                                  capture_output=True, timeout=SIM_TIMEOUT)
            _runs[name] = (done.returncode, done.stdout + done.stderr, record)
        except subprocess.TimeoutExpired as error:
            output = (error.stdout or b"") + (error.stderr or b"")
            if isinstance(output, bytes):
                output = output.decode(errors="replace")
            _runs[name] = (-1, f"{output}\n{name} timed out after {SIM_TIMEOUT} s "
                           "under the simulator (about 40 s on an idle 2-core "
                           "machine)", record)
    return _runs[name]


@pytest.fixture(scope="module")
def launch_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_launches")


@needs_numba_cuda
@pytest.mark.parametrize("name", SIM_FILES)
def test_simulator_file(name, launch_folder):
    status, output, _ = _run_simulator_file(name, launch_folder)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    assert status == 0, f"{name} under the CUDA simulator failed:\n{output[-6000:]}"
    assert " passed" in summary and "failed" not in summary, output[-3000:]


@needs_numba_cuda
def test_every_launched_kernel_compiles_for_a_gpu(launch_folder):
    records = []
    for name in SIM_FILES:
        status, output, record = _run_simulator_file(name, launch_folder)
        if status != 0 or not record.exists():
            pytest.skip(f"{name} did not run cleanly under the simulator")
        records.extend(json.loads(record.read_text()))
    merged = launch_folder / "all.launches.json"
    unique = {json.dumps(r, sort_keys=True): r for r in records}
    merged.write_text(json.dumps(list(unique.values())))
    done = subprocess.run(
        [sys.executable, str(HERE / "cuda_sim" / "ptx_check.py"), str(merged),
         "--cc", "9.0"], env=_environment(simulator=False), cwd=HERE.parent,
        text=True, capture_output=True, timeout=1800)
    if done.returncode == 77:
        pytest.skip(f"no CUDA compiler to check the kernels with: {done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout
    assert len(unique) >= 40, f"only {len(unique)} distinct launches recorded"


def test_cuda_backend_without_gpu_or_simulator_is_a_clear_error():
    # In a fresh process without the simulator: on a machine with no GPU,
    # set_backend("cuda") raises CudaUnavailableError (a ValueError) saying
    # what was tried and how to use the simulator; nothing crashes.
    script = (
        "import npar, npar.cuda\n"
        "if npar.cuda.available():\n"
        "    print('GPU'); raise SystemExit(0)\n"
        "try:\n"
        "    npar.set_backend('cuda')\n"
        "except npar.cuda.CudaUnavailableError as error:\n"
        "    assert isinstance(error, ValueError)\n"
        "    assert npar.get_backend() == 'cpu'\n"
        "    print('ERROR', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script],
                          env=_environment(simulator=False), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    if done.stdout.startswith("GPU"):
        pytest.skip("a GPU is available here")
    message = done.stdout
    assert message.startswith("ERROR the CUDA backend was requested"), message
    assert "NUMBA_ENABLE_CUDASIM=1" in message
    assert "Tried:" in message
    assert "--device cpu" in message


def test_backend_names_and_device_option():
    import argparse

    import npar
    from npar.backend import add_device_argument, make_trainer

    assert npar.get_backend() == "cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        npar.set_backend("tpu")
    parser = add_device_argument(argparse.ArgumentParser())
    assert parser.parse_args([]).device == "cpu"
    assert parser.parse_args(["--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu"])
    assert make_trainer(object(), object(), device="cpu") is None

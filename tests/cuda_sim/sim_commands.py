"""The training commands with ``--device cuda`` on the simulator, against
the same commands on the CPU: a few steps of a tiny model give the same
losses (to 1e-5, relative), the same parameters and the same test score.

The model is tiny and the data small (a 4 x 4 central crop of MNIST reduced
to 4 levels; 4 scored samples per WaveNet crop) because the simulator runs
every CUDA thread as a Python thread.
"""

import json

import numpy as np
import pytest

from npar.cli import main
from npar.train.checkpoint import load_checkpoint

COMMANDS = {
    "pixelcnn": [
        "train", "pixelcnn", "--channels", "2", "--layers", "2", "--kernel", "3",
        "--first-kernel", "3", "--head-channels", "4", "--crop", "4",
        "--levels", "4", "--batch-size", "2", "--max-steps", "3",
        "--test-limit", "3", "--samples", "2", "--lr", "1e-2", "--no-progress"],
    "wavenet": [
        "train", "wavenet", "--channels", "2", "--skip-channels", "2",
        "--head-channels", "4", "--layers", "2", "--crop", "4",
        "--batch-size", "1", "--max-steps", "2", "--generate-seconds", "0",
        "--no-progress"],
}


@pytest.mark.parametrize("family", sorted(COMMANDS))
def test_training_command_on_cuda_gives_the_cpu_losses(tmp_path, family):
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main(COMMANDS[family] + ["--out", str(out), "--device", device]) == 0
        model, state = load_checkpoint(str(out / "checkpoint.npz"))
        metrics = json.loads((out / "metrics.json").read_text())
        runs[device] = (model, state, metrics)
    (cpu_model, cpu_state, cpu_metrics), (gpu_model, gpu_state, gpu_metrics) = (
        runs["cpu"], runs["cuda"])
    steps = int(COMMANDS[family][COMMANDS[family].index("--max-steps") + 1])
    assert cpu_state["step"] == gpu_state["step"] == steps
    cpu_losses = np.array(cpu_state["losses"], np.float64)
    gpu_losses = np.array(gpu_state["losses"], np.float64)
    assert cpu_losses.shape == gpu_losses.shape == (steps,)
    assert np.all(np.isfinite(cpu_losses)) and np.all(cpu_losses > 0)
    relative = np.abs(gpu_losses - cpu_losses) / np.abs(cpu_losses)
    assert relative.max() <= 1e-5, (cpu_losses, gpu_losses)
    # The parameters moved, and moved the same way on both devices.
    start = type(cpu_model)(cpu_model.config, seed=0).params
    assert any(not np.array_equal(start[name], value)
               for name, value in cpu_model.params.items())
    for name, value in cpu_model.params.items():
        np.testing.assert_allclose(gpu_model.params[name], value, rtol=1e-4,
                                   atol=1e-6, err_msg=name)
    score = "test_bpd" if family == "pixelcnn" else "test_bits_per_sample"
    assert abs(gpu_metrics[score] - cpu_metrics[score]) <= 1e-5 * cpu_metrics[score]

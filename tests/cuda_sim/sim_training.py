"""Training steps on the device (CudaTrainer, simulator) against the same
steps on the CPU: losses, gradient norms, parameters and optimizer state."""

import math

import numpy as np
import pytest

import npar
from npar.cuda import CudaTrainer, available, describe
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.models.wavenet import WaveNet
from npar.train.checkpoint import load_checkpoint, save_checkpoint
from npar.train.optim import SGD, Adam, clip_by_global_norm

TINY = {
    "gated": lambda: GatedPixelCNN(dict(
        image_channels=1, channels=2, layers=2, kernel=3, first_kernel=3,
        head_channels=4, levels=4), seed=1),
    "gated_rgb": lambda: GatedPixelCNN(dict(
        image_channels=3, channels=3, layers=2, kernel=3, first_kernel=3,
        head_channels=3, levels=3), seed=1),
    "plain": lambda: PixelCNN(dict(
        image_channels=1, channels=2, layers=1, kernel=3, first_kernel=3,
        head_channels=4, levels=4), seed=1),
    "wavenet": lambda: WaveNet(dict(
        levels=4, channels=2, skip_channels=3, head_channels=4, layers=2,
        kernel=2, first_kernel=2), seed=1),
    "wavenet_from_start": lambda: WaveNet(dict(
        levels=4, channels=2, skip_channels=3, head_channels=4, layers=2,
        kernel=3, first_kernel=2, loss_from_start=True), seed=1),
}


def batches(name, rng, steps):
    if name.startswith("wavenet"):
        return [rng.integers(0, 4, (2, 8)) for _ in range(steps)]
    channels, levels = (3, 3) if name == "gated_rgb" else (1, 4)
    return [rng.integers(0, levels, (1, channels, 3, 3)) for _ in range(steps)]


def relative(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


STEP_CASES = [(dtype, name, optimizer, clip)
              for dtype in (np.float32, np.float64)
              for name, optimizer, clip in [
                  ("gated", "adam", 0.5), ("plain", "sgd", None),
                  ("wavenet", "adam", None), ("wavenet_from_start", "sgd", 0.3)]]
# The RGB masks in float32 only, to keep the run short.
STEP_CASES.append((np.float32, "gated_rgb", "adam", None))


@pytest.mark.parametrize("dtype,name,optimizer,clip", STEP_CASES,
                         ids=[f"{np.dtype(c[0])}-{c[1]}" for c in STEP_CASES])
def test_training_steps_match_the_cpu(rng, dtype, name, optimizer, clip):
    make_optimizer = (lambda: Adam(1e-2)) if optimizer == "adam" else (
        lambda: SGD(5e-2))
    cpu_model, gpu_model = TINY[name]().astype(dtype), TINY[name]().astype(dtype)
    cpu_opt, gpu_opt = make_optimizer(), make_optimizer()
    trainer = CudaTrainer(gpu_model, gpu_opt)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for step, batch in enumerate(batches(name, rng, 3)):
        lr = 1e-2 * (1.0 - 0.2 * step)
        loss, grads = cpu_model.loss_and_grads(batch)
        norm = clip_by_global_norm(grads, clip)
        cpu_opt.step(cpu_model.params, grads, lr=lr)
        gpu_loss, gpu_norm = trainer.loss_and_grads(batch, clip_norm=clip)
        if step == 0:
            for key, value in trainer.gradients_to_host().items():
                scale = max(1.0, float(np.abs(grads[key]).max()))
                assert np.abs(value - grads[key]).max() <= tol * scale, key
        trainer.update(lr)
        assert relative(gpu_loss, loss) <= tol, (step, gpu_loss, loss)
        assert relative(gpu_norm, norm) <= tol, (step, gpu_norm, norm)
    trainer.to_host()
    for key, value in cpu_model.params.items():
        assert gpu_model.params[key].dtype == value.dtype
        assert np.abs(gpu_model.params[key] - value).max() <= tol, key
    assert gpu_opt.t == cpu_opt.t == 3
    for key, value in cpu_opt.state_arrays().items():
        assert np.abs(gpu_opt.state_arrays()[key] - value).max() <= tol, key


def test_resumed_trainer_continues_exactly(rng, tmp_path):
    # Two steps, a checkpoint through the host, a new trainer from it, one
    # more step: the same losses and parameters as three steps in a row.
    data = batches("gated", rng, 3)
    straight = CudaTrainer(TINY["gated"](), Adam(1e-2))
    losses = [straight.step(batch)[0] for batch in data]
    straight.to_host()

    first = CudaTrainer(TINY["gated"](), Adam(1e-2))
    resumed_losses = [first.step(batch)[0] for batch in data[:2]]
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, first.to_host(), first.optimizer.optimizer, {"step": 2})
    optimizer = Adam(1e-2)
    model, state = load_checkpoint(path, optimizer)
    assert state["step"] == 2 and optimizer.t == 2
    second = CudaTrainer(model, optimizer)
    resumed_losses.append(second.step(data[2])[0])
    second.to_host()
    assert resumed_losses == losses
    for key, value in straight.model.params.items():
        np.testing.assert_array_equal(model.params[key], value)


def test_masked_weights_stay_zero(rng):
    model = TINY["gated_rgb"]()
    trainer = CudaTrainer(model, Adam(5e-2))
    for batch in batches("gated_rgb", rng, 2):
        trainer.step(batch)
    trainer.to_host()
    runner = trainer.device_model
    assert runner.masks, "the RGB model has masked layers"
    for name, mask in runner.masks.items():
        mask = mask.copy_to_host().reshape(model.params[name].shape)
        assert np.all(model.params[name][mask == 0] == 0), name


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_non_finite_loss_skips_the_update(rng):
    model = TINY["gated"]()
    model.params["head2.b"][0] = np.inf
    trainer = CudaTrainer(model, Adam(1e-2))
    before = trainer.params.to_host()
    loss, norm = trainer.step(batches("gated", rng, 1)[0])
    assert not (math.isfinite(loss) and math.isfinite(norm))
    after = trainer.params.to_host()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_unsupported_inputs_are_refused(rng):
    trainer = CudaTrainer(TINY["gated"](), Adam(1e-2))
    with pytest.raises(NotImplementedError, match="unconditional"):
        trainer.loss_and_grads(batches("gated", rng, 1)[0], labels=np.zeros(1, int))
    with pytest.raises(ValueError, match="values"):
        trainer.loss_and_grads(np.full((1, 1, 3, 3), 9))
    conditional = GatedPixelCNN(dict(image_channels=1, channels=2, layers=1,
                                     kernel=3, first_kernel=3, head_channels=2,
                                     levels=4, classes=2))
    with pytest.raises(NotImplementedError, match="classes"):
        CudaTrainer(conditional, Adam(1e-2))
    with pytest.raises(TypeError, match="Adam or SGD"):
        CudaTrainer(TINY["gated"](), object())


def test_backend_switch_under_the_simulator():
    assert available()
    assert "simulator" in describe()
    previous = npar.get_backend()
    try:
        assert npar.set_backend("cuda") == "cuda"
        assert npar.get_backend() == "cuda"
        from npar.backend import make_trainer

        assert isinstance(make_trainer(TINY["gated"](), Adam(1e-2)), CudaTrainer)
        assert make_trainer(TINY["gated"](), Adam(1e-2), device="cpu") is None
        assert npar.get_backend() == "cpu"
    finally:
        npar.set_backend(previous)

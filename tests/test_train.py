"""Training: the loss falls on real MNIST, resume is exact, the NaN guard keeps
the last good checkpoint, checkpoints are atomic and checked on load."""

import json
import math
import os
import signal

import numpy as np
import pytest

from npar.cli import main
from npar.commands.train_pixelcnn import make_batch_fn
from npar.data.mnist import central_crop, load_mnist, quantize
from npar.models.io import load, save
from npar.models.pixelcnn import GatedPixelCNN
from npar.train.checkpoint import load_checkpoint, save_checkpoint
from npar.train.loop import TrainingDiverged, evaluate_nll, fit
from npar.train.optim import SGD, Adam, clip_by_global_norm


def small_model(seed=0, embedding=0):
    config = {**GatedPixelCNN.default_config(), "channels": 8, "layers": 2,
              "head_channels": 16, "embedding": embedding}
    return GatedPixelCNN(config, seed=seed)


@pytest.fixture(scope="module")
def mnist_small():
    images, labels = load_mnist("train")
    return images[:2000, :, :14, :14], labels[:2000]


@pytest.mark.parametrize("embedding", [0, 4])
def test_loss_falls_on_real_mnist(mnist_small, embedding):
    images, _ = mnist_small
    model = small_model(embedding=embedding)
    batch_fn, _ = make_batch_fn(images, 16, seed=0)
    state = fit(model, Adam(3e-3), batch_fn, max_steps=60, progress=False)
    losses = np.array(state["losses"])
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    assert state["stopped"] == "max_steps" and state["step"] == 60


@pytest.mark.parametrize("optimizer_cls", [Adam, SGD])
def test_resume_gives_the_same_losses(tmp_path, mnist_small, optimizer_cls):
    images, _ = mnist_small
    batch_fn, _ = make_batch_fn(images, 8, seed=3)

    model = small_model()
    full = fit(model, optimizer_cls(1e-3), batch_fn, max_steps=8, progress=False,
               clip_norm=1.0, schedule="cosine")

    # The same run, interrupted by Ctrl-C (SIGINT) during step 4: it finishes
    # that step, writes its checkpoint and stops.
    def interrupted_batch_fn(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return batch_fn(step)

    path = tmp_path / "checkpoint.npz"
    first = small_model()
    stopped = fit(first, optimizer_cls(1e-3), interrupted_batch_fn, max_steps=8,
                  progress=False, clip_norm=1.0, schedule="cosine",
                  checkpoint_path=path)
    assert stopped["stopped"] == "interrupted" and stopped["step"] == 4
    optimizer = optimizer_cls(1e-3)
    resumed_model, state = load_checkpoint(path, optimizer)
    resumed = fit(resumed_model, optimizer, batch_fn, max_steps=8, progress=False,
                  clip_norm=1.0, schedule="cosine", state=state)

    assert resumed["losses"] == full["losses"]
    for name, value in model.params.items():
        np.testing.assert_array_equal(resumed_model.params[name], value)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, mnist_small):
    images, _ = mnist_small
    model = small_model()
    path = tmp_path / "checkpoint.npz"
    batch_fn, _ = make_batch_fn(images, 8, seed=0)
    fit(model, Adam(1e-3), batch_fn, max_steps=3, progress=False,
        checkpoint_path=path)
    saved = {k: v.copy() for k, v in model.params.items()}

    model.params["head2.b"][:] = np.nan  # poison the model
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        fit(model, Adam(1e-3), batch_fn, max_steps=6, progress=False,
            checkpoint_path=path, state={"step": 3, "checkpoint_step": 3})
    reloaded, state = load_checkpoint(path)
    assert state["step"] == 3
    for name, value in saved.items():
        np.testing.assert_array_equal(reloaded.params[name], value)


def test_clip_by_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert grads["a"][0] == pytest.approx(0.6)
    assert grads["b"][0, 0] == pytest.approx(0.8)
    assert clip_by_global_norm({"a": np.array([np.inf])}, 1.0) == np.inf


def test_adam_first_step_by_hand():
    params = {"w": np.array([1.0, -2.0])}
    Adam(lr=0.1).step(params, {"w": np.array([0.5, -3.0])})
    # After one step m_hat = g and v_hat = g^2, so the update is lr * sign(g).
    np.testing.assert_allclose(params["w"], [0.9, -1.9], rtol=1e-6)


def test_optimizer_errors():
    with pytest.raises(ValueError, match="learning rate"):
        Adam(lr=-1)
    with pytest.raises(ValueError, match="beta1"):
        Adam(beta1=1.0)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=2)


def test_checkpoint_errors(tmp_path):
    model = small_model()
    path = tmp_path / "model.npz"
    save(model, path)
    assert load(path).n_params() == model.n_params()
    with pytest.raises(ValueError, match="expected 'wavenet'"):
        load(path, kind="wavenet")

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable npar checkpoint"):
        load(truncated)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, w=np.zeros(3))
    with pytest.raises(ValueError, match="no '__npar__' header"):
        load(foreign)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load(tmp_path / "missing.npz")

    # A checkpoint of another configuration does not load into this one.
    other = GatedPixelCNN({**model.config, "channels": 4})
    with pytest.raises(ValueError, match="shape"):
        GatedPixelCNN(model.config, params=other.params)

    save_checkpoint(path, model, Adam(1e-3), {"step": 1})
    with pytest.raises(ValueError, match="optimizer"):
        load_checkpoint(path, SGD(1e-3))


def _rewrite(path, target, **changes):
    # A copy of the npz file at path with some arrays replaced.
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize("change, message", [
    (dict(__npar__=np.array("[1, 2]")), "damaged '__npar__' header"),
    (dict(__npar__=np.array('{"kind": "gated_pixelcnn", "format": 1}')),
     "damaged '__npar__' header"),
    (dict(__npar__=np.array('{"kind": "gated_pixelcnn", "config": {}, '
                            '"format": 1}')),
     "config of the 'gated_pixelcnn' model lacks the key 'image_channels'"),
    ({"head2.b": np.full(256, "a")}, "parameter head2.b has dtype <U1"),
    ({"head2.b": np.full(256, np.nan, np.float32)},
     "parameter head2.b holds 256 NaN or infinite value"),
])
def test_damaged_checkpoints_are_clear_errors(tmp_path, change, message):
    # These used to end in KeyError / AttributeError tracebacks, or (NaN
    # weights) in finite logits, since the ReLU kernel maps NaN to 0.
    path = tmp_path / "model.npz"
    save_checkpoint(path, small_model(), Adam(1e-3), {"step": 1})
    damaged = _rewrite(path, tmp_path / "damaged.npz", **change)
    with pytest.raises(ValueError, match=message):
        load(damaged)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(damaged)


def test_checkpoint_permissions_follow_the_umask(tmp_path):
    # The temporary file of the atomic write is private (0600); the
    # checkpoint it becomes should not be.
    previous = os.umask(0o022)
    try:
        save(small_model(), tmp_path / "model.npz")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.npz").stat().st_mode & 0o777 == 0o644


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "checkpoint.npz"
    save(model, path)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match=r"could not write .*checkpoint.npz \(the "
                       r"previous file is kept\): disk full"):
        save(small_model(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


def test_cli_train_eval_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "pixelcnn", "--channels", "4", "--layers", "1",
              "--head-channels", "8", "--batch-size", "4", "--test-limit", "8",
              "--samples", "0", "--no-progress", "--out", str(out)]
    assert main(common + ["--max-steps", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_bpd", "train_bpd", "images_per_s", "params", "wall_s"):
        assert key in metrics
    assert metrics["steps"] == 2 and math.isfinite(metrics["test_bpd"])
    assert main(common + ["--max-steps", "4", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4

    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint.npz"), "--limit", "8",
                 "--no-progress"]) == 0
    assert "test bits/dim" in capsys.readouterr().out

    assert main(["eval", str(tmp_path / "nothing.npz")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert os.path.exists(out / "checkpoint.npz")


@pytest.mark.parametrize("option, message", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--batch-size", "-4"], "--batch-size must be an integer >= 1, got -4"),
    (["--max-steps", "0"], "--max-steps must be an integer >= 1, got 0"),
    (["--epochs", "-1"], "--epochs must be a finite number > 0, got -1.0"),
    (["--time-budget", "inf"], "--time-budget must be a finite number > 0"),
    (["--clip", "nan"], "--clip must be a finite number >= 0, got nan"),
    (["--clip", "-1"], "--clip must be a finite number >= 0, got -1.0"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--test-limit", "-5"], "--test-limit must be an integer >= 1, got -5"),
    (["--samples", "-1"], "--samples must be an integer >= 0, got -1"),
    (["--head-channels", "0"], "--head-channels must be an integer >= 1, got 0"),
    (["--embedding", "-1"], "--embedding must be an integer >= 0, got -1"),
])
def test_cli_train_names_bad_option_values(tmp_path, capsys, option, message):
    # Before: ZeroDivisionError tracebacks, "batch size -4 exceeds the 60000
    # training images", a clip of -1 or NaN taken as "off", a test limit of
    # -5 evaluating all but 5 images.
    assert main(["train", "pixelcnn", "--out", str(tmp_path / "run"),
                 "--no-progress", *option]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--limit", "0"], "--limit must be an integer >= 1, got 0"),
    (["--limit", "-5"], "--limit must be an integer >= 1, got -5"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--batch-size", "-1"], "--batch-size must be an integer >= 1, got -1"),
])
def test_cli_eval_names_bad_option_values(tmp_path, capsys, option, message):
    # Before: an IndexError traceback (--limit 0), all but 5 images (-5), and
    # "test bits/dim 0.0000" from a batch size of -1 that evaluated nothing.
    save(small_model(), tmp_path / "model.npz")
    assert main(["eval", str(tmp_path / "model.npz"), "--no-progress",
                 *option]) == 1
    assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate_nll(lambda batch: 1.0, np.zeros(4), batch_size=-1)


def test_cli_eval_refuses_models_that_are_not_for_mnist(tmp_path, capsys):
    # Before: "images must have shape (N, 3, H, W), got (250, 1, 28, 28)".
    rgb = {"image_channels": 3, "channels": 6, "head_channels": 6}
    for name, change in (("rgb", rgb), ("levels", {"levels": 300})):
        config = {**small_model().config, **change}
        save(GatedPixelCNN(config), tmp_path / f"{name}.npz")
        assert main(["eval", str(tmp_path / f"{name}.npz"), "--no-progress"]) == 1
        assert "npar eval scores MNIST (1 channel, 2..256 levels)" in \
            capsys.readouterr().err


def test_cli_eval_scores_a_model_of_fewer_levels_on_reduced_intensities(
        tmp_path, capsys):
    model = GatedPixelCNN({**small_model().config, "levels": 4})
    save(model, tmp_path / "four.npz")
    assert main(["eval", str(tmp_path / "four.npz"), "--limit", "3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    images = quantize(load_mnist("test")[0][:3], 4)
    assert images.max() == 3
    expected = -model.log_prob(images).sum() / (images.size * np.log(2))
    assert f"test bits/dim {expected:.4f} over 4 levels on 3 images" in printed


def test_quantize_reduces_levels_and_names_bad_values():
    x = np.array([0, 63, 64, 127, 128, 255], np.uint8)
    assert quantize(x, 4).tolist() == [0, 0, 1, 1, 2, 3]
    assert quantize(x, 2).tolist() == [0, 0, 0, 0, 1, 1]
    assert quantize(x, 256) is x
    with pytest.raises(ValueError, match="levels must be an integer in 2..256, "
                       "got 1"):
        quantize(x, 1)
    with pytest.raises(ValueError, match="must be uint8"):
        quantize(x.astype(np.int64), 4)


def test_cli_resume_keeps_its_options(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "pixelcnn", "--channels", "4", "--layers", "1",
              "--head-channels", "8", "--batch-size", "4", "--samples", "0",
              "--no-progress", "--out", str(out)]
    assert main(common + ["--max-steps", "1", "--test-limit", "8"]) == 0
    capsys.readouterr()

    # Options that differ from the run's are refused, not ignored.
    assert main(["train", "pixelcnn", "--out", str(out), "--resume", "--lr",
                 "0.1", "--seed", "5", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--lr 0.1 (the run has 0.003)" in err and "--seed 5 (the run has 0)" in err

    # The test limit is part of the run: a bare --resume keeps it.
    assert main(["train", "pixelcnn", "--out", str(out), "--resume",
                 "--max-steps", "2", "--samples", "0", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["test_images"] == 8

    # A WaveNet run's folder is not resumed as a PixelCNN.
    from npar.models.wavenet import WaveNet

    other = tmp_path / "wavenet"
    save_checkpoint(other / "checkpoint.npz", WaveNet(dict(layers=2), seed=0),
                    Adam(3e-3), {"step": 1, "seed": 0, "options": {}})
    assert main(["train", "pixelcnn", "--out", str(other), "--resume",
                 "--no-progress"]) == 1
    assert "holds a 'wavenet' model, not a PixelCNN" in capsys.readouterr().err


def test_cli_train_on_a_crop_at_fewer_levels(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "small"
    assert main(["train", "pixelcnn", "--channels", "4", "--layers", "1",
                 "--head-channels", "8", "--batch-size", "4", "--max-steps", "2",
                 "--test-limit", "5", "--samples", "2", "--crop", "8",
                 "--levels", "2", "--no-progress", "--out", str(out)]) == 0
    assert "over 2 levels on 5 images" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["levels"] == 2
    assert metrics["config"]["image_size"] == [8, 8]
    # Bits/dim over 2 levels: about 1 bit for a model near uniform.
    assert 0 < metrics["test_bpd"] < 1.5
    model, _ = load_checkpoint(str(out / "checkpoint.npz"))
    test = quantize(load_mnist("test")[0][:5, :, 10:18, 10:18], 2)
    expected = -model.log_prob(test).sum() / (test.size * np.log(2))
    assert metrics["test_bpd"] == pytest.approx(expected, rel=1e-5)
    # Two 8 x 8 samples side by side with 1-pixel borders, upscaled 2x.
    with Image.open(out / "samples.png") as picture:
        assert picture.size == (2 * (1 + 8 + 1 + 8 + 1), 2 * (1 + 8 + 1))
        assert set(np.unique(np.asarray(picture))) <= {0, 128, 255}
    # npar eval and npar sample use the crop and the levels of the model.
    assert main(["eval", str(out / "checkpoint.npz"), "--limit", "5",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (f"test bits/dim {expected:.4f} over 2 levels on 5 images "
            "(central 8x8 crops)") in printed
    assert main(["sample", str(out / "checkpoint.npz"), "--n", "2", "--out",
                 str(tmp_path / "again.png"), "--no-progress"]) == 0
    with Image.open(tmp_path / "again.png") as picture:
        assert picture.size == (38, 20)
    # On resume, giving the values the run already uses is no change.
    assert main(["train", "pixelcnn", "--resume", "--out", str(out), "--crop",
                 "8", "--levels", "2", "--channels", "4", "--max-steps", "3",
                 "--samples", "0", "--no-progress"]) == 0
    assert main(["train", "pixelcnn", "--resume", "--out", str(out), "--crop",
                 "10", "--max-steps", "4", "--samples", "0",
                 "--no-progress"]) == 1
    assert "--crop 10 (the run has 8)" in capsys.readouterr().err
    for option, message in (
            (["--crop", "29"], "--crop must lie in 1..28 for 28x28 MNIST images"),
            (["--crop", "0"], "--crop must lie in 1..28"),
            (["--levels", "1"], "--levels must lie in 2..256, got 1"),
            (["--levels", "0"], "--levels must lie in 2..256, got 0"),
            (["--levels", "300"], "--levels must lie in 2..256")):
        assert main(["train", "pixelcnn", "--max-steps", "1", "--out",
                     str(tmp_path / "bad"), *option]) == 1
        assert message in capsys.readouterr().err
    # Refused before anything is written.
    assert not (tmp_path / "bad").exists()


def test_cli_train_with_a_level_embedding(tmp_path, capsys):
    out = tmp_path / "embedded"
    common = ["--channels", "4", "--layers", "1", "--head-channels", "8",
              "--batch-size", "4", "--test-limit", "3", "--crop", "6",
              "--no-progress", "--out", str(out)]
    assert main(["train", "pixelcnn", "--embedding", "3", "--max-steps", "2",
                 "--samples", "2", *common]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["embedding"] == 3
    model, _ = load_checkpoint(str(out / "checkpoint.npz"))
    assert model.params["embed.w"].shape == (1, 256, 3)
    assert main(["eval", str(out / "checkpoint.npz"), "--limit", "3",
                 "--no-progress"]) == 0
    capsys.readouterr()
    # The embedding is part of the model: a resume may not change it.
    assert main(["train", "pixelcnn", "--resume", "--embedding", "2",
                 "--max-steps", "3", "--samples", "0", *common]) == 1
    assert "--embedding 2 (the run has 3)" in capsys.readouterr().err
    assert main(["train", "pixelcnn", "--resume", "--embedding", "3",
                 "--max-steps", "3", "--samples", "0", *common]) == 0


def test_central_crop_takes_the_middle_window():
    images = np.arange(2 * 1 * 5 * 6).reshape(2, 1, 5, 6)
    crop = central_crop(images, 3)
    assert crop.shape == (2, 1, 3, 3) and crop.flags.c_contiguous
    np.testing.assert_array_equal(crop, images[:, :, 1:4, 1:4])
    # An odd margin: half a pixel above and left of the centre.
    np.testing.assert_array_equal(central_crop(images, (2, 5)),
                                  images[:, :, 1:3, 0:5])
    assert central_crop(images, None) is images
    with pytest.raises(ValueError, match="crop 6x6 must fit in the 5x6 images"):
        central_crop(images, 6)


def test_metrics_are_written_whole_or_not_at_all(tmp_path):
    from npar.commands import write_json_atomic

    path = tmp_path / "metrics.json"
    write_json_atomic({"a": 1}, path)
    with pytest.raises(TypeError):
        write_json_atomic({"b": object()}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

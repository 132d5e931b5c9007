"""``npar train wavenet`` and ``npar generate`` on tiny models and a few
seconds of synthetic audio: outputs, metrics, the held-out split, exact
resume, clear errors."""

import json
import os

import numpy as np
import pytest
from scipy.io import wavfile

from npar.cli import main
from npar.commands.train_wavenet import (
    entropy_bits,
    make_batch_fn,
    split_codes,
)

TINY = ["--channels", "4", "--skip-channels", "6", "--head-channels", "8",
        "--layers", "3", "--crop", "64", "--batch-size", "2", "--no-progress"]


@pytest.fixture
def audio_dir(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        t = np.arange(4000) / 8000
        x = 0.3 * np.sin(2 * np.pi * (200 + 50 * index) * t)
        x += 0.05 * rng.standard_normal(len(t))
        wavfile.write(folder / f"clip{index}.wav", 8000,
                      np.round(x * 32767).astype(np.int16))
    return folder


def _train(audio_dir, out, *extra):
    return main(["train", "wavenet", "--audio", str(audio_dir), "--sample-rate",
                 "8000", "--out", str(out), *TINY, *extra])


def test_train_writes_everything(audio_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(audio_dir, out, "--max-steps", "3",
                  "--generate-seconds", "0.05") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_bits_per_sample", "receptive_field", "params", "wall_s",
                "baseline_code_entropy_bits", "baseline_diff_entropy_bits"):
        assert np.isfinite(metrics[key]), key
    assert metrics["receptive_field"] == 2 + 7 + 1
    assert metrics["steps"] == 3
    assert (out / "checkpoint.npz").exists()
    rate, data = wavfile.read(out / "generated.wav")
    assert rate == 8000 and data.dtype == np.int16
    assert len(data) == 9 + 400  # seed context + 0.05 s
    pytest.importorskip("matplotlib")
    assert (out / "spectrogram.png").stat().st_size > 1000


def test_resume_continues_exactly(audio_dir, tmp_path):
    # A constant learning rate, so that the run cut at step 2 (whose
    # schedule was planned for 2 steps) matches the one planned for 4.
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(audio_dir, straight, "--max-steps", "4", "--schedule",
                  "constant", "--generate-seconds", "0") == 0
    assert _train(audio_dir, split, "--max-steps", "2", "--schedule", "constant",
                  "--generate-seconds", "0") == 0
    assert main(["train", "wavenet", "--out", str(split), "--resume",
                 "--max-steps", "4", "--generate-seconds", "0",
                 "--no-progress"]) == 0
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((split / "metrics.json").read_text())
    assert b["steps"] == 4
    assert a["test_bits_per_sample"] == b["test_bits_per_sample"]


def test_generate_command(audio_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(audio_dir, out, "--max-steps", "1",
                  "--generate-seconds", "0") == 0
    wav = tmp_path / "gen.wav"
    for engine in ("cached", "naive"):
        assert main(["generate", str(out / "checkpoint.npz"), "--seconds", "0.01",
                     "--out", str(wav), "--engine", engine, "--seed", "3"]) == 0
        rate, data = wavfile.read(wav)
        assert rate == 8000 and len(data) == 80
        if engine == "cached":
            first = data.copy()
    np.testing.assert_array_equal(first, data)
    assert main(["generate", str(out / "checkpoint.npz"), "--seconds", "0.01",
                 "--out", str(wav), "--prompt", str(audio_dir / "clip0.wav"),
                 "--include-prompt"]) == 0
    assert len(wavfile.read(wav)[1]) == 4000 + 80


def test_errors_are_reported(audio_dir, tmp_path, capsys):
    assert main(["generate", str(tmp_path / "none.npz"), "--seconds", "1",
                 "--out", str(tmp_path / "x.wav")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    short = tmp_path / "short"
    short.mkdir()
    wavfile.write(short / "a.wav", 8000, np.zeros(5, dtype=np.int16))
    wavfile.write(short / "b.wav", 8000, np.zeros(5, dtype=np.int16))
    assert _train(short, tmp_path / "r", "--max-steps", "1") == 1
    assert "shorter than the receptive field" in capsys.readouterr().err
    assert main(["train", "wavenet", "--out", str(tmp_path / "nothing"),
                 "--resume", "--no-progress"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [
    (["--crop", "0"], "--crop must be an integer >= 1, got 0"),
    (["--batch-size", "-2"], "--batch-size must be an integer >= 1, got -2"),
    (["--sample-rate", "0"], "--sample-rate must be an integer >= 1, got 0"),
    (["--time-budget", "nan"], "--time-budget must be a finite number > 0"),
    (["--clip", "-1"], "--clip must be a finite number >= 0, got -1.0"),
    (["--temperature", "inf"], "--temperature must be a finite number >= 0"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
])
def test_train_names_bad_option_values(audio_dir, tmp_path, capsys, option,
                                       message):
    assert _train(audio_dir, tmp_path / "r", *option) == 1
    assert message in capsys.readouterr().err


def test_resume_refuses_changed_options(audio_dir, tmp_path, capsys):
    # They used to be ignored without a word: the run went on with the saved
    # ones.
    out = tmp_path / "run"
    assert _train(audio_dir, out, "--max-steps", "1", "--generate-seconds",
                  "0") == 0
    capsys.readouterr()
    assert main(["train", "wavenet", "--out", str(out), "--resume", "--lr",
                 "0.1", "--crop", "32", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--lr 0.1 (the run has 0.002)" in err and "--crop 32" in err
    # The same values as saved are fine.
    assert _train(audio_dir, out, "--resume", "--max-steps", "2",
                  "--generate-seconds", "0") == 0


@pytest.mark.parametrize("option, message", [
    (["--seconds", "inf"], "--seconds must be a finite number > 0, got inf"),
    (["--seconds", "0"], "--seconds must be a finite number > 0, got 0.0"),
    (["--sample-rate", "0"], "--sample-rate must be an integer >= 1, got 0"),
    (["--sample-rate", "-5"], "--sample-rate must be an integer >= 1, got -5"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
])
def test_generate_names_bad_option_values(tmp_path, capsys, option, message):
    # Checked before the checkpoint is read; --sample-rate 0 used to fall back
    # to 16000 silently, -5 and inf to end in a traceback.
    assert main(["generate", str(tmp_path / "none.npz"), "--seconds", "0.1",
                 "--out", str(tmp_path / "x.wav"), *option]) == 1
    assert message in capsys.readouterr().err


def test_held_out_files_never_reach_training():
    codes = [np.full(100, i, dtype=np.int64) for i in range(10)]
    train, test = split_codes(codes, 0.2, field=5)
    assert len(test) == 2 and len(train) == 8
    held = {int(q[0]) for q in test}
    batch_fn = make_batch_fn(train, batch_size=8, length=20, seed=1)
    for step in range(50):
        (batch,) = batch_fn(step)
        assert not held & set(np.unique(batch).tolist())
        np.testing.assert_array_equal(batch, batch_fn(step)[0])  # pure
    # One file: its end is held out, the crops come from before it.
    train, test = split_codes([np.arange(100)], 0.1, field=15)
    assert len(test[0]) == 15 and train[0][-1] < test[0][0]
    with pytest.raises(ValueError, match="test fraction must lie in"):
        split_codes(codes, 1.0, field=5)


def test_entropy_baseline():
    assert entropy_bits([3, 3, 3]) == 0.0
    assert entropy_bits([0, 1, 2, 3]) == pytest.approx(2.0)


def test_out_folder_is_only_written_where_asked(audio_dir, tmp_path):
    out = tmp_path / "deep" / "run"
    assert _train(audio_dir, out, "--max-steps", "1", "--generate-seconds", "0") == 0
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.json"]

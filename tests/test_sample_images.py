"""Sample pictures (grids, growth strips) and the ``npar sample`` command."""

import numpy as np
import pytest
from PIL import Image

from npar.cli import main
from npar.models.io import load, save
from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.sampling.images import growth_frames, image_grid, save_grid, save_png
from npar.sampling.pixelcnn import generate


def test_grid_layout_by_hand():
    images = np.array([[[[1, 2]]], [[[3, 4]]], [[[5, 6]]]], dtype=np.uint8)
    grid = image_grid(images, columns=2, padding=1, separator=9)
    # Two rows of 1x2 tiles, separated and framed by one line of 9s; the
    # missing fourth tile stays 9.
    assert grid.tolist() == [
        [9, 9, 9, 9, 9, 9, 9],
        [9, 1, 2, 9, 3, 4, 9],
        [9, 9, 9, 9, 9, 9, 9],
        [9, 5, 6, 9, 9, 9, 9],
        [9, 9, 9, 9, 9, 9, 9],
    ]


def test_grid_upscales_each_pixel_into_a_square():
    images = np.array([[[[0, 255]]]], dtype=np.uint8)
    grid = image_grid(images, padding=0, scale=3)
    assert grid.shape == (3, 6)
    assert (grid[:, :3] == 0).all() and (grid[:, 3:] == 255).all()


def test_grid_of_rgb_images_and_other_levels():
    images = np.zeros((2, 3, 2, 2), dtype=np.int64)
    images[1, 0] = 3  # red, at the top level of V = 4
    grid = image_grid(images, columns=2, padding=0, levels=4)
    assert grid.shape == (2, 4, 3)
    assert grid[:, 2:, 0].tolist() == [[255, 255], [255, 255]]
    assert (grid[:, :2] == 0).all() and (grid[:, 2:, 1:] == 0).all()


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 2, 4, 4), np.uint8), ValueError),   # two channels
    (np.zeros((1, 1, 4, 4), np.float32), TypeError),
    (np.full((1, 1, 2, 2), 300), ValueError),
])
def test_grid_rejects_bad_images(bad, error):
    with pytest.raises(error):
        image_grid(bad)


def test_growth_frames_mark_undrawn_sub_pixels():
    snapshots = np.zeros((2, 1, 1, 2, 2), dtype=np.uint8)
    snapshots[0, 0, 0, 0, 0] = 10
    snapshots[1, 0, 0] = [[10, 20], [30, 40]]
    frames = growth_frames(snapshots, np.array([1, 4]), undrawn=128)
    assert frames[0, 0].tolist() == [[10, 128], [128, 128]]
    assert frames[1, 0].tolist() == [[10, 20], [30, 40]]


def test_save_grid_writes_a_png(tmp_path):
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    path = save_grid(images, tmp_path / "grid.png", scale=2)
    picture = np.array(Image.open(path))
    np.testing.assert_array_equal(picture, image_grid(images, scale=2))


def test_growth_strip_from_a_real_generation(tmp_path):
    config = GatedPixelCNN.default_config()
    config.update(channels=4, layers=2, head_channels=8)
    model = GatedPixelCNN(config, seed=0)
    run = generate(model, 2, np.random.default_rng(0), size=(4, 4),
                   snapshot_every=5)
    frames = growth_frames(run.snapshots, run.snapshot_steps, index=1)
    assert run.snapshot_steps.tolist() == [5, 10, 15, 16]
    np.testing.assert_array_equal(frames[-1], run.images[1])


@pytest.fixture
def checkpoints(tmp_path):
    config = GatedPixelCNN.default_config()
    config.update(channels=4, layers=2, head_channels=8)
    save(GatedPixelCNN(config, seed=0), tmp_path / "gated.npz")
    config.update(classes=3)
    save(GatedPixelCNN(config, seed=0), tmp_path / "conditional.npz")
    plain = PixelCNN.default_config()
    plain.update(channels=4, layers=1, head_channels=8)
    save(PixelCNN(plain, seed=0), tmp_path / "plain.npz")
    return tmp_path


def test_sample_command_writes_the_grid_and_the_strip(checkpoints, capsys):
    out = checkpoints / "s.png"
    steps = checkpoints / "steps.png"
    status = main(["sample", str(checkpoints / "gated.npz"), "--n", "4", "--out",
                   str(out), "--size", "6", "6", "--scale", "1", "--steps-png",
                   str(steps), "--steps-every", "9", "--top-k", "50",
                   "--no-progress"])
    assert status == 0
    # 2 x 2 tiles of 6 x 6 with 1-pixel lines: 15 x 15.
    assert Image.open(out).size == (15, 15)
    # 36 sub-pixels, a frame every 9: 4 frames in one row, 4 * 7 + 1 wide.
    assert Image.open(steps).size == (29, 8)
    assert "4 images of 6x6" in capsys.readouterr().out


def test_sample_command_same_seed_same_picture_for_both_engines(checkpoints):
    pictures = []
    for engine in ("cached", "naive"):
        out = checkpoints / f"{engine}.png"
        assert main(["sample", str(checkpoints / "plain.npz"), "--n", "2",
                     "--size", "5", "5", "--engine", engine, "--seed", "3",
                     "--out", str(out), "--no-progress"]) == 0
        pictures.append(np.array(Image.open(out)))
    np.testing.assert_array_equal(pictures[0], pictures[1])


def test_sample_command_grid_per_class(checkpoints):
    out = checkpoints / "classes.png"
    assert main(["sample", str(checkpoints / "conditional.npz"), "--n", "2",
                 "--grid-per-class", "--size", "4", "4", "--scale", "1",
                 "--out", str(out), "--no-progress"]) == 0
    # Three rows (classes) of two tiles: 3 * 5 + 1 high, 2 * 5 + 1 wide.
    assert Image.open(out).size == (11, 16)


def test_sample_command_with_guidance(checkpoints, capsys):
    conditional = str(checkpoints / "conditional.npz")
    gated = str(checkpoints / "gated.npz")
    out = checkpoints / "guided.png"
    assert main(["sample", conditional, "--class", "2", "--n", "3", "--size", "4",
                 "4", "--guidance", "2.5", "--unconditional", gated, "--out",
                 str(out), "--no-progress"]) == 0
    assert "guidance 2.5" in capsys.readouterr().out
    model, unconditional = load(conditional), load(gated)
    expected = generate(model, 3, np.random.default_rng(0), size=(4, 4), labels=2,
                        guidance=2.5, unconditional=unconditional).images
    reference = checkpoints / "reference.png"
    save_grid(expected, reference, scale=2)
    np.testing.assert_array_equal(np.array(Image.open(out)),
                                  np.array(Image.open(reference)))
    for options, message in [
        (["--guidance", "2"], "--guidance and --unconditional go together"),
        (["--unconditional", gated], "--guidance and --unconditional go together"),
        (["--guidance", "2", "--unconditional", conditional],
         "no classes, got one with 3 classes"),
        (["--guidance", "-1", "--unconditional", gated], "w >= 0, got w = -1.0"),
    ]:
        assert main(["sample", conditional, "--class", "1", "--size", "3", "3",
                     "--out", str(out), "--no-progress", *options]) == 1
        assert message in capsys.readouterr().err
    # Models trained on different sizes: refused unless --size names one.
    small = GatedPixelCNN.default_config()
    small.update(channels=4, layers=2, head_channels=8, image_size=[8, 8])
    save(GatedPixelCNN(small, seed=1), checkpoints / "small.npz")
    options = ["sample", conditional, "--class", "1", "--guidance", "2",
               "--unconditional", str(checkpoints / "small.npz"), "--out", str(out),
               "--no-progress"]
    assert main(options) == 1
    assert "give --size H W" in capsys.readouterr().err
    assert main(options + ["--size", "4", "4"]) == 0
    # The weight is checked before the unconditional checkpoint is read.
    assert main(["sample", conditional, "--guidance", "nan", "--unconditional",
                 str(checkpoints / "missing.npz"), "--out", str(out)]) == 1
    assert "w = nan" in capsys.readouterr().err
    assert main(["sample", gated, "--guidance", "2", "--unconditional", gated,
                 "--out", str(out), "--no-progress"]) == 1
    assert "needs a class-conditional model" in capsys.readouterr().err


def test_sample_command_errors(checkpoints, capsys):
    gated = str(checkpoints / "gated.npz")
    out = str(checkpoints / "x.png")
    assert main(["sample", gated, "--class", "1", "--out", out]) == 1
    assert "unconditional" in capsys.readouterr().err
    assert main(["sample", str(checkpoints / "conditional.npz"), "--class", "3",
                 "--out", out]) == 1
    assert "0..2" in capsys.readouterr().err
    assert main(["sample", gated, "--top-k", "0", "--out", out]) == 1
    assert "k = 0" in capsys.readouterr().err
    assert main(["sample", str(checkpoints / "missing.npz"), "--out", out]) == 1


@pytest.mark.parametrize("option, message", [
    (["--steps-png", "s.png", "--steps-every", "0"],
     "--steps-every must be an integer >= 1, got 0"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
])
def test_sample_command_names_bad_option_values(checkpoints, capsys, option,
                                                message):
    assert main(["sample", str(checkpoints / "gated.npz"), "--n", "1", "--out",
                 str(checkpoints / "x.png"), *option, "--no-progress"]) == 1
    assert message in capsys.readouterr().err


def test_sample_command_reports_an_unwritable_out_in_one_line(checkpoints,
                                                               capsys):
    folder = checkpoints / "a_folder.png"
    folder.mkdir()
    assert main(["sample", str(checkpoints / "gated.npz"), "--n", "1", "--size",
                 "2", "2", "--out", str(folder), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("npar sample: error: ")
    assert f"--out {folder} is a folder" in err
    assert err.count("\n") == 1


def test_sample_command_checks_steps_png_before_writing_anything(checkpoints,
                                                                 capsys):
    folder = checkpoints / "frames"
    folder.mkdir()
    out = checkpoints / "main.png"
    assert main(["sample", str(checkpoints / "gated.npz"), "--n", "1", "--size",
                 "2", "2", "--out", str(out), "--steps-png", str(folder),
                 "--no-progress"]) == 1
    assert f"--steps-png {folder} is a folder" in capsys.readouterr().err
    assert not out.exists()


def test_save_png_is_atomic(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    path = tmp_path / "grid.png"
    old = np.full((2, 3), 7, np.uint8)
    save_png(old, path)

    def failing_save(self, fp, format=None, **kwargs):
        fp.write(b"\x89PNG half")  # half a picture, then the disk is full
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((4, 4), np.uint8), path)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.array(Image.open(path)), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]

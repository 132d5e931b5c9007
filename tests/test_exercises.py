"""Backward-pass exercises: the reference solutions pass, hand-written
correct solutions pass, broken ones fail with the wrong gradient named, and
the command line writes and grades the files."""

import textwrap

import pytest

from npar import exercises
from npar.cli import main

# Bodies of backward(dy, cache), as a learner would write them. Each
# replaces the NotImplementedError stub of the starter file.
CORRECT = {
    "masked_conv2d": """
        x, w, b, mask, padding = cache
        top, bottom, left, right = padding
        k_h, k_w = w.shape[2], w.shape[3]
        h_out, w_out = dy.shape[2], dy.shape[3]
        x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        w_masked = w * mask
        dx_pad = np.zeros_like(x_pad)
        dw = np.zeros_like(w)
        for p in range(k_h):
            for q in range(k_w):
                window = x_pad[:, :, p:p + h_out, q:q + w_out]
                dw[:, :, p, q] = np.einsum("noij,ncij->oc", dy, window)
                dx_pad[:, :, p:p + h_out, q:q + w_out] += np.einsum(
                    "oc,noij->ncij", w_masked[:, :, p, q], dy)
        dw *= mask
        dx = dx_pad[:, :, top:top + x.shape[2], left:left + x.shape[3]]
        return dx, dw, dy.sum(axis=(0, 2, 3))
    """,
    "dilated_causal_conv1d": """
        x, w, b, dilation = cache
        length, k_size = x.shape[2], w.shape[2]
        dx = np.zeros_like(x)
        dw = np.zeros_like(w)
        for k in range(k_size):
            shift = dilation * (k_size - 1 - k)
            if shift >= length:
                continue
            dw[:, :, k] = np.einsum("not,nct->oc", dy[:, :, shift:],
                                    x[:, :, :length - shift])
            dx[:, :, :length - shift] += np.einsum("oc,not->nct", w[:, :, k],
                                                   dy[:, :, shift:])
        return dx, dw, dy.sum(axis=(0, 2))
    """,
    "gated_activation": """
        x, t, s = cache
        da = dy * (1 - t * t) * s
        db = dy * t * s * (1 - s)
        return np.concatenate([da, db], axis=1)
    """,
    "softmax_cross_entropy": """
        logits, targets, prob = cache
        dz = prob * dnll[:, None]
        dz[np.arange(len(targets)), targets] -= dnll
        return dz
    """,
}

# (exercise, the line of the correct body to change, its broken version,
#  the gradients that must be named as wrong)
BROKEN = [
    ("masked_conv2d", "dw *= mask", "pass  # forgot the mask in dw", ["dw"]),
    ("masked_conv2d", '"oc,noij->ncij", w_masked[:, :, p, q], dy)',
     '"oc,noij->ncij", w[:, :, p, q], dy)  # raw weights', ["dx"]),
    ("masked_conv2d", "dy.sum(axis=(0, 2, 3))", "dy[0].sum(axis=(1, 2))", ["db"]),
    ("dilated_causal_conv1d", "dy.sum(axis=(0, 2))", "dy[:, :, 1:].sum(axis=(0, 2))",
     ["db"]),
    ("dilated_causal_conv1d", 'np.einsum("oc,not->nct", w[:, :, k],',
     'np.einsum("oc,not->nct", w[:, :, k_size - 1 - k],  # taps flipped',
     ["dx"]),
    ("dilated_causal_conv1d", "shift = dilation * (k_size - 1 - k)",
     "shift = dilation * (k_size - 1 - k) + 1  # off by one", ["dx", "dw"]),
    ("gated_activation", "db = dy * t * s * (1 - s)", "db = dy * t * s", ["dx"]),
    ("gated_activation", "return np.concatenate([da, db], axis=1)",
     "return np.concatenate([db, da], axis=1)", ["dx"]),
    ("softmax_cross_entropy", "dz[np.arange(len(targets)), targets] -= dnll",
     "dz[np.arange(len(targets)), targets] -= 1.0", ["dlogits"]),
]


def _solution_file(tmp_path, name, body, filename="mine.py"):
    starter = exercises.starter_source(name)
    lines = starter.splitlines(keepends=True)
    stub = [i for i, line in enumerate(lines) if "raise NotImplementedError" in line]
    assert len(stub) == 1
    # Drop the stub, its comment and the cache unpacking above it: the body
    # unpacks the cache itself.
    start = stub[0]
    while not lines[start - 1].lstrip().startswith('"""Grad'):
        start -= 1
    code = textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")
    path = tmp_path / filename
    path.write_text("".join(lines[:start]) + code + "".join(lines[stub[0] + 1:]))
    return path


def test_at_least_the_four_exercises_exist():
    assert {"masked_conv2d", "dilated_causal_conv1d", "gated_activation",
            "softmax_cross_entropy"} <= set(exercises.EXERCISES)


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_reference_solution_passes(tmp_path, name):
    path = exercises.write_solution(name, tmp_path / "reference.py")
    report = exercises.grade(name, path)
    assert report.ok, report.table()
    assert all(row.library_error == 0.0 for row in report.rows)
    assert all(row.gradcheck_error <= 1e-6 for row in report.rows)


@pytest.mark.parametrize("name", list(CORRECT))
def test_hand_written_solution_passes(tmp_path, name):
    report = exercises.grade(name, _solution_file(tmp_path, name, CORRECT[name]))
    assert report.ok, report.table()
    assert "PASS" in report.summary()


@pytest.mark.parametrize("name, line, broken, wrong", BROKEN)
def test_broken_solution_fails_naming_the_gradient(tmp_path, name, line, broken,
                                                   wrong):
    assert line in CORRECT[name]
    body = CORRECT[name].replace(line, broken)
    report = exercises.grade(name, _solution_file(tmp_path, name, body))
    assert not report.ok
    assert report.failed == wrong, report.table()
    summary = report.summary()
    for gradient in wrong:
        assert f"{gradient} is wrong" in summary
        assert "Hint:" in summary
    others = set(exercises.get(name).gradients.values()) - set(wrong)
    assert all(row.passed for row in report.rows if row.gradient in others)


def test_starter_is_not_a_solution(tmp_path):
    path = exercises.write_starter("masked_conv2d", tmp_path / "start.py")
    text = path.read_text()
    assert "raise NotImplementedError" in text and "conv2d_backward(" not in text
    assert "def forward(x, w, b, mask, padding)" in text
    report = exercises.grade("masked_conv2d", path)
    assert not report.ok and "not written yet" in report.summary()


def test_edited_forward_is_caught(tmp_path):
    body = CORRECT["gated_activation"]
    path = _solution_file(tmp_path, "gated_activation", body)
    path.write_text(path.read_text().replace("y = t * s", "y = t * s * 1.001"))
    report = exercises.grade("gated_activation", path)
    assert not report.ok and "forward pass differs" in report.table()


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown exercise 'conv3d'"):
        exercises.get("conv3d")
    with pytest.raises(FileNotFoundError):
        exercises.grade("gated_activation", tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("def forward(:\n")
    with pytest.raises(ValueError, match="does not import"):
        exercises.grade("gated_activation", bad)
    wrong_shape = _solution_file(tmp_path, "gated_activation",
                                 "x, t, s = cache\nreturn dy")
    report = exercises.grade("gated_activation", wrong_shape)
    assert report.failed == ["dx"] and "has shape" in report.summary()


def test_command_line_round_trip(tmp_path, capsys):
    start = tmp_path / "my_gate.py"
    assert main(["exercise", "gated_activation", "--start", str(start)]) == 0
    assert main(["exercise", "gated_activation", "--start", str(start)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["exercise", "gated_activation", "--check", str(start)]) == 1
    assert "not written yet" in capsys.readouterr().out

    mine = _solution_file(tmp_path, "gated_activation",
                          CORRECT["gated_activation"].replace("(1 - s)", "1"))
    assert main(["exercise", "gated_activation", "--check", str(mine)]) == 1
    assert "dx is wrong" in capsys.readouterr().out

    solution = tmp_path / "reference.py"
    assert main(["exercise", "gated_activation", "--solution",
                 str(solution)]) == 0
    assert main(["exercise", "gated_activation", "--check", str(solution)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["exercise"]) == 0
    assert "masked_conv2d" in capsys.readouterr().out

"""The gradient checker: every registered check passes, float32 and ReLU
kinks are refused or flagged, and deliberately broken backward passes
(built here by wrapping or patching, never by editing the library) fail
with the broken tensor named."""

import functools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npar
import npar.models.pixelcnn
from npar.cli import main
from npar.ops.activations import gate_backward, gate_forward, relu_forward
from npar.ops.conv2d import conv2d_backward, conv2d_backward_reference, conv2d_forward
from npar.ops.dense import dense_backward, dense_forward
from npar.ops.masks import causal_mask, channel_groups
from npar.verify.checks import CHECKS, Problem, check_names, run_check
from npar.verify.gradcheck import (
    FLOAT32_MESSAGE,
    GradcheckWarning,
    gradcheck,
    trace_relu_inputs,
)

# ---- the registry ---------------------------------------------------------


@pytest.mark.parametrize("name", check_names())
def test_registered_check_passes(name):
    report = run_check(name)
    assert report.ok, report.table()
    assert not report.vacuous, f"zero gradients check nothing: {report.vacuous}"
    assert max(row.max_rel_error for row in report.rows) <= 1e-6


def test_registry_covers_every_kernel_layer_and_model():
    names = set(check_names())
    for required in ("conv2d.mask_a", "conv2d.mask_b", "conv2d.dilated",
                     "conv2d.asymmetric_padding", "conv2d.1x1", "dense", "gate",
                     "relu", "softmax_cross_entropy", "shift_down",
                     "gated_pixelcnn", "pixelcnn"):
        assert required in names
    try:
        import npar.models.wavenet  # noqa: F401
    except ImportError:
        return
    assert {"conv1d.causal", "conv1d.dilated", "wavenet"} <= names


def test_model_checks_cover_all_parameters():
    from npar.models.pixelcnn import GatedPixelCNN, PixelCNN

    for name, cls in (("gated_pixelcnn", GatedPixelCNN), ("pixelcnn", PixelCNN)):
        report = run_check(name)
        config = cls.default_config()
        config.update(channels=6, layers=2, kernel=3, first_kernel=3,
                      head_channels=12, levels=4)
        expected = cls(config).params
        assert [row.name for row in report.rows] == list(expected)


# ---- refusals and warnings -------------------------------------------------


def _relu_problem(x):
    return relu_forward, lambda dy, cache: (cache > 0) * dy, {"x": x}


def test_float32_input_is_refused():
    x = np.linspace(-1, 1, 7).astype(np.float32) + 0.05
    with pytest.raises(TypeError, match="gradient checks need float64"):
        gradcheck(*_relu_problem(x))
    assert "float32 rounding ~1e-7 swamps the difference quotient" in FLOAT32_MESSAGE


def test_float32_output_and_gradient_are_refused():
    x = np.linspace(-1, 1, 6) + 0.05

    def forward32(x):
        return x.astype(np.float32) * 2, None

    with pytest.raises(TypeError, match="need float64.*forward pass returned"):
        gradcheck(forward32, lambda dy, c: 2 * dy, {"x": x})

    def backward32(dy, cache):
        return (2 * dy).astype(np.float32)

    with pytest.raises(TypeError, match="need float64.*gradient of 'x'"):
        gradcheck(lambda x: (2 * x, None), backward32, {"x": x})


def test_bad_inputs_get_clear_errors():
    with pytest.raises(TypeError, match="integer targets"):
        gradcheck(lambda t: (t * 1.0, None), lambda dy, c: dy,
                  {"t": np.arange(3)})
    with pytest.raises(ValueError, match="2 gradients for 1 inputs"):
        gradcheck(lambda x: (x, None), lambda dy, c: (dy, dy),
                  {"x": np.ones(3)})
    with pytest.raises(ValueError, match=r"no gradient for \['b'\]"):
        gradcheck(lambda a, b: (a * b, None), lambda dy, c: {"a": dy},
                  {"a": np.ones(3), "b": np.ones(3)})


def test_relu_kink_is_flagged_not_reported_as_a_wrong_gradient():
    x = np.random.default_rng(0).standard_normal((3, 4))
    x[1, 2] = 3e-7  # within eps = 1e-6 of the kink
    with pytest.warns(GradcheckWarning, match="within eps"):
        report = gradcheck(*_relu_problem(x))
    assert not report.ok
    assert report.kinks and "kink" in report.kinks[0]
    row = report.row("x")
    assert row.kink_crossings >= 1
    assert "'x' not checked" in report.summary()
    assert "KINK" in report.table()


def test_kink_inside_a_composite_forward_is_traced():
    # relu(x w^T + b) with b chosen so that one pre-activation is exactly 0.
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    b = rng.standard_normal(2)
    b[0] = -(x[0] @ w[0])

    def forward(w):
        z, dense_cache = dense_forward(x, w, b)
        y, relu_cache = relu_forward(z)
        return y, (dense_cache, relu_cache)

    def backward(dy, cache):
        dense_cache, z = cache
        return dense_backward(dy * (z > 0), dense_cache)[1]

    with pytest.warns(GradcheckWarning):
        report = gradcheck(forward, backward, {"w": w})
    assert not report.ok and report.kinks
    # Away from the kink the same pair passes.
    b[0] += 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradcheckWarning)
        assert gradcheck(forward, backward, {"w": w}).ok


def test_kinks_callback_and_tracer():
    x = np.array([[-0.5, 2e-7, 0.7]])
    forward, backward, inputs = _relu_problem(x)
    with pytest.warns(GradcheckWarning):
        report = gradcheck(forward, backward, inputs, kinks=lambda x: [x])
    assert report.kinks
    with trace_relu_inputs() as seen:
        relu_forward(np.ones((2, 2)))
    assert len(seen) == 1 and seen[0].shape == (4,)
    # kinks=None turns the check off: the kink then shows as a failure.
    report = gradcheck(forward, backward, inputs, kinks=None)
    assert not report.kinks and not report.ok


def test_large_tensors_use_directions_small_ones_all_entries():
    report = gradcheck(functools.partial(gate_forward, axis=1), gate_backward,
                       {"x": np.random.default_rng(2).standard_normal((2, 8, 5))},
                       max_entries=10, n_directions=5)
    assert report.ok and report.row("x").method == "5 directions"
    report = gradcheck(functools.partial(gate_forward, axis=1), gate_backward,
                       {"x": np.random.default_rng(2).standard_normal((1, 2, 3))})
    assert report.row("x").method == "all 6 entries"


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 120), k=st.integers(0, 10**6),
       seed=st.integers(0, 2**31 - 1), size=st.floats(1e-3, 1e2))
def test_any_single_wrong_entry_is_caught(m, n, k, seed, size):
    # f(x) = A x: the exact backward passes; one entry of dx off by a small
    # fraction of the largest gradient fails, and only x is named.
    rng = np.random.default_rng(seed)
    a_matrix = rng.standard_normal((m, n)) * size
    inputs = {"x": rng.standard_normal(n), "s": rng.standard_normal(m)}

    def forward(x, s):
        return a_matrix @ x + s, None

    def backward(dy, cache):
        return a_matrix.T @ dy, dy

    assert gradcheck(forward, backward, inputs, seed=seed).ok

    def broken(dy, cache):
        dx = a_matrix.T @ dy
        dx[k % n] += 1e-3 * (np.max(np.abs(dx)) + 1e-12)
        return dx, dy

    report = gradcheck(forward, broken, inputs, seed=seed)
    assert report.failed == ["x"], report.table()


def test_top_level_export():
    assert npar.gradcheck is gradcheck
    assert "gradcheck" in npar.__all__


# ---- mutations: broken backward passes that must be caught -----------------


def _check_broken(name, broken_backward, expected_failing, seed=0, forward=None):
    problem = CHECKS[name].build(np.random.default_rng(seed))
    report = gradcheck(forward or problem.forward, broken_backward(problem),
                       problem.inputs, seed=seed, title=f"{name} (broken)")
    assert not report.ok
    assert set(report.failed) == set(expected_failing), report.table()
    for tensor in expected_failing:
        assert f"gradient of {tensor!r} is wrong" in report.summary()
    for row in report.rows:
        if row.name in expected_failing:
            assert row.max_rel_error > 1e-3, report.table()
    return report


def _stash_inputs(problem):
    # A forward whose cache also keeps its inputs, for rebuilt backward passes.
    def forward(**inputs):
        y, cache = problem.forward(**inputs)
        return y, (cache, inputs)

    return forward


def test_conv2d_wrong_sign_in_dx():
    def broken(problem):
        def backward(dy, cache):
            dx, dw, db = conv2d_backward(dy, cache)
            return -dx, dw, db
        return backward

    _check_broken("conv2d.mask_b", broken, {"x"})


def test_conv2d_missing_mask_in_weight_gradient():
    # The problem of "conv2d.mask_a": 3x3, mask type A over 3 colour groups.
    padding = (1, 1, 1, 1)
    mask = causal_mask((6, 3, 3, 3), "A", channel_groups(6, 3),
                       channel_groups(3, 3))

    def forward(x, w, b):
        y, cache = conv2d_forward(x, w, b, padding, 1, mask)
        return y, (cache, x, w)

    def broken(problem):
        def backward(dy, stash):
            cache, x, w = stash
            dx, _, db = conv2d_backward(dy, cache)
            # dw of the masked weights w * m, without the final "* m".
            _, dw, _ = conv2d_backward_reference(x, w * mask, dy, padding)
            return dx, dw, db
        return backward

    problem = CHECKS["conv2d.mask_a"].build(np.random.default_rng(0))
    assert np.array_equal(forward(**problem.inputs)[0],
                          problem.forward(**problem.inputs)[0])
    report = _check_broken("conv2d.mask_a", broken, {"w"}, forward=forward)
    assert report.row("x").passed and report.row("b").passed


def test_conv2d_off_by_one_dilation():
    # Dilation (2, 3) of "conv2d.dilated" taken as (1, 3) in the backward
    # pass, as if it were counted from 0.
    def broken(problem):
        def backward(dy, stash):
            _, inputs = stash
            mask = causal_mask(inputs["w"].shape, "B")
            return conv2d_backward_reference(
                inputs["x"], inputs["w"], dy, padding=(2, 2, 3, 3),
                dilation=(1, 3), mask=mask)
        return backward

    problem = CHECKS["conv2d.dilated"].build(np.random.default_rng(0))
    report = gradcheck(_stash_inputs(problem), broken(problem), problem.inputs)
    assert set(report.failed) == {"x", "w"}, report.table()
    assert report.row("b").passed


def test_conv2d_asymmetric_padding_swapped():
    def broken(problem):
        def backward(dy, stash):
            _, inputs = stash
            return conv2d_backward_reference(inputs["x"], inputs["w"], dy,
                                             padding=(0, 2, 1, 3))
        return backward

    problem = CHECKS["conv2d.asymmetric_padding"].build(np.random.default_rng(0))
    report = gradcheck(_stash_inputs(problem), broken(problem), problem.inputs)
    assert set(report.failed) == {"x", "w"}, report.table()


def test_conv2d_missing_bias_gradient_term():
    # db summed over the first image of the batch only.
    def broken(problem):
        def backward(dy, cache):
            dx, dw, _ = conv2d_backward(dy, cache)
            return dx, dw, dy[:1].sum(axis=(0, 2, 3))
        return backward

    _check_broken("conv2d.1x1", broken, {"b"})


def test_layer_that_drops_its_weight_gradient():
    def broken(problem):
        def backward(dy, cache):
            grads = problem.backward(dy, cache)
            grads["conv.w"] = np.zeros_like(grads["conv.w"])
            return grads
        return backward

    _check_broken("layer.conv2d", broken, {"conv.w"})


def test_dense_masked_without_mask_in_weight_gradient():
    def broken(problem):
        def backward(dy, stash):
            cache, inputs = stash
            grads = problem.backward(dy, cache)
            grads["head.w"] = dy.T @ inputs["x"]
            return grads
        return backward

    problem = CHECKS["dense.masked"].build(np.random.default_rng(0))
    report = gradcheck(_stash_inputs(problem), broken(problem), problem.inputs)
    assert report.failed == ["head.w"], report.table()


def test_dense_transposed_weight_in_dx():
    def broken(problem):
        def backward(dy, cache):
            dx, dw, db = dense_backward(dy, cache)
            return dx[:, ::-1], dw, db
        return backward

    _check_broken("dense", broken, {"x"})


def test_gate_missing_sigmoid_factor():
    # d sigma(b)/db written as sigma(b) instead of sigma(b)(1 - sigma(b)).
    def broken(problem):
        def backward(dy, stash):
            _, inputs = stash
            a, b = np.split(inputs["x"], 2, axis=1)
            t, s = np.tanh(a), 1 / (1 + np.exp(-b))
            return np.concatenate([dy * (1 - t * t) * s, dy * t * s], axis=1)
        return backward

    problem = CHECKS["gate"].build(np.random.default_rng(0))
    report = gradcheck(_stash_inputs(problem), broken(problem), problem.inputs)
    assert report.failed == ["x"]


def test_gate_halves_swapped():
    def broken(problem):
        def backward(dy, cache):
            dx = gate_backward(dy, cache)
            half = dx.shape[0] // 2
            return np.concatenate([dx[half:], dx[:half]], axis=0)
        return backward

    _check_broken("gate.cnhw", broken, {"x"})


def test_relu_without_its_mask():
    _check_broken("relu", lambda problem: (lambda dy, cache: dy), {"x"})


def test_softmax_cross_entropy_without_the_one_hot():
    def broken(problem):
        def backward(dnll, cache):
            prob, _ = cache
            return dnll[:, None] * prob
        return backward

    _check_broken("softmax_cross_entropy", broken, {"logits"})


def test_softmax_cross_entropy_gradient_of_the_wrong_target():
    def broken(problem):
        def backward(dnll, cache):
            prob, _ = cache
            dz = dnll[:, None] * prob
            dz[:, 0] -= dnll  # always target 0
            return dz
        return backward

    report = _check_broken("softmax_cross_entropy", broken, {"logits"})
    assert report.row("logits").max_rel_error > 0.1


def test_shift_down_backward_shifted_the_wrong_way():
    def broken(problem):
        def backward(dy, cache):
            dx = np.zeros_like(dy)
            dx[:, :, 1:] = dy[:, :, :-1]
            return dx
        return backward

    _check_broken("shift_down", broken, {"x"})


def test_gated_pixelcnn_backward_without_the_down_shift(monkeypatch):
    monkeypatch.setattr(npar.models.pixelcnn, "shift_down_backward",
                        lambda dy: dy)
    _check_broken("gated_pixelcnn", lambda problem: problem.backward,
                  {"l0.v.w", "l0.v.b", "l1.v.w", "l1.v.b"})


def test_gated_pixelcnn_sign_error_in_the_gate(monkeypatch):
    def flipped(dy, cache):
        dx = gate_backward(dy, cache)
        dx[dx.shape[0] // 2:] *= -1
        return dx

    monkeypatch.setattr(npar.models.pixelcnn, "gate_backward", flipped)
    problem = CHECKS["gated_pixelcnn"].build(np.random.default_rng(0))
    report = gradcheck(problem.forward, problem.backward, problem.inputs)
    unaffected = {"l1.ho.w", "l1.ho.b", "head1.w", "head1.b", "head2.w", "head2.b"}
    assert set(report.failed) == set(problem.inputs) - unaffected, report.table()


def test_pixelcnn_relu_backward_passes_everything(monkeypatch):
    monkeypatch.setattr(npar.models.pixelcnn, "relu_backward",
                        lambda dy, cache: dy)
    problem = CHECKS["pixelcnn"].build(np.random.default_rng(0))
    _check_broken("pixelcnn", lambda p: p.backward,
                  set(problem.inputs) - {"head2.w", "head2.b"})


def _conv1d_or_skip():
    return pytest.importorskip("npar.ops.conv1d")


def test_conv1d_off_by_one_dilation():
    conv1d = _conv1d_or_skip()

    def broken(problem):
        def backward(dy, stash):
            _, inputs = stash
            return conv1d.conv1d_backward_reference(inputs["x"], inputs["w"], dy,
                                                    dilation=1)
        return backward

    problem = CHECKS["conv1d.dilated"].build(np.random.default_rng(0))
    report = gradcheck(_stash_inputs(problem), broken(problem), problem.inputs)
    assert set(report.failed) == {"x", "w"}, report.table()


def test_conv1d_taps_reversed_in_dw():
    conv1d = _conv1d_or_skip()

    def broken(problem):
        def backward(dy, cache):
            dx, dw, db = conv1d.conv1d_backward(dy, cache)
            return dx, dw[:, :, ::-1], db
        return backward

    _check_broken("conv1d.causal", broken, {"w"})


def test_conv1d_bias_gradient_misses_the_first_step():
    _conv1d_or_skip()

    def broken(problem):
        def backward(dy, cache):
            dx, dw, _ = problem.backward(dy, cache)
            return dx, dw, dy[:, :, 1:].sum(axis=(0, 2))
        return backward

    _check_broken("conv1d.dilated", broken, {"b"})


def test_wavenet_sign_error_in_the_gate(monkeypatch):
    wavenet = pytest.importorskip("npar.models.wavenet")

    def flipped(dy, cache):
        dx = gate_backward(dy, cache)
        dx[dx.shape[0] // 2:] *= -1
        return dx

    monkeypatch.setattr(wavenet, "gate_backward", flipped)
    problem = CHECKS["wavenet"].build(np.random.default_rng(0))
    report = gradcheck(problem.forward, problem.backward, problem.inputs)
    failed = set(report.failed)
    assert {"input.w", "block0.dilated.w", "block2.dilated.w"} <= failed
    assert not failed & {"head1.w", "head2.w", "block2.skip.w", "block0.skip.w"}


def test_wavenet_relu_backward_passes_everything(monkeypatch):
    wavenet = pytest.importorskip("npar.models.wavenet")
    monkeypatch.setattr(wavenet, "relu_backward", lambda dy, cache: dy)
    problem = CHECKS["wavenet"].build(np.random.default_rng(0))
    report = gradcheck(problem.forward, problem.backward, problem.inputs)
    assert "head2.w" not in report.failed and "head1.w" in report.failed


# ---- the command line --------------------------------------------------------


def test_cli_runs_selected_checks(capsys):
    assert main(["gradcheck", "gate", "relu"]) == 0
    out = capsys.readouterr().out
    assert "gate.cnhw" in out and "relu" in out and "all passed" in out
    assert "conv2d" not in out


def test_cli_fails_on_a_broken_backward(capsys, monkeypatch):
    broken = Problem(relu_forward, lambda dy, cache: dy, None)

    def build(rng):
        x = rng.uniform(0.1, 1, size=(3, 4)) * np.where(rng.random((3, 4)) < .5,
                                                         -1, 1)
        return Problem(broken.forward, broken.backward, {"x": x})

    monkeypatch.setattr(CHECKS["relu"], "build", build)
    assert main(["gradcheck", "relu"]) == 1
    out = capsys.readouterr().out
    assert "gradient of 'x' is wrong" in out and "FAILED" in out


def test_cli_unknown_name_and_list(capsys):
    assert main(["gradcheck", "no_such_check"]) == 1
    assert "unknown gradient check" in capsys.readouterr().err
    assert main(["gradcheck", "--list"]) == 0
    assert "conv2d.mask_a" in capsys.readouterr().out


def test_cli_stops_quietly_when_the_reader_goes_away(monkeypatch, capsys):
    # npar gradcheck --list | head: the pipe closes; no traceback.
    import io
    import sys

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            raise io.UnsupportedOperation("no file descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["gradcheck", "--list"]) == 141
    assert capsys.readouterr().err == ""

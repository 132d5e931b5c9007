"""Backward-pass exercises: a layer with its backward pass removed.

Each exercise is a module of this package (``masked_conv2d.py`` ...) with
a plain NumPy ``forward(...) -> (y, cache)`` and a ``backward(dy, cache)``
whose body, between the ``# --- solution ---`` markers, calls the
library's own backward pass: that module is the reference solution. The
starter file that ``npar exercise NAME --start PATH`` writes is the same
module with the solution replaced by ``raise NotImplementedError``.

:func:`grade` loads a learner's file and, for every case of the exercise,

1. checks that its forward pass still computes what the library computes;
2. runs :func:`npar.verify.gradcheck.gradcheck` on its ``forward`` and
   ``backward`` (float64 centred differences);
3. feeds the same random ``dy`` to its backward pass and to the library's
   and compares every gradient, ``max |yours - library| / max |library|``.

A gradient passes when both errors are small; a failure names the
gradient (``dw``, ``dx`` ...), the case, and a hint.
"""

import functools
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npar.verify.gradcheck import gradcheck

SOLUTION_START = "    # --- solution ---\n"
SOLUTION_END = "    # --- end of solution ---\n"
LIBRARY_TOLERANCE = 1e-8
FORWARD_TOLERANCE = 1e-10


@dataclass
class Case:
    """One graded problem: ``build(rng) -> (inputs, options)``, where
    ``inputs`` are the float64 arrays to differentiate and ``options`` the
    other arguments of the forward pass."""

    label: str
    build: object


@dataclass
class Exercise:
    """An exercise: its module, its cases, and how to call the library.

    ``library_forward(**inputs, **options) -> (y, cache)`` and
    ``library_backward(dy, cache) -> gradients`` (one per input, in order)
    are the library's own pair; ``gradients`` names them (``dx`` ...) and
    ``hints`` says, for each, what is most often wrong.
    """

    name: str
    module: str
    summary: str
    library: str
    cases: list
    library_forward: object
    library_backward: object
    gradients: dict
    hints: dict = field(default_factory=dict)

    def template_path(self):
        return Path(importlib.import_module(self.module).__file__)


@dataclass
class GradeRow:
    """The grade of one gradient in one case."""

    case: str
    gradient: str
    gradcheck_error: float
    library_error: float
    passed: bool
    message: str = ""


@dataclass
class GradeReport:
    """What :func:`grade` found; ``ok`` when every row passed."""

    exercise: str
    path: str
    rows: list
    errors: list = field(default_factory=list)
    hints: dict = field(default_factory=dict)

    @property
    def ok(self):
        return not self.errors and bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failed(self):
        """Names of the wrong gradients (``dw`` ...), each listed once."""
        names = []
        for row in self.rows:
            if not row.passed and row.gradient not in names:
                names.append(row.gradient)
        return names

    def table(self):
        """A text table of every case and gradient, then the verdict."""
        lines = [("case", "gradient", "vs differences", "vs library", "result")]
        for row in self.rows:
            lines.append((row.case, row.gradient, _number(row.gradcheck_error),
                          _number(row.library_error),
                          "ok" if row.passed else "WRONG"))
        widths = [max(len(line[k]) for line in lines) for k in range(5)]
        text = [f"exercise {self.exercise}: {self.path}"]
        if self.rows:
            text += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines]
        text += self.errors
        text.append(self.summary())
        return "\n".join(text)

    def summary(self):
        if self.ok:
            return (f"PASS: every gradient matches the centred differences and "
                    f"the library in all {len({r.case for r in self.rows})} cases")
        parts = []
        for name in self.failed:
            rows = [r for r in self.rows if r.gradient == name and not r.passed]
            first = rows[0]
            text = (f"{name} is wrong in {len(rows)} case(s), first in "
                    f"'{first.case}': {first.message}")
            if name in self.hints:
                text += f". Hint: {self.hints[name]}"
            parts.append(text)
        if self.errors and not parts:
            parts.append(self.errors[0].split(": ", 1)[1] if ": " in self.errors[0]
                         else self.errors[0])
        return "FAIL: " + "; ".join(parts)


def _number(value):
    return "-" if value is None or not np.isfinite(value) else f"{value:.1e}"


# ---- the exercises ----------------------------------------------------------


def _rng_normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _masked_conv2d():
    from npar.ops.conv2d import conv2d_backward, conv2d_forward
    from npar.ops.masks import causal_mask, centred_padding, channel_groups

    def case(x_shape, c_out, kernel, mask_type, padding, groups=1, centre=None):
        def build(rng):
            c_in = x_shape[1]
            shape = (c_out, c_in) + kernel
            mask = causal_mask(shape, mask_type, channel_groups(c_out, groups),
                               channel_groups(c_in, groups), centre=centre)
            inputs = {"x": _rng_normal(rng, *x_shape),
                      "w": _rng_normal(rng, *shape, scale=0.5),
                      "b": _rng_normal(rng, c_out)}
            return inputs, {"mask": mask, "padding": padding}
        return build

    def library_forward(x, w, b, mask, padding):
        return conv2d_forward(x, w, b, padding, 1, mask)

    return Exercise(
        name="masked_conv2d",
        module="npar.exercises.masked_conv2d",
        summary="backward pass of a masked 2-D convolution (PixelCNN masks A/B)",
        library="npar.ops.conv2d.conv2d_backward",
        cases=[
            Case("3x3 mask A, padding 1", case((2, 2, 5, 4), 3, (3, 3), "A",
                                               centred_padding(3, 3))),
            Case("1x3 mask B ending at the pixel, padding (0, 0, 2, 0)",
                 case((2, 3, 3, 5), 2, (1, 3), "B", (0, 0, 2, 0), centre=(0, 2))),
            Case("3x3 mask B over 3 colour groups", case(
                (1, 3, 4, 4), 6, (3, 3), "B", centred_padding(3, 3), groups=3)),
        ],
        library_forward=library_forward,
        library_backward=conv2d_backward,
        gradients={"x": "dx", "w": "dw", "b": "db"},
        hints={
            "dx": "every output y[n, o, i, j] spreads dy[n, o, i, j] back over "
                  "the window it read, weighted by the masked weights w * mask; "
                  "drop the padding at the end",
            "dw": "dw[o, c, p, q] sums dy times the input under tap (p, q), and "
                  "is multiplied by the mask so that masked taps get zero",
            "db": "db[o] sums dy over the batch and both image axes",
        },
    )


def _dilated_causal_conv1d():
    from npar.ops.conv1d import conv1d_backward, conv1d_forward

    def case(x_shape, c_out, k_size, dilation):
        def build(rng):
            inputs = {"x": _rng_normal(rng, *x_shape),
                      "w": _rng_normal(rng, c_out, x_shape[1], k_size),
                      "b": _rng_normal(rng, c_out)}
            return inputs, {"dilation": dilation}
        return build

    def library_forward(x, w, b, dilation):
        return conv1d_forward(x, w, b, dilation)

    return Exercise(
        name="dilated_causal_conv1d",
        module="npar.exercises.dilated_causal_conv1d",
        summary="backward pass of WaveNet's dilated causal 1-D convolution",
        library="npar.ops.conv1d.conv1d_backward",
        cases=[
            Case("K = 2, D = 1", case((2, 3, 8), 2, 2, 1)),
            Case("K = 2, D = 4", case((2, 2, 11), 3, 2, 4)),
            Case("K = 3, D = 2", case((1, 2, 9), 2, 3, 2)),
            Case("K = 3, D = 4: the oldest tap reaches before the start",
                 case((2, 2, 6), 2, 3, 4)),
        ],
        library_forward=library_forward,
        library_backward=conv1d_backward,
        gradients={"x": "dx", "w": "dw", "b": "db"},
        hints={
            "dx": "x[s] is read by tap k at step t = s + D (K - 1 - k); only the "
                  "steps t < T exist, so dx[s] sums w[:, :, k]^T dy[t] over those",
            "dw": "dw[o, c, k] sums dy[n, o, t] x[n, c, t - D (K - 1 - k)] over "
                  "the steps where that index is >= 0",
            "db": "db[o] sums dy over the batch and time",
        },
    )


def _gated_activation():
    from npar.ops.activations import gate_backward, gate_forward

    def case(shape):
        def build(rng):
            return {"x": _rng_normal(rng, *shape, scale=1.5)}, {}
        return build

    return Exercise(
        name="gated_activation",
        module="npar.exercises.gated_activation",
        summary="backward pass of the gated unit tanh(a) * sigmoid(b)",
        library="npar.ops.activations.gate_backward",
        cases=[
            Case("images (2, 4, 3, 3)", case((2, 4, 3, 3))),
            Case("audio (3, 6, 5)", case((3, 6, 5))),
        ],
        library_forward=functools.partial(gate_forward, axis=1),
        library_backward=gate_backward,
        gradients={"x": "dx"},
        hints={
            "dx": "the first half is dy (1 - tanh(a)^2) sigmoid(b), the second "
                  "half dy tanh(a) sigmoid(b) (1 - sigmoid(b)); keep them in "
                  "that order on axis 1",
        },
    )


def _softmax_cross_entropy():
    from npar.ops.softmax import (
        softmax_cross_entropy_backward,
        softmax_cross_entropy_forward,
    )

    def case(m_rows, v_levels, scale, offset):
        def build(rng):
            logits = _rng_normal(rng, m_rows, v_levels, scale=scale) + offset
            targets = rng.integers(0, v_levels, size=m_rows)
            return {"logits": logits}, {"targets": targets}
        return build

    return Exercise(
        name="softmax_cross_entropy",
        module="npar.exercises.softmax_cross_entropy",
        summary="backward pass of the softmax cross-entropy over V levels",
        library="npar.ops.softmax.softmax_cross_entropy_backward",
        cases=[
            Case("6 rows, V = 5", case(6, 5, 2.0, 0.0)),
            Case("4 rows, V = 256, logits around 30", case(4, 256, 3.0, 30.0)),
        ],
        library_forward=softmax_cross_entropy_forward,
        library_backward=softmax_cross_entropy_backward,
        gradients={"logits": "dlogits"},
        hints={
            "dlogits": "row m gets dnll[m] (softmax(z_m) - onehot(t_m)): the "
                       "probabilities, minus one at the target, times the "
                       "upstream gradient of that row",
        },
    )


EXERCISES = {exercise.name: exercise for exercise in (
    _masked_conv2d(), _dilated_causal_conv1d(), _gated_activation(),
    _softmax_cross_entropy())}


def get(name):
    """The exercise called ``name``."""
    if name not in EXERCISES:
        raise ValueError(
            f"unknown exercise {name!r}; the exercises are: {', '.join(EXERCISES)}"
        )
    return EXERCISES[name]


# ---- starter and solution files -----------------------------------------------


def solution_source(name):
    """The reference solution: the exercise module's source."""
    return get(name).template_path().read_text()


def starter_source(name):
    """The exercise module with the solution replaced by
    ``raise NotImplementedError``."""
    source = solution_source(name)
    start, end = source.find(SOLUTION_START), source.find(SOLUTION_END)
    if start < 0 or end < start:
        raise RuntimeError(f"exercise module of {name!r} lacks the solution markers")
    returns = ", ".join(get(name).gradients.values())
    stub = (f"    # Write the backward pass here and return {returns}.\n"
            f"    raise NotImplementedError(\"backward pass of {name}: return "
            f"{returns}\")\n")
    return source[:start] + stub + source[end + len(SOLUTION_END):]


def _write(path, text, force):
    path = Path(path)
    if path.exists() and not force:
        raise ValueError(f"{path} exists; choose another path or pass --force to "
                         "overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_starter(name, path, force=False):
    """Write the starter file of exercise ``name`` to ``path``."""
    return _write(path, starter_source(name), force)


def write_solution(name, path, force=False):
    """Write the reference solution of exercise ``name`` to ``path``."""
    return _write(path, solution_source(name), force)


# ---- grading ------------------------------------------------------------------


def load_solution(path):
    """Import the learner's file as a module; it must define ``forward`` and
    ``backward``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    module_name = "npar_exercise_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, os.fspath(path))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"{path} does not import: {type(error).__name__}: "
                         f"{error}") from error
    for function in ("forward", "backward"):
        if not callable(getattr(module, function, None)):
            raise ValueError(f"{path} must define a function {function}()")
    return module


def _as_tuple(grads, count):
    if isinstance(grads, np.ndarray) or not isinstance(grads, (tuple, list)):
        grads = (grads,)
    grads = tuple(grads)
    if len(grads) != count:
        raise ValueError(f"backward returned {len(grads)} arrays, expected {count}")
    return grads


def _describe(error):
    if isinstance(error, NotImplementedError):
        return f"backward is not written yet (NotImplementedError: {error})"
    return f"{type(error).__name__}: {error}"


def _grade_case(exercise, module, case, seed):
    rng = np.random.default_rng(seed)
    inputs, options = case.build(rng)
    names = list(exercise.gradients.values())
    rows, errors = [], []

    def copies():
        return {k: np.array(v, copy=True) for k, v in inputs.items()}

    # 1. The forward pass must still be the library's.
    y_lib, cache_lib = exercise.library_forward(**copies(), **options)
    try:
        y, cache = module.forward(**copies(), **options)
    except Exception as error:
        return [], [f"case '{case.label}': forward raised {_describe(error)}"]
    y = np.asarray(y)
    forward_error = float(np.max(np.abs(y - y_lib)) / max(np.max(np.abs(y_lib)),
                                                          1e-300)) \
        if y.shape == y_lib.shape else np.inf
    if not forward_error <= FORWARD_TOLERANCE:
        return [], [f"case '{case.label}': your forward pass differs from the "
                    f"library's ({_number(forward_error)} relative, shape "
                    f"{y.shape} vs {y_lib.shape}); restore it from --start"]

    # 2. The same random dy through both backward passes.
    dy = rng.standard_normal(y_lib.shape)
    try:
        mine = _as_tuple(module.backward(dy.copy(), cache), len(names))
    except Exception as error:
        return [], [f"case '{case.label}': {_describe(error)}"]
    reference = _as_tuple(exercise.library_backward(dy.copy(), cache_lib),
                          len(names))
    library_errors = {}
    shape_problems = {}
    for name, a, r in zip(names, mine, reference):
        a = None if a is None else np.asarray(a)
        if a is None or a.shape != r.shape:
            got = None if a is None else a.shape
            shape_problems[name] = f"has shape {got}, expected {r.shape}"
            library_errors[name] = np.inf
        else:
            library_errors[name] = float(np.max(np.abs(a - r))
                                         / max(np.max(np.abs(r)), 1e-300))

    # 3. The gradient check of the learner's own pair.
    report = None
    if not shape_problems:
        forward = functools.partial(module.forward, **options)
        try:
            report = gradcheck(forward, module.backward, inputs, seed=seed,
                               kinks=None, title=f"{exercise.name}: {case.label}")
        except Exception as error:
            errors.append(f"case '{case.label}': the gradient check failed to "
                          f"run: {_describe(error)}")

    for input_name, name in exercise.gradients.items():
        check = report.row(input_name) if report is not None else None
        check_error = check.max_rel_error if check is not None else None
        lib_error = library_errors[name]
        passed = (check is not None and check.passed
                  and lib_error <= LIBRARY_TOLERANCE)
        if name in shape_problems:
            message = f"{name} {shape_problems[name]}"
        elif passed:
            message = ""
        elif check is not None and not check.passed:
            message = (f"relative error {check.max_rel_error:.2g} against centred "
                       f"differences, {lib_error:.2g} against the library")
        else:
            message = (f"{lib_error:.2g} relative difference from the library's "
                       f"{exercise.library}")
        rows.append(GradeRow(case.label, name, check_error, lib_error, passed,
                             message))
    return rows, errors


def grade(name, path, seed=0):
    """Grade the learner's file ``path`` for exercise ``name``.

    Returns:
        a :class:`GradeReport`; ``report.failed`` names the wrong gradients.
    """
    exercise = get(name)
    module = load_solution(path)
    rows, errors = [], []
    for index, case in enumerate(exercise.cases):
        case_rows, case_errors = _grade_case(exercise, module, case, seed + index)
        rows += case_rows
        errors += case_errors
    return GradeReport(name, os.fspath(path), rows, errors, exercise.hints)

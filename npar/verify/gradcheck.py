"""Gradient checking: a hand-written backward pass against float64 centred
differences.

A forward pass ``y = f(x_1, ..., x_k)`` with a vector (or tensor) output is
reduced to a scalar through a random upstream gradient ``u`` of ``y``'s
shape:

.. math::  L(x) = \\langle u, f(x) \\rangle = \\sum_i u_i f_i(x),

so that the backward pass, fed ``dy = u``, must return
``g_k = \\partial L / \\partial x_k`` for every input. Each ``g_k`` is
compared with centred differences of ``L``:

- a small tensor (at most ``max_entries`` scalars) entry by entry,
  ``g_{k,e} \\approx (L(x + \\epsilon e) - L(x - \\epsilon e)) / 2\\epsilon``;
- a larger one along ``n_directions`` random directions ``d`` (standard
  normal entries, one tensor at a time so that a failure names the tensor),
  ``\\langle g_k, d \\rangle \\approx
  (L(x_k + \\epsilon d) - L(x_k - \\epsilon d)) / 2\\epsilon``.

The error of one comparison of an analytic value ``a`` with a numerical one
``n`` is

.. math::  r = |a - n| / \\max(|a|, |n|, \\phi),

where the floor ``\\phi`` keeps tiny gradients from turning rounding noise
into a large relative error. The rounding error of the quotient is about
``\\rho = 2^{-52} \\sum_i |u_i f_i(x)| / \\epsilon`` (the last bit of ``L``,
divided by the step), times a factor for the rounding inside ``f`` that
grows with its depth; the floor is the larger of ``floor`` and
``10 \\rho / tolerance``, so that a gradient entry smaller than it is held
to the absolute error ``|a - n| \\le 10 \\rho``. A tensor passes when its
largest ``r`` is at most ``tolerance`` (``1e-6``).

Two things make a difference quotient meaningless, and the checker refuses
or flags both:

- float32: its rounding (about ``1e-7`` relative) swamps the change that
  ``eps`` makes, so every input must be float64 (a ``TypeError`` otherwise);
- a ReLU kink: where a pre-activation is within ``eps`` of zero, or changes
  sign between ``x - eps d`` and ``x + eps d``, the quotient averages two
  slopes. By default the checker records the input of every call to
  :func:`npar.ops.activations.relu_forward` made by the forward pass and
  reports such points; the report is then not ``ok``.
"""

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

FLOAT32_MESSAGE = (
    "gradient checks need float64: float32 rounding ~1e-7 swamps the "
    "difference quotient"
)
_ROUNDING = 2.0 ** -52
# How many last-bit errors of L the quotient may carry: rounding inside a
# forward pass ten operations deep (a loss through a whole model) reaches
# a few units.
_ROUNDING_FACTOR = 10.0


class GradcheckWarning(UserWarning):
    """A gradient check ran where its result cannot be trusted (ReLU kink)."""


@dataclass
class GradcheckRow:
    """The result for one input or parameter.

    Attributes:
        name: the key of the tensor in ``inputs``.
        shape: its shape.
        method: ``"all N entries"`` or ``"K directions"``.
        max_rel_error: the largest relative error ``r`` over the comparisons.
        max_abs_error: the largest ``|a - n|``.
        passed: ``max_rel_error <= tolerance`` and no kink was crossed.
        worst: the entry index (entry by entry) or direction number of the
            largest error.
        analytic, numerical: the two values compared there.
        note: why the row is not trusted or failed, if it is not plain.
        zero: the gradient is exactly zero in the backward pass and in every
            difference quotient, so the check could not catch an error in it.
        kink_crossings: how many ReLU pre-activations changed sign inside the
            difference quotients of this tensor (the row is then not valid).
    """

    name: str
    shape: tuple
    method: str
    max_rel_error: float
    max_abs_error: float
    passed: bool
    worst: object = None
    analytic: float = 0.0
    numerical: float = 0.0
    note: str = ""
    zero: bool = False
    kink_crossings: int = 0


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` found: one :class:`GradcheckRow` per tensor.

    ``ok`` is True when every row passed and no ReLU kink was met.
    """

    title: str
    rows: list
    eps: float
    tolerance: float
    floor: float
    kinks: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.kinks and all(row.passed for row in self.rows)

    @property
    def vacuous(self):
        """Names of the tensors whose gradient is exactly zero on both sides,
        so that the check could not have caught an error in them."""
        return [row.name for row in self.rows if row.zero]

    @property
    def failed(self):
        """Names of the tensors whose gradient is wrong (or not trusted)."""
        return [row.name for row in self.rows if not row.passed]

    def row(self, name):
        """The row of tensor ``name``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no tensor {name!r} in this report; have "
                       f"{[r.name for r in self.rows]}")

    def summary(self):
        """One line: passed, or which tensors fail and by how much."""
        label = f"{self.title}: " if self.title else ""
        if self.ok:
            worst = max((r.max_rel_error for r in self.rows), default=0.0)
            return (f"{label}ok, {len(self.rows)} tensors, largest relative "
                    f"error {worst:.1e} <= {self.tolerance:.0e}")
        parts = []
        for row in self.rows:
            if row.kink_crossings:
                parts.append(f"{row.name!r} not checked: {row.note}")
            elif not row.passed:
                if isinstance(row.worst, tuple):
                    where = f"at entry {row.worst}: backward"
                else:
                    where = f"along random direction {row.worst}: <backward, d>"
                parts.append(
                    f"gradient of {row.name!r} is wrong: max relative error "
                    f"{row.max_rel_error:.2e} > {self.tolerance:.0e} (worst "
                    f"{where} {row.analytic:.6g}, centred difference "
                    f"{row.numerical:.6g})" + (f"; {row.note}" if row.note else "")
                )
        parts.extend(self.kinks)
        return f"{label}FAIL: " + "; ".join(parts)

    def table(self):
        """The rows as a fixed-width text table, then the summary line."""
        header = ("tensor", "shape", "method", "max rel error", "max abs error",
                  "result")
        lines = [header]
        for row in self.rows:
            lines.append((row.name, str(tuple(row.shape)), row.method,
                          f"{row.max_rel_error:.2e}", f"{row.max_abs_error:.2e}",
                          _result(row)))
        widths = [max(len(line[k]) for line in lines) for k in range(len(header))]
        title = f"gradcheck {self.title}".rstrip()
        text = [f"{title} (float64, eps {self.eps:.0e}, tolerance "
                f"{self.tolerance:.0e}, floor {self.floor:.1e})"]
        for line in lines:
            text.append("  ".join(cell.ljust(w) for cell, w in
                                  zip(line, widths)).rstrip())
        text.extend(f"note: {row.name}: {row.note}" for row in self.rows
                    if row.note)
        text.extend(f"kink: {message}" for message in self.kinks)
        text.append(self.summary())
        return "\n".join(text)


def _result(row):
    if row.kink_crossings:
        return "KINK"
    if not row.passed:
        return "FAIL"
    return "ok (zero)" if row.zero else "ok"


# ---- tracing ReLU inputs --------------------------------------------------


@contextlib.contextmanager
def trace_relu_inputs():
    """Record a copy of the input of every ReLU that npar computes.

    Yields a list that fills, in call order, with the pre-activation arrays
    passed to :func:`npar.ops.activations.relu_forward` (however that
    function was imported). It wraps the compiled kernel that
    ``relu_forward`` calls for the duration of the ``with`` block, so it is
    not thread-safe.
    """
    from npar.ops import activations

    kernel = getattr(activations, "_relu_forward_kernel", None)
    if kernel is None:
        raise RuntimeError(
            "npar.ops.activations has no _relu_forward_kernel to trace; pass "
            "kinks=None or a kinks callback to gradcheck"
        )
    seen = []

    def recording_kernel(x, y):
        seen.append(np.array(x, copy=True))
        return kernel(x, y)

    activations._relu_forward_kernel = recording_kernel
    try:
        yield seen
    finally:
        activations._relu_forward_kernel = kernel


# ---- the check ------------------------------------------------------------


def _as_output(result, where):
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(
            f"{where} must return (y, cache), got {type(result).__name__}"
        )
    y, cache = result
    y = np.asarray(y)
    if y.dtype != np.float64:
        if y.dtype == np.float32:
            raise TypeError(f"{FLOAT32_MESSAGE} (the forward pass returned "
                            "float32; cast inside it, not before the check)")
        raise TypeError(f"{where} must return a float64 output, got {y.dtype}")
    return y, cache


def _grads_by_name(grads, names):
    if isinstance(grads, dict):
        missing = [n for n in names if n not in grads]
        if missing:
            raise ValueError(
                f"backward returned no gradient for {missing}; it returned "
                f"keys {sorted(grads)}"
            )
        return {n: grads[n] for n in names}
    if isinstance(grads, np.ndarray):
        grads = (grads,)
    grads = tuple(grads)
    if len(grads) != len(names):
        raise ValueError(
            f"backward returned {len(grads)} gradients for {len(names)} inputs "
            f"{names}; return a dict by name, or one gradient per input in the "
            "order of the inputs dict"
        )
    return dict(zip(names, grads))


def _check_inputs(inputs):
    if not isinstance(inputs, dict) or not inputs:
        raise TypeError(
            "inputs must be a non-empty dict {name: float64 array} of the "
            f"tensors to differentiate, got {type(inputs).__name__}"
        )
    for name, value in inputs.items():
        if not isinstance(value, np.ndarray):
            raise TypeError(f"input {name!r} must be a numpy.ndarray, got "
                            f"{type(value).__name__}")
        if value.dtype == np.float32:
            raise TypeError(f"{FLOAT32_MESSAGE}: input {name!r} is float32; "
                            "pass x.astype(np.float64)")
        if value.dtype != np.float64:
            raise TypeError(
                f"input {name!r} has dtype {value.dtype}; inputs holds only the "
                "float64 tensors to differentiate (bind integer targets, masks "
                "and options into the forward function)"
            )


def _relative(a, n, floor):
    return abs(a - n) / max(abs(a), abs(n), floor)


def gradcheck(forward, backward, inputs, *, eps=1e-6, tolerance=1e-6,
              floor=1e-8, max_entries=64, n_directions=8, seed=0,
              kinks="relu", title=""):
    """Check a backward pass against float64 centred differences.

    Args:
        forward: ``forward(**inputs) -> (y, cache)``; ``y`` any float64
            array (or a scalar). Bind everything that is not differentiated
            (targets, masks, padding) with ``functools.partial`` or a lambda.
        backward: ``backward(dy, cache) -> grads``, with ``dy`` of ``y``'s
            shape; ``grads`` a dict ``{name: array}`` or one array per input
            in the order of ``inputs`` (as npar's ops return them).
        inputs: ``{name: float64 array}``, the tensors to differentiate.
            They are copied, never modified.
        eps: step of the centred differences.
        tolerance: largest accepted relative error.
        floor: smallest denominator of the relative error (the rounding
            level of the quotient over the tolerance is used when larger,
            see the module docstring).
        max_entries: tensors with at most this many scalars are checked
            entry by entry, larger ones along random directions.
        n_directions: random directions per large tensor.
        seed: seeds the upstream gradient ``u`` and the directions.
        kinks: ``"relu"`` (record the inputs of npar's ReLU during each
            forward pass), None (no kink check), or a callable
            ``kinks(**inputs) -> list of arrays`` giving the pre-activations
            of every ReLU at those inputs.
        title: a name for the report.

    Returns:
        a :class:`GradcheckReport`.

    Raises:
        TypeError: an input, the output or a gradient is float32 (see
            :data:`FLOAT32_MESSAGE`), or has another non-float64 dtype.
    """
    _check_inputs(inputs)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if kinks not in ("relu", None) and not callable(kinks):
        raise ValueError(f"kinks must be 'relu', None or a callable, got {kinks!r}")
    names = list(inputs)
    base = {name: np.array(value, copy=True) for name, value in inputs.items()}
    rng = np.random.default_rng(seed)

    def evaluate(values):
        # One forward pass on fresh copies: L = <u, f(x)> and the ReLU inputs.
        copies = {k: np.array(v, copy=True) for k, v in values.items()}
        if kinks == "relu":
            with trace_relu_inputs() as seen:
                y, cache = _as_output(forward(**copies), "forward")
        else:
            y, cache = _as_output(forward(**copies), "forward")
            seen = None if kinks is None else [np.asarray(z) for z in
                                               kinks(**copies)]
        return y, cache, seen

    y, cache, base_pre = evaluate(base)
    u = rng.standard_normal(y.shape)
    grads = _grads_by_name(backward(u.copy(), cache), names)
    for name in names:
        g = grads[name]
        if g is None:
            raise ValueError(f"backward returned None as the gradient of {name!r}")
        g = np.asarray(g)
        if g.dtype == np.float32:
            raise TypeError(f"{FLOAT32_MESSAGE}: backward returned the gradient "
                            f"of {name!r} as float32")
        if g.shape != base[name].shape:
            raise ValueError(f"backward returned the gradient of {name!r} with "
                             f"shape {g.shape}, expected {base[name].shape}")
        grads[name] = g.astype(np.float64)

    scale = float(np.sum(np.abs(u * y)))
    rounding = _ROUNDING_FACTOR * _ROUNDING * scale / eps
    floor_used = max(floor, rounding / tolerance)

    kink_notes = []
    if base_pre:
        close = sum(int(np.count_nonzero(np.abs(z) < eps)) for z in base_pre)
        if close:
            smallest = min(float(np.min(np.abs(z))) for z in base_pre if z.size)
            kink_notes.append(
                f"{close} ReLU pre-activations lie within eps = {eps:.0e} of the "
                f"kink at 0 (smallest |z| = {smallest:.1e}): the derivative is "
                "not defined there; check at another point"
            )

    def loss(values):
        y_k, _, pre = evaluate(values)
        return float(np.dot(u.ravel(), y_k.ravel())), pre

    def quotient(name, delta):
        plus = dict(base)
        minus = dict(base)
        plus[name] = base[name] + eps * delta
        minus[name] = base[name] - eps * delta
        l_plus, pre_plus = loss(plus)
        l_minus, pre_minus = loss(minus)
        crossed = 0
        if pre_plus is not None:
            crossed = sum(int(np.count_nonzero((a > 0) != (b > 0)))
                          for a, b in zip(pre_plus, pre_minus))
        return (l_plus - l_minus) / (2 * eps), crossed

    rows = []
    for name in names:
        x = base[name]
        g = grads[name]
        worst = (-1.0, 0.0, None, 0.0, 0.0)
        crossings = 0
        if x.size <= max_entries:
            method = f"all {x.size} entries"
            probes = ((index, None) for index in np.ndindex(x.shape))
        else:
            method = f"{n_directions} directions"
            probes = ((k, rng.standard_normal(x.shape)) for k in
                      range(n_directions))
        for where, direction in probes:
            if direction is None:
                delta = np.zeros_like(x)
                delta[where] = 1.0
                analytic = float(g[where])
            else:
                delta = direction
                analytic = float(np.dot(g.ravel(), delta.ravel()))
            numerical, crossed = quotient(name, delta)
            crossings += crossed
            rel = _relative(analytic, numerical, floor_used)
            if rel > worst[0] or not math.isfinite(rel):
                worst = (rel, abs(analytic - numerical), where, analytic,
                         numerical)
        rel, abs_err, where, analytic, numerical = worst
        note = ""
        zero = not np.any(g) and rel == 0.0
        if zero:
            note = ("the gradient is zero everywhere, in the backward pass and "
                    "in the differences: this check says nothing about it")
        if crossings:
            note = (f"{crossings} ReLU pre-activations changed sign inside its "
                    "difference quotients, which then average two slopes; "
                    "check at a point farther from the kinks")
        passed = bool(rel <= tolerance) and not crossings
        if not passed and not note and not np.all(np.isfinite(g)):
            note = "backward returned NaN or inf"
        rows.append(GradcheckRow(name, tuple(x.shape), method, float(rel),
                                 float(abs_err), passed, where, analytic,
                                 numerical, note, zero, crossings))

    report = GradcheckReport(title, rows, eps, tolerance, floor_used, kink_notes)
    for message in kink_notes:
        warnings.warn(f"gradcheck {title}: {message}", GradcheckWarning,
                      stacklevel=2)
    logger.debug("%s", report.summary())
    return report

"""Decoding strategies: from logits to a choice of level.

Every model of npar and the command line pick their next value through
this module. Each rule maps logits ``z`` ``(..., V)`` (the last axis holds
the ``V`` levels) to a probability vector ``pi`` ``(..., V)``, and a single
draw turns ``pi`` into a level with the inverse of its cumulative sum:

.. math::  v^\\ast = \\min \\{ v : \\textstyle\\sum_{u \\le v} \\pi_u > U
           \\sum_u \\pi_u \\},\\qquad U \\sim \\mathrm{Uniform}[0, 1),

with ``U`` taken from an explicit :class:`numpy.random.Generator`, exactly
one ``rng.random()`` per row, in C order of the leading axes. Two engines
that compute the same probabilities and share a seed therefore make the
same choices. A level of probability zero is never drawn.

The rules (applied in this order by :func:`sample`):

- temperature ``T`` (:func:`temperature_probs`):
  :math:`\\pi_v = e^{(z_v - \\max z) / T} / \\sum_u e^{(z_u - \\max z) / T}`;
  ``T = 0`` is the limit, greedy decoding;
- top-k (:func:`top_k_probs`): keep the ``k`` most probable levels;
- top-p, nucleus (:func:`top_p_probs`, Holtzman et al. 2020): keep the
  smallest set of most probable levels whose probability reaches ``p``.

Before those rules, a class-conditional model may be guided
(:func:`guided_logits`): its log-probabilities are pushed away from those
of an unconditional model by a weight ``w``, and the result is treated as
logits.

Probabilities are computed in float64 whatever the dtype of the logits.
Logits may be ``-inf`` (a level that is ruled out) but not NaN or ``+inf``.
"""

import numpy as np

from npar.ops.softmax import log_softmax

# Top-p counts a set whose probability is within this of p as reaching p,
# so that p = 0.8 lands on the boundary of probabilities 0.5 and 0.3 even
# though their rounded sum may be 0.7999999999999999.
TOP_P_TOLERANCE = 1e-9


def _check_logits(logits):
    if not isinstance(logits, np.ndarray):
        raise TypeError(f"logits must be a numpy.ndarray, got {type(logits).__name__}")
    if logits.dtype.kind != "f":
        raise TypeError(f"logits must be a float array, got dtype {logits.dtype}")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(
            f"logits must have shape (..., V) with V >= 1, got {logits.shape}"
        )
    # One reduction checks everything: the row maximum is NaN if the row
    # holds a NaN, +inf if it holds +inf, and -inf if the row is all -inf.
    mu = np.max(logits, axis=-1, keepdims=True)
    if not np.isfinite(mu).all():
        if np.isnan(mu).any() or np.isposinf(mu).any():
            raise FloatingPointError("logits contain NaN or +inf")
        raise ValueError("a row of logits is -inf everywhere: no level is possible")
    return mu


def _check_probs(probs):
    if not isinstance(probs, np.ndarray) or probs.dtype.kind != "f":
        raise TypeError(
            "probs must be a float numpy.ndarray, got "
            f"{getattr(probs, 'dtype', type(probs).__name__)}"
        )
    if probs.ndim < 1 or probs.shape[-1] < 1:
        raise ValueError(
            f"probs must have shape (..., V) with V >= 1, got {probs.shape}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and non-negative")
    if probs.size and not (probs.sum(axis=-1) > 0).all():
        raise ValueError("a row of probs sums to zero: no level is possible")
    return probs


def check_temperature(temperature):
    """Return ``temperature`` as a float, or raise unless it is a finite
    number ``>= 0``."""
    if isinstance(temperature, bool) or not isinstance(
            temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}")
    value = float(temperature)
    if not np.isfinite(value) or value < 0:
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 means greedy), got "
            f"{temperature!r}"
        )
    return value


def check_top_k(k):
    """Return ``k`` as an int, or raise unless it is an integer ``>= 1``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"top-k needs an integer k >= 1, got k = {k!r}")
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got k = {k!r}")
    return int(k)


def check_top_p(p):
    """Return ``p`` as a float, or raise unless ``0 < p <= 1``."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"top-p needs a number p in (0, 1], got p = {p!r}")
    value = float(p)
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(f"top-p needs p in (0, 1], got p = {p!r}")
    return value


def check_guidance(weight):
    """Return ``weight`` as a float, or raise unless it is a finite number
    ``>= 0``."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer,
                                                           np.floating)):
        raise TypeError(f"guidance needs a number w >= 0, got w = {weight!r}")
    value = float(weight)
    if not (np.isfinite(value) and value >= 0.0):
        raise ValueError(f"guidance needs a finite w >= 0, got w = {weight!r}")
    return value


def _log_probs(logits):
    # log softmax in float64, after the checks; -inf stays -inf (ruled out).
    _check_logits(logits)
    return log_softmax(logits.astype(np.float64), axis=-1)


def guided_logits(cond_logits, uncond_logits, weight):
    """Guidance of a class-conditional model by an unconditional one:

    .. math::  g_v = w \\log p(v \\mid y, x_{<}) + (1 - w) \\log p(v \\mid x_{<}),

    with both distributions the softmax of their logits, ``z^y`` and ``z``.
    As logits, ``g`` gives :math:`\\pi_v \\propto p(v \\mid y)^w\\, p(v)^{1 - w}`:
    ``w = 1`` is the conditional model itself, ``w = 0`` the unconditional
    one (wherever neither model rules a level out), and ``w > 1`` favours
    the levels that the class ``y`` makes more likely than they are for
    digits in general (for ``w > 1`` this is
    :math:`p(v \\mid y)\\, (p(v \\mid y) / p(v))^{w - 1}`, the conditional
    distribution re-weighted by the likelihood ratio). A level that either
    model rules out (probability 0) stays ruled out, whatever ``w``. The
    result feeds any rule of this module (temperature, top-k, top-p). A
    weight so large that ``g`` overflows is an error.

    Args:
        cond_logits: ``(..., V)`` float, logits of the conditional model.
        uncond_logits: ``(..., V)`` float, the same shape.
        weight: finite ``w >= 0``.

    Returns:
        ``(..., V)`` float64 logits ``g`` (finite where both models give the
        level a non-zero probability, ``-inf`` elsewhere).
    """
    weight = check_guidance(weight)
    if not isinstance(uncond_logits, np.ndarray) or not isinstance(
            cond_logits, np.ndarray) or cond_logits.shape != uncond_logits.shape:
        raise ValueError(
            "guidance needs conditional and unconditional logits of one shape, got "
            f"{getattr(cond_logits, 'shape', type(cond_logits).__name__)} and "
            f"{getattr(uncond_logits, 'shape', type(uncond_logits).__name__)}")
    log_c = _log_probs(cond_logits)
    log_u = _log_probs(uncond_logits)
    ruled_out = np.isneginf(log_c) | np.isneginf(log_u)
    with np.errstate(invalid="ignore", over="ignore"):
        guided = weight * log_c + (1.0 - weight) * log_u
    if not np.isfinite(guided[~ruled_out]).all():
        raise ValueError(
            f"guidance w = {weight!r} makes the guided logits overflow; use a "
            "smaller w (2 showed MNIST classes best)")
    guided[ruled_out] = -np.inf
    if np.isneginf(guided).all(axis=-1).any():
        raise ValueError(
            "guidance: the two models rule out every level of a row between them")
    return guided


def greedy(logits):
    """Greedy decoding: :math:`v^\\ast = \\arg\\max_v z_v`.

    Ties go to the lowest level (the first maximum).

    Args:
        logits: ``(..., V)`` float.

    Returns:
        ``(...)`` int64 levels.
    """
    _check_logits(logits)
    return np.argmax(logits, axis=-1).astype(np.int64)


def temperature_probs(logits, temperature=1.0):
    """Softmax at temperature ``T``:

    .. math::  \\pi_v = \\frac{e^{(z_v - \\mu) / T}}{\\sum_u e^{(z_u - \\mu) / T}},
               \\qquad \\mu = \\max_u z_u .

    Every exponent is ``<= 0`` and the largest is exactly 0, so the sum is
    at least 1 and nothing overflows or divides by zero, for any finite
    logits (``+-1e4``, mixed ``1e8``) and any ``T > 0``. ``T = 0`` gives the
    limit: probability 1 on the first maximum (greedy).

    Args:
        logits: ``(..., V)`` float.
        temperature: finite ``T >= 0``.

    Returns:
        ``(..., V)`` float64 probabilities summing to 1 on the last axis.
    """
    mu = _check_logits(logits)
    temperature = check_temperature(temperature)
    if temperature == 0.0:
        probs = np.zeros(logits.shape)
        np.put_along_axis(probs, np.argmax(logits, axis=-1)[..., None], 1.0,
                          axis=-1)
        return probs

    with np.errstate(over="ignore"):
        # z - mu and (z - mu) / T are <= 0; an extreme spread of logits or a
        # tiny T may send them to -inf, whose exp is exactly 0.
        shifted = logits.astype(np.float64)
        shifted -= mu
        shifted /= temperature
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def top_k_probs(probs, k):
    """Keep the ``k`` most probable levels and renormalise:

    .. math::  \\pi'_v = \\frac{\\pi_v [v \\in S_k]}{\\sum_{u \\in S_k} \\pi_u},

    with ``S_k`` the first ``k`` levels in order of decreasing probability,
    ties broken by the lower level (so exactly ``min(k, V)`` levels stay).
    ``k >= V`` keeps everything.

    Args:
        probs: ``(..., V)`` float probabilities (need not be normalised).
        k: integer ``>= 1``.

    Returns:
        ``(..., V)`` float64.
    """
    _check_probs(probs)
    k = check_top_k(k)
    probs = probs.astype(np.float64)
    if k >= probs.shape[-1]:
        return probs / probs.sum(axis=-1, keepdims=True)

    order = np.argsort(-probs, axis=-1, kind="stable")
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def top_p_probs(probs, p):
    """Nucleus filter: keep the smallest set of most probable levels whose
    probability reaches ``p``, and renormalise.

    With the levels sorted by decreasing probability, ties broken by the
    lower level, ``v_(1), v_(2), ...``, and the mass strictly before rank
    ``r``

    .. math::  S_{<r} = \\textstyle\\sum_{s < r} \\pi_{v_{(s)}} / \\sum_u \\pi_u,

    the level of rank ``r`` is kept iff ``S_{<r} < p`` (``r = 1`` always):
    the level whose probability makes the sum cross ``p`` is kept, and
    none after it. A sum within ``TOP_P_TOLERANCE`` (1e-9) below ``p``
    counts as having reached ``p``, so a ``p`` at a cumulative boundary
    (``p = 0.8`` for probabilities ``0.5, 0.3, 0.2``) keeps exactly the
    levels up to that boundary despite rounding. ``p = 1`` keeps every
    level of nonzero probability.

    Args:
        probs: ``(..., V)`` float probabilities (need not be normalised).
        p: number in ``(0, 1]``.

    Returns:
        ``(..., V)`` float64.
    """
    _check_probs(probs)
    p = check_top_p(p)
    probs = probs.astype(np.float64)
    probs = probs / probs.sum(axis=-1, keepdims=True)

    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < p - TOP_P_TOLERANCE
    keep_sorted[..., 0] = True
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def decoding_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution that :func:`sample` draws from: temperature, then
    top-k, then top-p (each renormalised), as ``(..., V)`` float64."""
    probs = temperature_probs(logits, temperature)
    if top_k is not None:
        probs = top_k_probs(probs, top_k)
    if top_p is not None:
        probs = top_p_probs(probs, top_p)
    return probs


def draw(probs, u):
    """Inverse-CDF choice: :math:`v^\\ast = \\min\\{v : C_v > u\\, C_{V-1}\\}`
    with :math:`C_v = \\sum_{w \\le v} \\pi_w`.

    Levels of zero probability are never chosen: ``C`` does not rise there.

    Args:
        probs: ``(..., V)`` non-negative, not all zero on a row.
        u: ``(...)`` uniforms in ``[0, 1)``.

    Returns:
        ``(...)`` int64 levels.
    """
    _check_probs(probs)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != probs.shape[:-1]:
        raise ValueError(
            f"u must have shape {probs.shape[:-1]} to match probs {probs.shape}, "
            f"got {u.shape}"
        )
    if u.size and ((u < 0).any() or (u >= 1).any()):
        raise ValueError("u must lie in [0, 1)")
    return _inverse_cdf(probs, u)


def _inverse_cdf(probs, u):
    # draw() without the argument checks, for probabilities made here.
    cdf = np.cumsum(probs, axis=-1, dtype=np.float64)
    total = cdf[..., -1]
    target = u * total
    choice = (cdf <= target[..., None]).sum(axis=-1)

    # u * C_{V-1} can round up to C_{V-1}; fall back on the last possible level.
    over = target >= total
    if over.any():
        v_levels = probs.shape[-1]
        last_possible = v_levels - 1 - np.argmax(probs[..., ::-1] > 0, axis=-1)
        choice = np.where(over, last_possible, choice)
    return choice.astype(np.int64)


def sample(logits, rng, temperature=1.0, top_k=None, top_p=None):
    """One level per row of ``logits`` under temperature, top-k and top-p.

    Draws exactly ``rng.random(logits.shape[:-1])`` (one uniform per row)
    when ``temperature > 0`` and nothing when ``temperature == 0`` (greedy).

    Args:
        logits: ``(..., V)`` float.
        rng: a :class:`numpy.random.Generator`.
        temperature: finite ``T >= 0``; 0 is greedy.
        top_k: None (no truncation) or an integer ``>= 1``.
        top_p: None (no truncation) or a number in ``(0, 1]``.

    Returns:
        ``(...)`` int64 levels.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)),"
            f" got {type(rng).__name__}"
        )
    if top_k is not None:
        check_top_k(top_k)
    if top_p is not None:
        check_top_p(top_p)
    if check_temperature(temperature) == 0.0:
        return greedy(logits)
    probs = decoding_probs(logits, temperature, top_k, top_p)
    return _inverse_cdf(probs, rng.random(probs.shape[:-1]))


def temperature_sample(logits, rng, temperature=1.0):
    """Draw from :func:`temperature_probs`; ``(..., V) -> (...)`` int64."""
    return sample(logits, rng, temperature=temperature)


def top_k_sample(logits, rng, k, temperature=1.0):
    """Draw from :func:`top_k_probs` of the tempered softmax; ``(...)`` int64."""
    return sample(logits, rng, temperature=temperature, top_k=k)


def top_p_sample(logits, rng, p, temperature=1.0):
    """Draw from :func:`top_p_probs` of the tempered softmax; ``(...)`` int64."""
    return sample(logits, rng, temperature=temperature, top_p=p)


def beam_search(log_probs, beam_width, steps, prefix=(), batched=True):
    """Beam search for the most probable continuation of a code sequence.

    The score of a continuation ``y_1 .. y_S`` of the prefix ``x`` is the sum
    of the natural-log probabilities of the generated codes only,

    .. math::  s(y) = \\sum_{t=1}^{S} \\log p(y_t \\mid x, y_{<t}),

    the prefix itself is not scored. Every hypothesis has the same length
    ``S = steps`` (there is no end code), so scores are compared without
    any length normalisation: the returned score is exactly the
    log-probability of the continuation given the prefix.

    At each step every beam is extended by each of the ``V`` codes and the
    ``beam_width`` best extensions are kept; equal scores go to the
    extension of the better beam, then to the lower code. With
    ``beam_width >= V ** (steps - 1)`` no hypothesis is ever dropped and the
    search is exact. For WaveNet, :func:`next_code_log_probs` makes the
    step function (a short continuation costs ``steps`` forward passes of
    ``beam_width`` sequences).

    Args:
        log_probs: the step function. With ``batched=True`` it gets
            ``(B, L)`` int64 prefixes (``L`` = prefix length plus the codes
            chosen so far) and returns ``(B, V)`` log-probabilities of the
            next code; with ``batched=False`` it gets one ``(L,)`` prefix and
            returns ``(V,)``.
        beam_width: number of hypotheses kept, ``>= 1``.
        steps: number of codes to generate, ``>= 1``.
        prefix: ``(L_0,)`` integer codes to continue (may be empty).
        batched: which form ``log_probs`` takes.

    Returns:
        ``(codes, scores)``: ``(B', S)`` int64 continuations (prefix not
        included), best first, and their ``(B',)`` float64 scores, with
        ``B' = min(beam_width, V ** S)``.
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) \
            or beam_width < 1:
        raise ValueError(f"beam_width must be an integer >= 1, got {beam_width!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    prefix = np.asarray(prefix, dtype=np.int64).reshape(-1)

    def step(beams):
        if batched:
            out = np.asarray(log_probs(beams), dtype=np.float64)
        else:
            out = np.stack([np.asarray(log_probs(b), dtype=np.float64)
                            for b in beams])
        if out.ndim != 2 or out.shape[0] != beams.shape[0]:
            raise ValueError(
                f"log_probs must return ({beams.shape[0]}, V) for "
                f"{beams.shape[0]} prefixes, got shape {out.shape}"
            )
        if np.isnan(out).any() or np.isposinf(out).any() or (out > 1e-6).any():
            raise ValueError("log_probs must return log-probabilities (<= 0, no NaN)")
        return out

    beams = prefix[None, :]
    scores = np.zeros(1)
    for _ in range(int(steps)):
        logp = step(beams)
        v_levels = logp.shape[1]
        total = (scores[:, None] + logp).reshape(-1)
        # Stable sort of -score over (beam, code) in row-major order: ties go
        # to the better beam (beams are kept best first), then the lower code.
        best = np.argsort(-total, kind="stable")[:beam_width]
        parent, code = np.divmod(best, v_levels)
        beams = np.concatenate([beams[parent], code[:, None]], axis=1)
        scores = total[best]
    return beams[:, prefix.size:].copy(), scores


def next_code_log_probs(model):
    """The batched step function of :func:`beam_search` for a sequence model
    with ``model.logits(q, start) -> (B, T - start, V)`` whose logits at
    position ``t`` predict ``q[:, t]`` from ``q[:, :t]`` (WaveNet): it
    appends a placeholder code to the ``(B, L)`` prefixes, takes the logits
    of position ``L`` alone, and returns their ``(B, V)`` log-softmax,
    :math:`\\log p(y \\mid x_{<L})`.
    """

    def log_probs(prefixes):
        prefixes = np.asarray(prefixes, dtype=np.int64)
        length = prefixes.shape[1]
        q = np.concatenate([prefixes, np.zeros((len(prefixes), 1), np.int64)],
                           axis=1)
        z = model.logits(q, start=length)[:, 0].astype(np.float64)
        shifted = z - z.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    return log_probs

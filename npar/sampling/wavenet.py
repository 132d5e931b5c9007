"""WaveNet generation: a naive engine and a cached one.

Both draw one mu-law code at a time from
``p(q_t | q_{t-R+1} .. q_{t-1})`` (``R`` the receptive field) and choose it
with :mod:`npar.sampling.strategies`, one ``rng.random()`` per code when
the temperature is above zero (none when greedy), so with the same seed
audio and the same generator they make the same choices.

- :class:`NaiveEngine` runs the model's full forward pass over the last
  ``R`` positions for every new code: ``O(R)`` work per sample.
- :class:`CachedEngine` (Paine et al. 2016, "Fast WaveNet") keeps, for
  every block ``i`` of dilation ``D_i``, a queue of its last ``D_i (K-1)``
  inputs ``h_i``; a new code then needs each layer at the newest position
  only:

  .. math::  z_i[t] = b_i + \\sum_k W_{i,k}\\, h_i[t - D_i (K - 1 - k)],

  with ``h_i[t - D_i (K-1-k)]`` read from the queue, which receives
  ``h_i[t]`` afterwards: ``O(layers)`` work per sample. Queues start at
  zero, which is what the full forward pass's zero padding gives before
  the clip. The whole step (all layers, the head and, for temperature
  sampling, the choice) is one compiled function.

A seed longer than the receptive field is cut to its last ``R - 1`` codes:
the logits of every later position depend on those only.
"""

import logging

import numba
import numpy as np

from npar.sampling.strategies import check_temperature, check_top_k, check_top_p
from npar.sampling.strategies import sample as choose_level

log = logging.getLogger(__name__)

# ---- the compiled step ------------------------------------------------------


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _matvec_add(w, x, out):
    # out[o] += sum_c w[o, c] x[c]
    for o in range(w.shape[0]):
        acc = 0.0
        for c in range(w.shape[1]):
            acc += w[o, c] * x[c]
        out[o] += acc


@numba.njit(cache=True)
def _choose_tempered(logits, temperature, u):
    # The choice of strategies.sample(logits, rng, temperature) given its
    # uniform u: argmax when greedy, else the inverse CDF of the tempered
    # softmax, in float64.
    v_levels = logits.shape[0]
    best = 0
    for v in range(1, v_levels):
        if logits[v] > logits[best]:
            best = v
    if temperature == 0.0:
        return best
    mu = np.float64(logits[best])
    e = np.empty(v_levels)
    total = 0.0
    for v in range(v_levels):
        e[v] = np.exp((np.float64(logits[v]) - mu) / temperature)
        total += e[v]
    cdf = 0.0
    for v in range(v_levels):
        e[v] /= total
        cdf += e[v]
        e[v] = cdf
    target = u * e[v_levels - 1]
    choice = 0
    for v in range(v_levels):
        if e[v] <= target:
            choice += 1
    # u * C_{V-1} may round up to C_{V-1}: fall back on the last level whose
    # probability is non-zero (where the cumulative sum still rises).
    last = v_levels - 1
    while last > 0 and e[last] == e[last - 1]:
        last -= 1
    return min(choice, last)


@numba.njit(cache=True, fastmath={"contract"})
def _run(codes, t_begin, t_end, t_generate, weights, dilations, kernel,
         queues, queue_offsets, temperature, uniforms, logits_out, record_from):
    # Advance the cached engine from time t_begin to t_end - 1.
    # Times < t_generate are teacher-forced (codes[t] given, no head); from
    # t_generate on, the head runs, its logits go to logits_out[t -
    # record_from] when that row exists, and codes[t] is chosen with
    # uniforms[t - t_generate] unless temperature < 0 (the caller chooses).
    (w_in, b_in, w_dil, b_dil, w_res, b_res, w_skip, b_skip_sum, w_h1, b_h1,
     w_h2, b_h2) = weights
    k0 = w_in.shape[0]
    n_blocks = w_dil.shape[0]
    width = b_in.shape[0]
    dtype = b_in.dtype
    h = np.empty(width, dtype=dtype)
    stacked = np.empty(kernel * width, dtype=dtype)
    z = np.empty(2 * width, dtype=dtype)
    g = np.empty(width, dtype=dtype)
    skip = np.empty(b_skip_sum.shape[0], dtype=dtype)
    hidden = np.empty(b_h1.shape[0], dtype=dtype)
    logits = np.empty(b_h2.shape[0], dtype=dtype)

    for t in range(t_begin, t_end):
        # Input layer: columns of the one-hot convolution for q[t-K0..t-1].
        h[:] = b_in
        for k in range(k0):
            s = t - 1 - (k0 - 1 - k)
            if s >= 0:
                h += w_in[k, codes[s]]
        skip[:] = b_skip_sum

        for i in range(n_blocks):
            d = dilations[i]
            span = d * (kernel - 1)
            # Taps k < K-1 read h_i[t - d (K-1-k)] from the ring buffer of
            # the last d (K-1) inputs; tap K-1 reads h_i[t].
            for k in range(kernel - 1):
                slot = (t - d * (kernel - 1 - k)) % span
                stacked[k * width:(k + 1) * width] = queues[queue_offsets[i] + slot]
            stacked[(kernel - 1) * width:] = h
            if span > 0:
                queues[queue_offsets[i] + t % span] = h
            z[:] = b_dil[i]
            _matvec_add(w_dil[i], stacked, z)
            for c in range(width):
                a = np.tanh(z[c])
                gate = 0.5 + 0.5 * np.tanh(0.5 * z[width + c])
                g[c] = a * gate
            _matvec_add(w_skip[i], g, skip)
            if i < n_blocks - 1:
                h += b_res[i]
                _matvec_add(w_res[i], g, h)

        if t < t_generate:
            continue
        for c in range(skip.shape[0]):
            skip[c] = max(skip[c], 0.0)
        hidden[:] = b_h1
        _matvec_add(w_h1, skip, hidden)
        for c in range(hidden.shape[0]):
            hidden[c] = max(hidden[c], 0.0)
        logits[:] = b_h2
        _matvec_add(w_h2, hidden, logits)
        row = t - record_from
        if 0 <= row < logits_out.shape[0]:
            logits_out[row] = logits
        if temperature >= 0.0:
            u = uniforms[t - t_generate] if temperature > 0.0 else 0.0
            codes[t] = _choose_tempered(logits, temperature, u)


# ---- engines ----------------------------------------------------------------


def _check_request(model, n_samples, rng, temperature, seed, top_k, top_p):
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) \
            or n_samples < 0:
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    temperature = check_temperature(temperature)
    if top_k is not None:
        check_top_k(top_k)
    if top_p is not None:
        check_top_p(top_p)
    if seed is None:
        seed = np.zeros(0, dtype=np.int64)
    seed = np.asarray(seed)
    if seed.dtype.kind not in "iu" or seed.ndim != 1:
        raise TypeError(
            "seed must be a 1-D array of integer mu-law codes, got "
            f"dtype {seed.dtype}, shape {seed.shape}"
        )
    if seed.size and (seed.min() < 0 or seed.max() >= model.levels):
        raise ValueError(
            f"seed codes must lie in 0..{model.levels - 1}, got values from "
            f"{seed.min()} to {seed.max()}"
        )
    # Only the last R - 1 codes of the seed reach any later logits.
    keep = model.receptive_field() - 1
    seed = seed[len(seed) - keep:] if len(seed) > keep else seed
    return int(n_samples), temperature, seed.astype(np.int64)


class NaiveEngine:
    """Generation by the full forward pass over the receptive field for
    every new code (the reference for :class:`CachedEngine`)."""

    def __init__(self, model):
        self.model = model

    def generate(self, n_samples, rng, temperature=1.0, seed=None, top_k=None,
                 top_p=None, return_logits=False):
        """Draw ``n_samples`` codes that continue ``seed``.

        Args:
            n_samples: number of new codes.
            rng: :class:`numpy.random.Generator`.
            temperature: ``>= 0``; 0 is greedy.
            seed: ``(T_0,)`` integer codes to continue, or None (silence
                before the clip: zero history).
            top_k, top_p: optional truncations (see
                :mod:`npar.sampling.strategies`).
            return_logits: also return the logits of every step.

        Returns:
            codes ``(n_samples,)`` int64, and with ``return_logits`` the
            logits ``(n_samples, V)`` float64.
        """
        model = self.model
        n_samples, temperature, seed = _check_request(
            model, n_samples, rng, temperature, seed, top_k, top_p)
        window = model.receptive_field()
        history = np.concatenate([seed, np.zeros(n_samples, dtype=np.int64)])
        logits_out = np.empty((n_samples, model.levels))
        for step in range(n_samples):
            t = len(seed) + step
            clip = history[max(0, t - window + 1):t + 1][None, :]
            rows, _ = model.forward(model.params, clip, clip.shape[1] - 1)
            logits_out[step] = rows[0]
            history[t] = choose_level(rows[0], rng, temperature, top_k, top_p)
        codes = history[len(seed):]
        return (codes, logits_out) if return_logits else codes


class CachedEngine:
    """Generation with per-layer queues of past activations: ``O(layers)``
    work per code (see the module docstring)."""

    def __init__(self, model):
        self.model = model
        self._pack()

    def _pack(self):
        # The weights in the layout the compiled step reads: matrices with
        # contiguous rows, taps of a dilated kernel side by side.
        model, p = self.model, self.model.params
        cfg = model.config
        width, kernel = cfg["channels"], cfg["kernel"]
        blocks = model.blocks
        dtype = model.dtype

        def matrix(layer):
            w = p[layer.w_name]
            return w.reshape(w.shape[0], w.shape[1])

        w_in = np.ascontiguousarray(p["input.w"].transpose(2, 1, 0))
        w_dil = np.stack([
            p[dilated.w_name].transpose(0, 2, 1).reshape(2 * width, kernel * width)
            for dilated, _, _ in blocks])
        b_dil = np.stack([p[dilated.b_name] for dilated, _, _ in blocks])
        w_res = np.zeros((len(blocks), width, width), dtype=dtype)
        b_res = np.zeros((len(blocks), width), dtype=dtype)
        for index, (_, residual, _) in enumerate(blocks):
            if residual is not None:
                w_res[index] = matrix(residual)
                b_res[index] = p[residual.b_name]
        w_skip = np.stack([matrix(skip) for _, _, skip in blocks])
        b_skip_sum = np.sum([p[skip.b_name] for _, _, skip in blocks], axis=0,
                            dtype=dtype)
        self.weights = tuple(np.ascontiguousarray(a) for a in (
            w_in, p["input.b"], w_dil, b_dil, w_res, b_res, w_skip, b_skip_sum,
            matrix(model.head1), p["head1.b"], matrix(model.head2), p["head2.b"]))
        self.dilations = np.array(model.dilations(), dtype=np.int64)
        self.kernel = kernel
        spans = self.dilations * (kernel - 1)
        self.queue_offsets = np.concatenate([[0], np.cumsum(spans)[:-1]]).astype(
            np.int64)
        self.queue_rows = int(spans.sum())

    def generate(self, n_samples, rng, temperature=1.0, seed=None, top_k=None,
                 top_p=None, return_logits=False):
        """Same arguments and result as :meth:`NaiveEngine.generate`."""
        model = self.model
        n_samples, temperature, seed = _check_request(
            model, n_samples, rng, temperature, seed, top_k, top_p)
        dtype = model.dtype
        width = model.config["channels"]
        queues = np.zeros((max(self.queue_rows, 1), width), dtype=dtype)
        codes = np.concatenate([seed, np.zeros(n_samples, dtype=np.int64)])
        t_generate = len(seed)
        logits_out = np.empty((n_samples if return_logits else 0, model.levels),
                              dtype=dtype)
        args = (self.weights, self.dilations, self.kernel, queues,
                self.queue_offsets)

        # Fill the queues from the seed (teacher forcing, no head).
        _run(codes, 0, t_generate, t_generate, *args, 0.0, np.zeros(0),
             logits_out, t_generate)
        if top_k is None and top_p is None:
            # The choice happens inside the compiled loop: one uniform per
            # code, drawn up front (the same stream as one rng.random() per
            # step, which is what strategies.sample draws).
            uniforms = (rng.random(n_samples) if temperature > 0
                        else np.zeros(n_samples))
            _run(codes, t_generate, len(codes), t_generate, *args, temperature,
                 uniforms, logits_out, t_generate)
        else:
            step_logits = np.empty((1, model.levels), dtype=dtype)
            for t in range(t_generate, len(codes)):
                _run(codes, t, t + 1, t_generate, *args, -1.0, np.zeros(0),
                     step_logits, t)
                if return_logits:
                    logits_out[t - t_generate] = step_logits[0]
                codes[t] = choose_level(step_logits[0], rng, temperature, top_k,
                                        top_p)
        generated = codes[t_generate:]
        if return_logits:
            return generated, logits_out.astype(np.float64)
        return generated


ENGINES = {"cached": CachedEngine, "naive": NaiveEngine}


def generate(model, n_samples, rng, engine="cached", **options):
    """Draw ``n_samples`` codes from ``model`` with the named engine
    (``"cached"`` or ``"naive"``); ``options`` as in
    :meth:`NaiveEngine.generate`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    if getattr(model, "kind", None) != "wavenet":
        raise ValueError(
            "WaveNet generation needs a model of kind 'wavenet', got "
            f"{getattr(model, 'kind', type(model).__name__)!r}")
    return ENGINES[engine](model).generate(n_samples, rng, **options)

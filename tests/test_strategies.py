"""Decoding strategies: every expected value below is worked out by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npar.sampling.strategies import (
    beam_search,
    decoding_probs,
    draw,
    greedy,
    guided_logits,
    next_code_log_probs,
    sample,
    temperature_probs,
    top_k_probs,
    top_k_sample,
    top_p_probs,
    top_p_sample,
)

# ---- greedy and temperature ------------------------------------------------


def test_greedy_takes_the_first_of_tied_maxima():
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [-2.0, -2.0, -5.0, -2.0]])
    assert greedy(logits).tolist() == [1, 0]


def test_temperature_zero_is_greedy_and_draws_nothing():
    logits = np.array([[0.5, 2.0, 2.0], [7.0, -1.0, 6.9]])
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    assert sample(logits, rng, temperature=0).tolist() == [1, 0]
    assert rng.bit_generator.state == state
    probs = temperature_probs(logits, 0.0)
    assert probs.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_temperature_one_and_two_by_hand():
    # exp(log 1), exp(log 2), exp(log 5) over 8.
    logits = np.log(np.array([1.0, 2.0, 5.0]))
    np.testing.assert_allclose(temperature_probs(logits, 1.0), [1 / 8, 2 / 8, 5 / 8],
                               rtol=1e-14)
    # T = 2 takes square roots: 1, sqrt 2, sqrt 5 over their sum.
    root = np.array([1.0, math.sqrt(2.0), math.sqrt(5.0)])
    np.testing.assert_allclose(temperature_probs(logits, 2.0), root / root.sum(),
                               rtol=1e-14)


def test_temperature_with_huge_logits_stays_finite_and_exact():
    # +-1e4 with a gap of 1 at the top: e^0 and e^-1 share the mass.
    z = np.array([1e4, -1e4, 1e4 - 1.0])
    e = math.exp(-1.0)
    np.testing.assert_allclose(temperature_probs(z, 1.0),
                               [1 / (1 + e), 0.0, e / (1 + e)], rtol=1e-14)
    # Mixed 1e8: all the mass on the largest.
    z = np.array([1e8, -1e8, 0.0])
    assert temperature_probs(z, 1.0).tolist() == [1.0, 0.0, 0.0]
    # Equal huge float32 logits split evenly.
    z = np.array([1e8, 1e8], dtype=np.float32)
    assert temperature_probs(z, 1.0).tolist() == [0.5, 0.5]
    # The largest finite floats: the spread overflows to -inf, exp gives 0.
    z = np.array([1.7e308, -1.7e308])
    assert temperature_probs(z, 1.0).tolist() == [1.0, 0.0]
    # A tiny temperature is greedy in the limit; a huge one is uniform.
    z = np.array([1e4, -1e4, 1e4 - 1.0])
    assert temperature_probs(z, 1e-300).tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(temperature_probs(z, 1e300), [1 / 3] * 3, rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)),
              elements=st.floats(-1e8, 1e8)),
       st.sampled_from([0.0, 1e-8, 0.3, 1.0, 7.0, 1e8]))
def test_temperature_probs_are_a_distribution_for_any_finite_logits(z, t):
    probs = temperature_probs(z, t)
    assert np.isfinite(probs).all()
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-12)
    # The first maximum always keeps some mass.
    assert (np.take_along_axis(probs, greedy(z)[:, None], axis=-1) > 0).all()


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf")])
def test_bad_temperature_is_an_error_quoting_it(t):
    with pytest.raises(ValueError, match="temperature"):
        temperature_probs(np.zeros(3), t)


def test_nan_logits_are_an_error():
    with pytest.raises(FloatingPointError):
        sample(np.array([0.0, np.nan]), np.random.default_rng(0))


# ---- top-k ------------------------------------------------------------------


def test_top_k_keeps_the_k_largest():
    probs = np.array([0.1, 0.4, 0.2, 0.3])
    # 0.4 and 0.3 stay and are renormalised by 0.7.
    np.testing.assert_allclose(top_k_probs(probs, 2), [0, 4 / 7, 0, 3 / 7],
                               rtol=1e-14)


def test_top_k_ties_go_to_the_lower_level():
    probs = np.array([0.3, 0.2, 0.3, 0.2])
    np.testing.assert_allclose(top_k_probs(probs, 1), [1, 0, 0, 0])
    # Ranks: level 0 (0.3), level 2 (0.3), level 1 (0.2), level 3 (0.2).
    np.testing.assert_allclose(top_k_probs(probs, 3), [3 / 8, 2 / 8, 3 / 8, 0],
                               rtol=1e-14)


def test_top_k_larger_than_v_is_no_truncation():
    probs = temperature_probs(np.array([0.0, 1.0, 2.0]), 1.0)
    np.testing.assert_allclose(top_k_probs(probs, 3), probs, rtol=1e-15)
    np.testing.assert_allclose(top_k_probs(probs, 1000), probs, rtol=1e-15)


@pytest.mark.parametrize("k", [0, -3])
def test_top_k_below_one_is_a_value_error_quoting_k(k):
    with pytest.raises(ValueError, match=f"k = {k}"):
        top_k_probs(np.ones(4), k)
    with pytest.raises(ValueError, match=f"k = {k}"):
        top_k_sample(np.zeros(4), np.random.default_rng(0), k)


def test_top_k_not_an_integer_is_a_type_error():
    with pytest.raises(TypeError, match="k = 1.5"):
        top_k_probs(np.ones(4), 1.5)


def test_top_k_sample_only_draws_kept_levels():
    logits = np.tile(np.array([0.0, 5.0, 1.0, 4.0, 4.5]), (2000, 1))
    drawn = top_k_sample(logits, np.random.default_rng(1), 2)
    assert set(drawn.tolist()) == {1, 4}


# ---- top-p ------------------------------------------------------------------


def test_top_p_exactly_at_a_cumulative_boundary():
    probs = np.array([0.2, 0.5, 0.3])
    # Sorted: 0.5 (level 1), 0.3 (level 2), 0.2 (level 0). The mass before
    # level 0 is 0.5 + 0.3 = 0.8 = p: the set {1, 2} already reaches p.
    np.testing.assert_allclose(top_p_probs(probs, 0.8), [0, 5 / 8, 3 / 8],
                               rtol=1e-14)
    # Just above the boundary, level 0 is the one that crosses p: kept.
    np.testing.assert_allclose(top_p_probs(probs, 0.8 + 1e-6), probs, rtol=1e-14)


def test_top_p_keeps_the_token_that_crosses_p():
    probs = np.array([0.2, 0.5, 0.3])
    # 0.5 < 0.51: level 1 alone does not reach p, level 2 crosses it.
    np.testing.assert_allclose(top_p_probs(probs, 0.51), [0, 5 / 8, 3 / 8],
                               rtol=1e-14)
    # p = 0.5 is reached by level 1 alone, and so is any smaller p.
    for p in (0.5, 0.49, 1e-12):
        np.testing.assert_allclose(top_p_probs(probs, p), [0, 1, 0])


def test_top_p_one_keeps_everything_and_ties_go_to_the_lower_level():
    probs = np.array([0.25, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(top_p_probs(probs, 1.0), probs)
    np.testing.assert_allclose(top_p_probs(probs, 0.5), [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(top_p_probs(probs, 0.6), [1 / 3, 1 / 3, 1 / 3, 0],
                               rtol=1e-14)


def test_top_p_from_logits_at_a_boundary():
    # Logits log 5, log 3, log 2: probabilities 0.5, 0.3, 0.2 up to rounding.
    logits = np.log(np.array([5.0, 3.0, 2.0]))
    np.testing.assert_allclose(decoding_probs(logits, top_p=0.8), [5 / 8, 3 / 8, 0],
                               rtol=1e-12)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.0000001, float("nan")])
def test_top_p_outside_zero_one_is_an_error(p):
    with pytest.raises(ValueError, match="p in"):
        top_p_probs(np.ones(3), p)
    with pytest.raises(ValueError, match="p in"):
        top_p_sample(np.zeros(3), np.random.default_rng(0), p)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(0.01, 1.0)),
       st.floats(1e-6, 1.0))
def test_top_p_keeps_the_smallest_set_that_reaches_p(raw, p):
    probs = raw / raw.sum()
    kept = top_p_probs(probs, p) > 0
    mass = probs[kept].sum()
    assert kept.any()
    assert mass >= p - 1e-9
    # Dropping the least probable kept level falls below p: the set is minimal.
    assert mass - probs[kept].min() < p
    # Every dropped level is no more probable than every kept one.
    if (~kept).any():
        assert probs[~kept].max() <= probs[kept].min()


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(0.01, 1.0)),
       st.integers(1, 10))
def test_top_k_keeps_min_k_v_levels_no_less_probable_than_the_rest(raw, k):
    kept = top_k_probs(raw, k) > 0
    assert kept.sum() == min(k, raw.size)
    if (~kept).any():
        assert raw[~kept].max() <= raw[kept].min()


# ---- the draw ---------------------------------------------------------------


def test_draw_inverts_the_cdf_and_skips_zero_probability_levels():
    probs = np.array([0.25, 0.0, 0.75])
    # C = 0.25, 0.25, 1: level 0 for u < 0.25, else level 2, never level 1.
    us = [0.0, 0.2499, 0.25, 0.9, np.nextafter(1.0, 0.0)]
    picks = [draw(probs, np.array(u)).item() for u in us]
    assert picks == [0, 0, 2, 2, 2]
    # A trailing zero-probability level is never drawn, even at u -> 1.
    assert draw(np.array([0.5, 0.5, 0.0]), np.array(np.nextafter(1.0, 0.0))) == 1


def test_sample_uses_one_uniform_per_row_in_c_order():
    logits = np.log(np.array([[[0.25, 0.75]] * 3] * 2))
    u = np.random.default_rng(11).random((2, 3))
    expected = (u >= 0.25).astype(np.int64)
    got = sample(logits, np.random.default_rng(11))
    assert got.tolist() == expected.tolist()


def test_sample_frequencies_match_the_probabilities():
    # p = 1/4, 3/4 from logits 0 and log 3; 40000 draws: sd of the share is
    # sqrt(3/16 / 40000) = 0.0022, allow 5 sd.
    logits = np.tile(np.array([0.0, math.log(3.0)]), (40000, 1))
    share = sample(logits, np.random.default_rng(5)).mean()
    assert abs(share - 0.75) < 0.011
    # Temperature 2 takes square roots: 1 and sqrt 3, share sqrt3/(1+sqrt3).
    share = sample(logits, np.random.default_rng(6), temperature=2.0).mean()
    assert abs(share - math.sqrt(3) / (1 + math.sqrt(3))) < 0.012


def test_sample_requires_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        sample(np.zeros(3), 7)


# ---- guidance -----------------------------------------------------------------


def test_guidance_two_by_hand():
    # p(.|y) = (1/2, 1/4, 1/4), p(.) = (1/4, 1/4, 1/2); w = 2 gives
    # p(.|y)^2 / p(.) = (1, 1/4, 1/8), that is (8, 2, 1) / 11.
    cond = np.log([0.5, 0.25, 0.25]) + 3.0  # a shift of the logits changes nothing
    uncond = np.log([0.25, 0.25, 0.5]) - 7.0
    probs = temperature_probs(guided_logits(cond, uncond, 2))
    np.testing.assert_allclose(probs, [8 / 11, 2 / 11, 1 / 11], rtol=1e-12)


def test_guidance_half_one_and_zero_by_hand():
    cond = np.log([0.5, 0.25, 0.25])
    uncond = np.log([0.25, 0.25, 0.5])
    # w = 1/2: sqrt(p(.|y) p(.)) = (sqrt 2, 1, sqrt 2) / 4, normalised.
    r = math.sqrt(2)
    np.testing.assert_allclose(temperature_probs(guided_logits(cond, uncond, 0.5)),
                               [r / (2 * r + 1), 1 / (2 * r + 1), r / (2 * r + 1)],
                               rtol=1e-12)
    # w = 1 is the conditional model, w = 0 the unconditional one.
    np.testing.assert_allclose(temperature_probs(guided_logits(cond, uncond, 1)),
                               [0.5, 0.25, 0.25], rtol=1e-12)
    np.testing.assert_allclose(temperature_probs(guided_logits(cond, uncond, 0)),
                               [0.25, 0.25, 0.5], rtol=1e-12)


def test_guidance_keeps_ruled_out_levels_out_and_huge_logits_finite():
    # Level 1 ruled out by the conditional model: p = (1/2, 0, 1/2) for w = 2.
    g = guided_logits(np.array([0.0, -np.inf, 0.0]), np.zeros(3), 2.0)
    assert np.isneginf(g[1])
    np.testing.assert_allclose(temperature_probs(g), [0.5, 0.0, 0.5], rtol=1e-12)
    # Ruled out by the unconditional model: (1 - w) log 0 would be +inf for
    # w > 1; the level stays out instead, and w = 1 gives no 0 * inf NaN.
    for w in (3.0, 1.0, 0.0):
        g = guided_logits(np.zeros(3), np.array([0.0, 0.0, -np.inf]), w)
        np.testing.assert_allclose(temperature_probs(g), [0.5, 0.5, 0.0])
    # +-1e4 logits: p(.|y) = (1, 0), p(.) = (0, 1) up to e^-2e4.
    g = guided_logits(np.array([[1e4, -1e4]]), np.array([[-1e4, 1e4]]), 2.5)
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(temperature_probs(g), [[1.0, 0.0]])


@pytest.mark.parametrize("w, error", [(-0.5, ValueError), (math.nan, ValueError),
                                      (math.inf, ValueError), (True, TypeError),
                                      ("2", TypeError)])
def test_bad_guidance_weight_is_an_error_quoting_it(w, error):
    with pytest.raises(error, match="guidance needs"):
        guided_logits(np.zeros(3), np.zeros(3), w)


def test_guidance_so_large_that_it_overflows_is_an_error():
    cond, uncond = np.log([0.5, 0.3, 0.2]), np.log([0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="w = 1.7e[+]?308 makes the guided logits "
                       "overflow"):
        guided_logits(cond, uncond, 1.7e308)


def test_guidance_needs_logits_of_one_shape_and_a_possible_level():
    with pytest.raises(ValueError, match=r"one shape, got \(3,\) and \(4,\)"):
        guided_logits(np.zeros(3), np.zeros(4), 2.0)
    with pytest.raises(ValueError, match="rule out every level"):
        guided_logits(np.array([0.0, -np.inf]), np.array([-np.inf, 0.0]), 2.0)


# ---- beam search ------------------------------------------------------------

# A Markov chain over three codes: P[a, b] = p(next = b | last = a).
CHAIN = np.array([
    [0.10, 0.50, 0.40],
    [0.40, 0.30, 0.30],
    [0.05, 0.05, 0.90],
])


def chain_log_probs(prefixes):
    return np.log(CHAIN[np.asarray(prefixes)[:, -1]])


def test_beam_search_finds_the_best_sequence_greedy_misses():
    # From code 0, greedy takes 1 (0.5) then 0 (0.4): 0.20. The best two
    # steps are 2, 2: 0.4 * 0.9 = 0.36.
    codes, scores = beam_search(chain_log_probs, 1, 2, prefix=[0])
    assert codes.tolist() == [[1, 0]]
    np.testing.assert_allclose(scores, [math.log(0.20)], rtol=1e-14)
    codes, scores = beam_search(chain_log_probs, 2, 2, prefix=[0])
    assert codes.tolist() == [[2, 2], [1, 0]]
    np.testing.assert_allclose(scores, np.log([0.36, 0.20]), rtol=1e-14)


def test_beam_search_wide_enough_is_exhaustive_and_breaks_ties_by_code():
    # All nine continuations of 0: 00 .01, 01 .05, 02 .04, 10 .20, 11 .15,
    # 12 .15, 20 .02, 21 .02, 22 .36; ties 11/12 and 20/21 by the lower code.
    codes, scores = beam_search(chain_log_probs, 9, 2, prefix=[0])
    assert codes.tolist() == [[2, 2], [1, 0], [1, 1], [1, 2], [0, 1], [0, 2],
                              [2, 0], [2, 1], [0, 0]]
    np.testing.assert_allclose(
        np.exp(scores), [.36, .20, .15, .15, .05, .04, .02, .02, .01], rtol=1e-12)


def test_beam_search_unbatched_and_three_steps_match_brute_force():
    def one(prefix):
        return np.log(CHAIN[prefix[-1]])

    codes, scores = beam_search(one, 9, 3, prefix=[1], batched=False)
    every = [((a, b, c), CHAIN[1, a] * CHAIN[a, b] * CHAIN[b, c])
             for a in range(3) for b in range(3) for c in range(3)]
    every.sort(key=lambda item: -item[1])
    # Width 9 = V^(S-1) keeps every hypothesis, so the top 9 are exact.
    np.testing.assert_allclose(np.exp(scores), [p for _, p in every[:9]],
                               rtol=1e-12)
    assert tuple(codes[0]) == every[0][0] == (2, 2, 2)


def test_beam_search_checks_its_arguments_and_the_step_function():
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(chain_log_probs, 0, 2, prefix=[0])
    with pytest.raises(ValueError, match="steps"):
        beam_search(chain_log_probs, 1, 0, prefix=[0])
    with pytest.raises(ValueError, match="shape"):
        beam_search(lambda p: np.zeros(3), 2, 2, prefix=[0])
    with pytest.raises(ValueError, match="log-probabilities"):
        beam_search(lambda p: np.ones((p.shape[0], 3)), 2, 2, prefix=[0])


def test_beam_search_continues_a_wavenet_prefix_exactly():
    from npar.models.wavenet import WaveNet

    config = dict(levels=4, channels=4, skip_channels=4, head_channels=6,
                  layers=2, kernel=2, first_kernel=2)
    model = WaveNet(config, seed=3).astype(np.float64)
    params = {k: 3.0 * v for k, v in model.params.items()}  # peaked
    model = WaveNet(config, params)
    prefix = np.array([1, 3, 0, 2])
    # Width 16 = V^(S-1) for S = 3 steps: exact. Score every one of the 64
    # continuations by the model's own log-likelihood of the whole clip
    # from position 4 on.
    codes, scores = beam_search(next_code_log_probs(model), 16, 3, prefix=prefix)
    every = np.array([[a, b, c] for a in range(4) for b in range(4)
                      for c in range(4)])
    clips = np.concatenate([np.tile(prefix, (64, 1)), every], axis=1)
    truth = model.log_prob(clips, start=4)
    order = np.argsort(-truth, kind="stable")
    np.testing.assert_array_equal(codes[0], every[order[0]])
    np.testing.assert_allclose(scores, truth[order[:16]], rtol=1e-10)
    # Greedy (width 1) scores no better than the best continuation.
    _, greedy_score = beam_search(next_code_log_probs(model), 1, 3, prefix=prefix)
    assert greedy_score[0] <= scores[0] + 1e-12

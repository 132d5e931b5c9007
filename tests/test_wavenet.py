"""WaveNet: receptive field and causality (by perturbation and through the
model's own backward pass), whole-model float64 gradient check, the
PyTorch twin, cached vs naive generation, save/load, clear errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.models.io import load, save
from npar.models.wavenet import WaveNet
from npar.ops.softmax import log_softmax
from npar.sampling import strategies
from npar.sampling.wavenet import (
    CachedEngine,
    NaiveEngine,
    _choose_tempered,
    generate,
)

LEVELS = 8


def tiny(seed=0, dtype=np.float64, noise=0.5, live_relus=False, **overrides):
    config = dict(levels=LEVELS, channels=3, skip_channels=4, head_channels=5,
                  layers=2, stacks=1, kernel=2, first_kernel=2)
    config.update(overrides)
    model = WaveNet(config, seed=seed).astype(dtype)
    # Larger random weights and non-zero biases than the initialisation, so
    # that every path carries signal.
    rng = np.random.default_rng(seed + 1)
    for name, value in model.params.items():
        model.params[name] = (value + noise * rng.standard_normal(value.shape)
                              ).astype(dtype)
    if live_relus:
        # A ReLU whose input is negative everywhere at t cuts every path
        # through it; random weights can do that, and then a logit ignores
        # a past code for a reason that has nothing to do with causality.
        # Large skip biases and a non-negative first head layer keep both
        # ReLUs of the head open.
        for name in model.params:
            if name.endswith(".skip.b"):
                model.params[name] += 10.0
        model.params["head1.w"] = np.abs(model.params["head1.w"])
        model.params["head1.b"] = np.abs(model.params["head1.b"])
    return model


def test_default_config_receptive_field_and_size():
    model = WaveNet()
    assert model.receptive_field() == 2 + (2**10 - 1) + 1 >= 1024
    assert model.loss_start() == model.receptive_field() - 1
    assert 100_000 <= model.n_params() <= 150_000
    assert model.dtype == np.float32


@pytest.mark.parametrize("overrides,expected", [
    (dict(), 2 + 3 + 1),
    (dict(layers=3, stacks=2), 2 + 2 * 7 + 1),
    (dict(kernel=3, first_kernel=1), 1 + 2 * 3 + 1),
    (dict(kernel=1, first_kernel=3), 3 + 0 + 1),
])
def test_receptive_field_formula(overrides, expected):
    assert tiny(**overrides).receptive_field() == expected


@st.composite
def causal_cases(draw):
    config = dict(layers=draw(st.integers(1, 3)), stacks=draw(st.integers(1, 2)),
                  kernel=draw(st.integers(1, 3)),
                  first_kernel=draw(st.integers(1, 3)),
                  loss_from_start=draw(st.booleans()))
    seed = draw(st.integers(0, 2**31 - 2))
    return config, seed


@settings(max_examples=200, deadline=None)
@given(causal_cases(), st.data())
def test_causality_by_perturbation(case, data):
    # y[t] ignores q[>= t] and q[<= t - R], and changes with q[t - R + 1].
    config, seed = case
    model = tiny(seed=seed, live_relus=True, **config)
    field = model.receptive_field()
    length = data.draw(st.integers(1, field + 3))
    t = data.draw(st.integers(0, length - 1))
    rng = np.random.default_rng(seed)
    q = rng.integers(0, LEVELS, (1, length))
    y = model.logits(q)[0, t]

    def changed(positions):
        q2 = q.copy()
        q2[0, positions] = (q2[0, positions] + 1 + rng.integers(
            0, LEVELS - 1, len(positions))) % LEVELS
        return not np.array_equal(model.logits(q2)[0, t], y)

    future = list(range(t, length))
    assert not changed(future)
    too_old = list(range(0, t - field + 1))
    if too_old:
        assert not changed(too_old)
    oldest = t - field + 1
    if oldest >= 0:
        assert changed([oldest])
    for source in range(max(0, oldest), t):
        # Every position inside the field is read (there are no holes).
        assert changed([source])


@settings(max_examples=200, deadline=None)
@given(causal_cases(), st.data())
def test_causality_by_backward_pass(case, data):
    # The gradient of one logit with respect to the one-hot codes is exactly
    # zero outside t - R + 1 .. t - 1 and non-zero at both ends.
    config, seed = case
    model = tiny(seed=seed, live_relus=True, **config)
    field = model.receptive_field()
    length = data.draw(st.integers(1, field + 3))
    t = data.draw(st.integers(0, length - 1))
    q = np.random.default_rng(seed).integers(0, LEVELS, (1, length))
    logits, cache = model.forward(model.params, q)
    dlogits = np.zeros_like(logits)
    dlogits[t, data.draw(st.integers(0, LEVELS - 1))] = 1.0
    _, dx = model.backward(model.params, cache, dlogits, input_grad=True)
    reach = np.abs(dx[0]).max(axis=0)  # (T,)
    assert np.all(reach[t:] == 0)
    assert np.all(reach[:max(0, t - field + 1)] == 0)
    if t - field + 1 >= 0:
        assert reach[t - field + 1] > 0
    if t >= 1:
        assert reach[t - 1] > 0


def test_default_model_causality_at_full_scale():
    model = WaveNet()
    field = model.receptive_field()
    q = np.random.default_rng(0).integers(0, 256, (1, field + 4))
    t = field + 2
    logits, cache = model.forward(model.params, q)
    dlogits = np.zeros_like(logits)
    dlogits[t] = 1.0
    _, dx = model.backward(model.params, cache, dlogits, input_grad=True)
    reach = np.abs(dx[0]).max(axis=0)
    nonzero = np.flatnonzero(reach)
    assert nonzero.min() == t - field + 1 and nonzero.max() == t - 1


def _relu_margins(model, q):
    # Smallest |input| of the two ReLUs of the head: far from 0 means a
    # centred difference of step 1e-5 cannot cross a kink.
    _, cache = model.forward(model.params, q, model.loss_start())
    relu1_in, relu2_in = cache[5], cache[7]
    return min(np.abs(relu1_in).min(), np.abs(relu2_in).min())


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(loss_from_start=True, stacks=2, kernel=3, first_kernel=3),
    dict(kernel=1, first_kernel=1, layers=3),
])
def test_whole_model_gradients_float64(overrides):
    model = tiny(seed=12, **overrides)
    rng = np.random.default_rng(5)
    q = rng.integers(0, LEVELS, (2, model.receptive_field() + 5))
    assert _relu_margins(model, q) > 1e-3
    _, grads = model.loss_and_grads(q)
    assert set(grads) == set(model.params)
    eps = 1e-5
    worst = 0.0
    for name, value in model.params.items():
        assert grads[name].shape == value.shape
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + eps
            plus, _ = model.loss_and_grads(q)
            value[index] = saved - eps
            minus, _ = model.loss_and_grads(q)
            value[index] = saved
            numeric = (plus - minus) / (2 * eps)
            analytic = grads[name][index]
            # Relative error, with a floor of 1e-3 on the scale: the loss is
            # O(1) and its rounding error / eps is ~1e-11 absolute.
            scale = max(abs(numeric), abs(analytic), 1e-3)
            worst = max(worst, abs(numeric - analytic) / scale)
    assert worst <= 1e-6, worst


def test_loss_skips_the_warm_up_positions():
    model = tiny(seed=2)
    q = np.random.default_rng(0).integers(0, LEVELS, (2, 12))
    start = model.receptive_field() - 1
    logp = log_softmax(model.logits(q), axis=-1)
    picked = np.take_along_axis(logp, q[..., None], axis=-1)[..., 0]
    loss, _ = model.loss_and_grads(q)
    assert loss == pytest.approx(-picked[:, start:].mean(), rel=1e-12)
    from_start = WaveNet(dict(model.config, loss_from_start=True), model.params)
    loss_all, _ = from_start.loss_and_grads(q)
    assert loss_all == pytest.approx(-picked.mean(), rel=1e-12)
    total, count = model.nll_sum(q)
    assert count == 2 * (12 - start)
    assert total == pytest.approx(-picked[:, start:].sum(), rel=1e-12)
    np.testing.assert_allclose(model.log_prob(q, start), picked[:, start:].sum(1))


def test_float32_loss_matches_float64():
    model = tiny(seed=4)
    q = np.random.default_rng(0).integers(0, LEVELS, (2, 20))
    loss64, grads64 = model.loss_and_grads(q)
    loss32, grads32 = model.astype(np.float32).loss_and_grads(q)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name in grads64:
        assert grads32[name].dtype == np.float32
        np.testing.assert_allclose(grads32[name], grads64[name], atol=1e-5)


def test_torch_twin_agrees():
    torch = pytest.importorskip("torch")
    from npar.verify.torch_twins import TorchWaveNet

    model = tiny(seed=8, stacks=2, kernel=3, first_kernel=3)
    q = np.random.default_rng(1).integers(0, LEVELS, (3, model.receptive_field() + 6))
    twin = TorchWaveNet(model)
    for start in (0, 4):
        np.testing.assert_allclose(
            twin(q, start).detach().numpy(), model.forward(model.params, q, start)[0],
            rtol=1e-12, atol=1e-12)
    loss, grads = model.loss_and_grads(q)
    loss_t = twin.loss(q)
    loss_t.backward()
    assert loss_t.item() == pytest.approx(loss, rel=1e-12)
    grads_t = twin.grads()
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_t[name], rtol=1e-9, atol=1e-12)
    assert torch.is_tensor(loss_t)


def test_save_and_load(tmp_path):
    model = tiny(seed=3, dtype=np.float32, stacks=2)
    save(model, tmp_path / "w.npz")
    loaded = load(tmp_path / "w.npz", kind="wavenet")
    assert loaded.config == model.config
    q = np.random.default_rng(0).integers(0, LEVELS, (1, 15))
    np.testing.assert_array_equal(loaded.logits(q), model.logits(q))


# ---- generation --------------------------------------------------------------


def _gen_model(dtype=np.float32):
    model = tiny(seed=21, dtype=dtype, noise=0.3, levels=32, channels=6,
                 skip_channels=8, head_channels=10, layers=4, stacks=2)
    for name in model.params:
        if name.endswith(".b"):
            assert np.all(model.params[name] != 0)
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cached_engine_equals_naive_over_1000_steps(dtype):
    model = _gen_model(dtype)
    field = model.receptive_field()
    seed = np.random.default_rng(0).integers(0, 32, field + 50)
    naive, naive_logits = NaiveEngine(model).generate(
        1000, np.random.default_rng(9), 1.0, seed, return_logits=True)
    cached, cached_logits = CachedEngine(model).generate(
        1000, np.random.default_rng(9), 1.0, seed, return_logits=True)
    np.testing.assert_array_equal(cached, naive)
    p_naive = np.exp(log_softmax(naive_logits))
    p_cached = np.exp(log_softmax(cached_logits))
    assert np.abs(p_cached - p_naive).max() <= 1e-5
    # The samples really vary (this is sampling, not a fixed point).
    assert len(set(cached.tolist())) > 10


@pytest.mark.parametrize("options", [dict(temperature=0.0),
                                     dict(temperature=0.7, top_k=5),
                                     dict(temperature=1.3, top_p=0.9)])
def test_cached_equals_naive_for_every_strategy(options):
    model = _gen_model()
    seed = np.random.default_rng(1).integers(0, 32, 7)  # shorter than the field
    runs = [generate(model, 150, np.random.default_rng(4), engine=engine,
                     seed=seed, **options) for engine in ("naive", "cached")]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_no_seed_means_zero_history():
    model = _gen_model()
    a = NaiveEngine(model).generate(60, np.random.default_rng(2), 1.0)
    b = CachedEngine(model).generate(60, np.random.default_rng(2), 1.0)
    np.testing.assert_array_equal(a, b)
    assert len(CachedEngine(model).generate(0, np.random.default_rng(0))) == 0


def test_compiled_choice_is_the_strategies_choice():
    rng = np.random.default_rng(0)
    for trial in range(300):
        logits = (rng.standard_normal(32) * rng.uniform(0.1, 20)).astype(
            np.float32)
        temperature = [0.0, 0.3, 1.0, 2.5][trial % 4]
        expected = strategies.sample(logits, np.random.default_rng(trial),
                                     temperature)
        u = np.random.default_rng(trial).random() if temperature > 0 else 0.0
        assert _choose_tempered(logits, temperature, u) == expected


def test_uniforms_drawn_up_front_are_the_per_step_stream():
    # The cached engine draws rng.random(n) once; strategies.sample draws
    # one rng.random(()) per step: the same numbers.
    one_by_one = [np.random.default_rng(3).random(())]
    rng = np.random.default_rng(3)
    one_by_one = [float(rng.random(())) for _ in range(50)]
    np.testing.assert_array_equal(np.random.default_rng(3).random(50), one_by_one)


def test_generation_errors():
    model = _gen_model()
    engine = CachedEngine(model)
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        engine.generate(5, 0)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        engine.generate(5, rng, temperature=-1.0)
    with pytest.raises(ValueError, match="seed codes must lie in 0..31"):
        engine.generate(5, rng, seed=np.array([0, 40]))
    with pytest.raises(TypeError, match="integer mu-law codes"):
        engine.generate(5, rng, seed=np.array([0.5]))
    with pytest.raises(ValueError, match="n_samples must be an integer >= 0"):
        engine.generate(-1, rng)
    with pytest.raises(ValueError, match="engine must be one of"):
        generate(model, 5, rng, engine="fast")
    # A PixelCNN used to fail with "'GatedPixelCNN' object has no attribute".
    from npar.models.pixelcnn import GatedPixelCNN

    image_model = GatedPixelCNN({**GatedPixelCNN.default_config(), "channels": 4,
                                 "layers": 1, "head_channels": 4})
    with pytest.raises(ValueError, match="kind 'wavenet', got 'gated_pixelcnn'"):
        generate(image_model, 5, rng)


# ---- bad input ---------------------------------------------------------------


def test_bad_codes_and_configs():
    model = tiny()
    with pytest.raises(TypeError, match="codes must be integers"):
        model.logits(np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"lie in 0..7, got values from 0 to 8"):
        model.logits(np.array([[0, 8]]))
    with pytest.raises(ValueError, match=r"shape \(N, T\)"):
        model.logits(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="too short: the loss starts at position 5"):
        model.loss_and_grads(np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="unknown WaveNet config keys"):
        WaveNet(dict(dilation=3))
    with pytest.raises(ValueError, match="layers must be an integer >= 1, got 0"):
        WaveNet(dict(layers=0))
    with pytest.raises(TypeError, match="loss_from_start must be True or False"):
        WaveNet(dict(loss_from_start=1))
    params = dict(model.params)
    params.pop("head2.b")
    with pytest.raises(ValueError, match=r"missing \['head2.b'\]"):
        WaveNet(model.config, params)
    params = dict(model.params, **{"head2.b": np.zeros(3)})
    with pytest.raises(ValueError, match="head2.b has shape"):
        WaveNet(model.config, params)


def test_start_must_be_a_non_negative_integer():
    # nll_sum(q, -3) used to score the last 3 samples (Python slicing).
    model = tiny()
    q = np.zeros((1, 12), dtype=np.int64)
    with pytest.raises(ValueError, match="start must be an integer >= 0, got -3"):
        model.nll_sum(q, -3)
    with pytest.raises(ValueError, match=r"start must be an integer in 0..11, got 1.5"):
        model.logits(q, start=1.5)
    assert model.nll_sum(q, 11)[1] == 1

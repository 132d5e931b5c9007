"""PixelCNN and Gated PixelCNN: causality properties, blind spot, whole-model
float64 gradient check, and clear errors for bad images."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.models.pixelcnn import GatedPixelCNN, PixelCNN

LEVELS = 4


def tiny(cls, image_channels=1, layers=2, kernel=3, first_kernel=3, seed=0,
         channels=None, head_channels=None, embedding=0):
    config = cls.default_config()
    config.update(image_channels=image_channels,
                  channels=channels or (2 * image_channels if image_channels > 1
                                        else 4),
                  layers=layers, kernel=kernel, first_kernel=first_kernel,
                  head_channels=head_channels or 3 * image_channels, levels=LEVELS,
                  embedding=embedding)
    return cls(config, seed=seed).astype(np.float64)


@st.composite
def causal_cases(draw):
    cls = draw(st.sampled_from([GatedPixelCNN, PixelCNN]))
    image_channels = draw(st.sampled_from([1, 3]))
    layers = draw(st.integers(1, 3))
    kernel = draw(st.sampled_from([1, 3, 5])) if cls is GatedPixelCNN else \
        draw(st.sampled_from([3, 5]))
    first_kernel = draw(st.sampled_from([3, 5, 7]))
    height, width = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    q = (draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1)))
    q_channel = draw(st.integers(0, image_channels - 1))
    seed = draw(st.integers(0, 2**31))
    embedding = draw(st.sampled_from([0, 0, 2]))
    return cls, image_channels, layers, kernel, first_kernel, (height, width), q, \
        q_channel, seed, embedding


@settings(max_examples=200)
@given(causal_cases())
def test_logits_ignore_inputs_at_and_after_their_position(case):
    """Changing x at sub-pixel (q, c) leaves every logit at positions before q,
    and at q for colours <= c, unchanged: by perturbation and by the model's
    own input gradient; with and without a level embedding (whose path the
    perturbation sees; the gradient is the scaled value's)."""
    cls, channels, layers, kernel, first_kernel, size, q, q_channel, seed, \
        embedding = case
    model = tiny(cls, channels, layers, kernel, first_kernel, seed % 1000,
                 embedding=embedding)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, LEVELS, (1, channels) + size)
    x2 = x.copy()
    x2[0, q_channel, q[0], q[1]] = (x[0, q_channel, q[0], q[1]] + 1
                                     + rng.integers(0, LEVELS - 1)) % LEVELS
    changed = np.abs(model.logits(x2) - model.logits(x)).max(axis=-1)[0] > 0
    width = size[1]
    q_index = q[0] * width + q[1]
    flat = changed.reshape(channels, -1)
    assert not flat[:, :q_index].any()
    assert not flat[:q_channel + 1, q_index].any()

    # Gradient of the logit at (q, q_channel) w.r.t. every input: zero at every
    # sub-pixel from (q, q_channel) on in raster-then-colour order.
    level = int(rng.integers(0, LEVELS))
    dx = model.logit_input_gradient(x, q_channel, q[0], q[1], level)[0]
    dx = dx.reshape(channels, -1)
    assert np.all(dx[:, q_index + 1:] == 0)
    assert np.all(dx[q_channel:, q_index] == 0)


def _dependence(model, size, p, n_trials=4, seed=0):
    """Which inputs the logits at p depend on, by perturbation, over trials."""
    rng = np.random.default_rng(seed)
    height, width = size
    seen = np.zeros(size, dtype=bool)
    for _ in range(n_trials):
        x = rng.integers(0, LEVELS, (1, 1) + size)
        base = model.logits(x)[0, 0, p[0], p[1]]
        for i in range(height):
            for j in range(width):
                x2 = x.copy()
                x2[0, 0, i, j] = (x[0, 0, i, j] + 1 + rng.integers(0, LEVELS - 1)) \
                    % LEVELS
                if np.abs(model.logits(x2)[0, 0, p[0], p[1]] - base).max() > 0:
                    seen[i, j] = True
    return seen


def test_gated_pixelcnn_has_no_blind_spot():
    """With enough layers the logits at p depend on every earlier pixel in
    the receptive field, including those up and to the right."""
    model = tiny(GatedPixelCNN, layers=4, kernel=3, first_kernel=3, seed=3,
                 channels=16, head_channels=16)
    size, p = (5, 7), (4, 3)
    seen = _dependence(model, size, p)
    before = np.zeros(size, dtype=bool)
    before.reshape(-1)[:p[0] * size[1] + p[1]] = True
    # The receptive field reaches 4 rows up and 4 columns to each side, which
    # covers every earlier pixel of this 5x7 image: all are seen, and
    # nothing at or after p is.
    np.testing.assert_array_equal(seen, before)


def test_plain_pixelcnn_has_a_blind_spot():
    """The plain masked PixelCNN misses pixels up and to the right of p that
    lie inside its nominal receptive field (van den Oord et al. 2016b, fig. 1)."""
    model = tiny(PixelCNN, layers=3, kernel=3, first_kernel=3, seed=3,
                 channels=16, head_channels=16)
    size, p = (5, 7), (4, 3)
    seen = _dependence(model, size, p)
    before = np.zeros(size, dtype=bool)
    before.reshape(-1)[:p[0] * size[1] + p[1]] = True
    assert not np.any(seen & ~before)        # still causal
    blind = before & ~seen
    assert blind.any()
    # The blind pixels are all up and to the right of p.
    rows, cols = np.nonzero(blind)
    assert np.all(rows < p[0]) and np.all(cols > p[1])
    # ... and one of them is inside the 4-layer, 3x3 receptive field box.
    assert blind[p[0] - 1, p[1] + 2] or blind[p[0] - 2, p[1] + 3]


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
@pytest.mark.parametrize("image_channels", [1, 3])
def test_whole_model_gradient_check_float64(cls, image_channels, rng):
    model = tiny(cls, image_channels=image_channels, layers=2, seed=5)
    x = rng.integers(0, LEVELS, (2, image_channels, 4, 5))
    loss, grads = model.loss_and_grads(x)
    assert np.isfinite(loss)
    eps = 1e-5  # truncation error ~eps^2 and rounding ~1e-16 / eps both < 1e-8
    for name, value in model.params.items():
        worst = 0.0
        for _ in range(2):
            d = rng.standard_normal(value.shape)
            original = value.copy()
            model.params[name] = original + eps * d
            plus, _ = model.loss_and_grads(x)
            model.params[name] = original - eps * d
            minus, _ = model.loss_and_grads(x)
            model.params[name] = original
            numeric = (plus - minus) / (2 * eps)
            analytic = float(np.sum(grads[name] * d))
            worst = max(worst, abs(numeric - analytic) / max(abs(numeric),
                                                             abs(analytic), 1e-8))
        assert worst <= 1e-6, (name, worst)


def test_logits_and_log_prob_shapes():
    model = tiny(GatedPixelCNN, image_channels=3)
    x = np.random.default_rng(0).integers(0, LEVELS, (2, 3, 4, 5)).astype(np.uint8)
    logits = model.logits(x)
    assert logits.shape == (2, 3, 4, 5, LEVELS)
    logp = model.log_prob(x)
    assert logp.shape == (2,) and np.all(logp < 0)
    loss, _ = model.loss_and_grads(x)
    np.testing.assert_allclose(-logp.sum() / x.size, loss, rtol=1e-10)


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((1, 1, 4, 4), np.float32), TypeError, "uint8"),
    (np.zeros((1, 4, 4), np.uint8), ValueError, r"shape \(N, 1, H, W\)"),
    (np.zeros((1, 3, 4, 4), np.uint8), ValueError, r"shape \(N, 1, H, W\)"),
    (np.full((1, 1, 4, 4), 300, np.int64), ValueError, "0..255"),
    (np.full((1, 1, 4, 4), -1, np.int64), ValueError, "0..255"),
    ([[0]], TypeError, "numpy.ndarray"),
])
def test_bad_images(bad, error, match):
    model = GatedPixelCNN({**GatedPixelCNN.default_config(), "channels": 4,
                           "layers": 1, "head_channels": 4})
    with pytest.raises(error, match=match):
        model.logits(bad)


def test_bad_config_and_params():
    config = GatedPixelCNN.default_config()
    with pytest.raises(ValueError, match="odd"):
        GatedPixelCNN({**config, "kernel": 4})
    model = GatedPixelCNN({**config, "channels": 4, "layers": 1})
    params = dict(model.params)
    params.pop("head2.b")
    with pytest.raises(ValueError, match="missing"):
        GatedPixelCNN(model.config, params=params)
    with pytest.raises(ValueError, match="shape"):
        GatedPixelCNN({**model.config, "head_channels": 65}, params=model.params)


def test_plain_pixelcnn_refuses_even_kernels_and_negative_layers():
    # The plain model used to accept them silently; the Gated one never did.
    config = {**PixelCNN.default_config(), "channels": 4, "head_channels": 4}
    with pytest.raises(ValueError, match="kernel must be an odd integer >= 1, got 4"):
        PixelCNN({**config, "kernel": 4})
    with pytest.raises(ValueError, match="first_kernel must be an odd integer"):
        PixelCNN({**config, "first_kernel": 2})
    with pytest.raises(ValueError, match="layers must be >= 0"):
        PixelCNN({**config, "layers": -1})
    assert PixelCNN({**config, "layers": 0}).n_params() > 0

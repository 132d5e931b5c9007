"""The class-conditional Gated PixelCNN: per-class gate biases (van den Oord
et al. 2016b, eq. 4), their float64 gradient, causality with labels, and
unchanged behaviour with ``classes = 0``."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npar.models.pixelcnn import GatedPixelCNN, PixelCNN


def tiny(classes=3, seed=0, image_channels=1, levels=4):
    config = GatedPixelCNN.default_config()
    config.update(image_channels=image_channels, channels=4 * image_channels,
                  layers=2, kernel=3, first_kernel=3, head_channels=6,
                  levels=levels, classes=classes)
    return GatedPixelCNN(config, seed=seed).astype(np.float64)


def test_classes_zero_is_the_unconditional_model():
    old = GatedPixelCNN.default_config()
    del old["classes"]  # a config written before the option existed
    new = GatedPixelCNN.default_config()
    assert new["classes"] == 0
    a, b = GatedPixelCNN(old, seed=3), GatedPixelCNN(new, seed=3)
    assert a.params.keys() == b.params.keys()
    assert not any(".vy." in k or ".hy." in k for k in a.params)
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 6, 6)).astype(np.uint8)
    np.testing.assert_array_equal(a.logits(x), b.logits(x))


def test_conditional_parameters_and_their_effect():
    model = tiny(classes=3)
    for index in range(2):
        assert model.params[f"l{index}.vy.w"].shape == (8, 3)
        assert model.params[f"l{index}.hy.w"].shape == (8, 3)
    # The parameters of the unconditional model keep their values.
    base = tiny(classes=0)
    for name, value in base.params.items():
        np.testing.assert_array_equal(model.params[name], value)
    x = np.random.default_rng(1).integers(0, 4, (1, 1, 5, 5))
    z0 = model.logits(x, np.array([0]))
    z2 = model.logits(x, np.array([2]))
    # The class reaches every pixel, the first one included.
    assert (np.abs(z0 - z2).max(axis=-1) > 1e-6).all()


def directional_error(model, x, labels, name, direction, u, eps=1e-5):
    """Relative error of <dL/dw, d> against a centred difference, with
    L = <u, logits>. eps = 1e-5: L is a sum of about 50 in magnitude, so its
    rounding (~1e-14) over 2 eps stays near 1e-9, well below the smallest
    gradients checked (~1e-4), while the truncation error eps^2 stays
    smaller still."""
    params = dict(model.params)
    logits, cache = model.forward(params, x, labels)
    analytic = float(np.sum(model.backward(params, cache, u)[name] * direction))

    def loss(sign):
        shifted = dict(params)
        shifted[name] = params[name] + sign * eps * direction
        return float(np.sum(u * model.forward(shifted, x, labels)[0]))

    numeric = (loss(1) - loss(-1)) / (2 * eps)
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-8)


def test_class_bias_gradients_pass_a_float64_check_entry_by_entry():
    model = tiny(classes=3, seed=2)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (3, 1, 4, 5))
    labels = np.array([0, 2, 2])
    logits, cache = model.forward(model.params, x, labels)
    u = rng.standard_normal(logits.shape)
    grads = model.backward(model.params, cache, u)
    for name in ("l0.vy.w", "l0.hy.w", "l1.vy.w", "l1.hy.w"):
        # Class 1 is in no image: its column gets exactly zero gradient.
        assert (grads[name][:, 1] == 0).all()
        assert np.abs(grads[name]).max() > 1e-3
        worst = 0.0
        for entry in np.ndindex(grads[name].shape):
            direction = np.zeros_like(model.params[name])
            direction[entry] = 1.0
            worst = max(worst, directional_error(model, x, labels, name, direction,
                                                 u))
        assert worst <= 1e-6, f"{name}: relative error {worst:.2e}"


def test_every_parameter_of_the_conditional_model_passes_a_float64_check():
    model = tiny(classes=3, seed=4, image_channels=3)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (2, 3, 4, 4))
    labels = np.array([1, 2])
    logits, _ = model.forward(model.params, x, labels)
    u = rng.standard_normal(logits.shape)
    for name, value in model.params.items():
        for _ in range(2):
            direction = rng.standard_normal(value.shape)
            error = directional_error(model, x, labels, name, direction, u)
            assert error <= 1e-6, f"{name}: relative error {error:.2e}"


def test_loss_and_grads_with_labels_matches_the_logit_path():
    model = tiny(classes=3, seed=5)
    x = np.random.default_rng(2).integers(0, 4, (2, 1, 4, 4))
    labels = np.array([2, 0])
    loss, grads = model.loss_and_grads(x, labels=labels)
    assert np.isfinite(loss) and grads.keys() == model.params.keys()
    assert (grads["l1.hy.w"][:, 1] == 0).all()
    nll = model.nll_sum(x, labels) / x.size
    assert loss == pytest.approx(nll, rel=1e-12)
    assert loss == pytest.approx(-model.log_prob(x, labels).sum() / x.size,
                                 rel=1e-10)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 5), st.integers(2, 5), st.integers(0, 24), st.integers(0, 2),
       st.integers(0, 2**31))
def test_logits_ignore_inputs_at_and_after_their_position_with_labels(
        height, width, q, label, seed):
    model = tiny(classes=3, seed=seed % 7)
    q = q % (height * width)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, (1, 1, height, width))
    x2 = x.copy()
    x2.reshape(-1)[q] = (x.reshape(-1)[q] + 1 + rng.integers(0, 3)) % 4
    labels = np.array([label])
    changed = np.abs(model.logits(x2, labels) - model.logits(x, labels)) > 0
    assert not changed.reshape(-1, 4)[:q + 1].any()


def test_label_errors_are_clear():
    model = tiny(classes=3)
    x = np.zeros((2, 1, 3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="class-conditional"):
        model.logits(x)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model.logits(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model.logits(x, np.array([0]))
    with pytest.raises(TypeError, match="integers"):
        model.logits(x, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="labels="):
        model.loss_and_grads(x, np.array([0, 1]))  # labels in the params slot
    with pytest.raises(ValueError, match="unconditional"):
        tiny(classes=0).logits(x, np.array([0, 1]))
    plain = PixelCNN(PixelCNN.default_config(), seed=0)
    with pytest.raises(ValueError, match="unconditional"):
        plain.logits(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="classes"):
        tiny(classes=-1)

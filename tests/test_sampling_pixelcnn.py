"""PixelCNN generation: the cached engine against the naive one and against
a full recompute, the order of the random draws, and argument errors."""

import numpy as np
import pytest

from npar.models.pixelcnn import GatedPixelCNN, PixelCNN
from npar.ops.softmax import log_softmax
from npar.sampling.pixelcnn import generate, sample_images


def small(cls, dtype=np.float64, scale=3.0, **changes):
    """A small model whose weights are scaled up, so that its distributions
    are far from uniform and every layer matters to the logits."""
    config = cls.default_config()
    config.update(channels=8, layers=3, kernel=3, first_kernel=5, head_channels=12,
                  levels=16)
    config.update(changes)
    model = cls(config, seed=5)
    params = {k: (v * scale).astype(dtype) for k, v in model.params.items()}
    return cls(config, params)


def full_recompute_probs(model, images, labels=None):
    """Softmax of the model's logits on the finished images: by causality,
    the distribution each sub-pixel was drawn from."""
    return np.exp(log_softmax(model.logits(images, labels).astype(np.float64)))


CASES = [
    ("gated", GatedPixelCNN, {}),
    ("gated-rgb", GatedPixelCNN, dict(image_channels=3, channels=6)),
    ("gated-kernel5", GatedPixelCNN, dict(kernel=5, first_kernel=3)),
    ("gated-conditional", GatedPixelCNN, dict(classes=4)),
    ("plain", PixelCNN, {}),
    ("plain-rgb", PixelCNN, dict(image_channels=3, channels=6)),
]


@pytest.mark.parametrize("name, cls, changes", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cached_and_naive_draw_identical_images(name, cls, changes, dtype):
    model = small(cls, dtype, **changes)
    labels = np.array([0, 3, 1]) if changes.get("classes") else None
    runs = [generate(model, 3, np.random.default_rng(11), size=(6, 7), engine=engine,
                     labels=labels, record_probs=True)
            for engine in ("naive", "cached")]
    naive, cached = runs
    np.testing.assert_array_equal(cached.images, naive.images)
    np.testing.assert_allclose(cached.probs, naive.probs, rtol=0, atol=1e-5)
    # Peaked distributions (not a near-uniform draw), and images that vary.
    assert naive.probs.max() > 0.5
    assert len(np.unique(naive.images)) > 3


@pytest.mark.parametrize("rule", [dict(temperature=0.0), dict(temperature=0.7),
                                  dict(top_k=3), dict(top_p=0.8),
                                  dict(temperature=1.5, top_k=5, top_p=0.9)])
def test_decoding_rules_reach_both_engines_alike(rule):
    model = small(GatedPixelCNN, np.float32)
    images = [generate(model, 2, np.random.default_rng(3), size=(5, 5), engine=e,
                       **rule).images for e in ("naive", "cached")]
    np.testing.assert_array_equal(images[0], images[1])


def test_top_k_one_and_temperature_zero_are_greedy():
    model = small(GatedPixelCNN)
    greedy = generate(model, 2, np.random.default_rng(0), size=(5, 5),
                      temperature=0.0, record_probs=True)
    top1 = generate(model, 2, np.random.default_rng(1), size=(5, 5), top_k=1)
    np.testing.assert_array_equal(greedy.images, top1.images)
    # Every drawn level is the most probable one of its distribution.
    best = greedy.probs.argmax(axis=-1)
    np.testing.assert_array_equal(greedy.images, best)


def test_default_gated_model_cached_matches_a_full_recompute_at_every_pixel():
    """16 MNIST-sized images from the default Gated PixelCNN: the cached
    engine's distribution of each of the 784 pixels equals the one a full
    forward pass gives on the finished images (no drift)."""
    model = GatedPixelCNN(GatedPixelCNN.default_config(), seed=1)
    run = generate(model, 16, np.random.default_rng(2), size=(28, 28),
                   record_probs=True)
    assert run.images.shape == (16, 1, 28, 28) and run.images.dtype == np.uint8
    np.testing.assert_allclose(run.probs, full_recompute_probs(model, run.images),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", [GatedPixelCNN, PixelCNN])
def test_default_model_first_rows_match_the_naive_engine(cls):
    # 60 sub-pixels: all of rows 0 and 1 and part of row 2, so the vertical
    # stack's links into the next row are used twice.
    model = cls(cls.default_config(), seed=4)
    runs = [generate(model, 2, np.random.default_rng(8), size=(28, 28), engine=e,
                     record_probs=True, stop_after=60) for e in ("naive", "cached")]
    np.testing.assert_array_equal(runs[0].images, runs[1].images)
    np.testing.assert_allclose(runs[0].probs, runs[1].probs, rtol=0, atol=1e-5)
    assert (runs[0].probs[:, :, 2, 5:] == 0).all()  # never reached


def test_conditional_images_differ_by_class_and_match_a_full_recompute():
    model = small(GatedPixelCNN, classes=3)
    labels = np.array([0, 1, 2, 0])
    run = generate(model, 4, np.random.default_rng(0), size=(6, 6), labels=labels,
                   record_probs=True)
    np.testing.assert_allclose(run.probs, full_recompute_probs(model, run.images,
                                                               labels), atol=1e-10)
    # The class changes the very first pixel's distribution.
    assert np.abs(run.probs[0, 0, 0, 0] - run.probs[1, 0, 0, 0]).max() > 1e-3
    # One class for all images is the same as that class repeated.
    one = generate(model, 2, np.random.default_rng(5), size=(4, 4), labels=2)
    many = generate(model, 2, np.random.default_rng(5), size=(4, 4),
                    labels=np.array([2, 2]))
    np.testing.assert_array_equal(one.images, many.images)


def guided_probs(model, unconditional, images, labels, weight):
    """Softmax of w log p(.|y) + (1 - w) log p(.) from full forward passes."""
    log_c = log_softmax(model.logits(images, labels).astype(np.float64))
    log_u = log_softmax(unconditional.logits(images).astype(np.float64))
    return np.exp(log_softmax(weight * log_c + (1 - weight) * log_u))


@pytest.mark.parametrize("unconditional_cls", [GatedPixelCNN, PixelCNN])
def test_guided_generation_cached_naive_and_full_recompute_agree(unconditional_cls):
    model = small(GatedPixelCNN, classes=3)
    unconditional = small(unconditional_cls, scale=2.0)
    labels = np.array([0, 1, 2, 2])
    runs = [generate(model, 4, np.random.default_rng(3), size=(6, 6), engine=engine,
                     labels=labels, record_probs=True, guidance=2.5,
                     unconditional=unconditional) for engine in ("naive", "cached")]
    np.testing.assert_array_equal(runs[0].images, runs[1].images)
    np.testing.assert_allclose(runs[0].probs, runs[1].probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        runs[1].probs, guided_probs(model, unconditional, runs[1].images, labels, 2.5),
        rtol=0, atol=1e-10)
    # Guidance changes what is drawn: not the conditional model alone.
    plain = generate(model, 4, np.random.default_rng(3), size=(6, 6), labels=labels)
    assert (plain.images != runs[1].images).any()


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional():
    model = small(GatedPixelCNN, classes=3)
    unconditional = small(GatedPixelCNN, scale=2.0)
    labels = np.array([2, 0, 1])
    kwargs = dict(size=(5, 6), record_probs=True)
    alone = generate(model, 3, np.random.default_rng(8), labels=labels, **kwargs)
    one = generate(model, 3, np.random.default_rng(8), labels=labels, guidance=1.0,
                   unconditional=unconditional, **kwargs)
    np.testing.assert_array_equal(one.images, alone.images)
    np.testing.assert_allclose(one.probs, alone.probs, rtol=0, atol=1e-12)
    other = generate(unconditional, 3, np.random.default_rng(8), **kwargs)
    zero = generate(model, 3, np.random.default_rng(8), labels=labels, guidance=0,
                    unconditional=unconditional, **kwargs)
    np.testing.assert_array_equal(zero.images, other.images)
    np.testing.assert_allclose(zero.probs, other.probs, rtol=0, atol=1e-12)


def test_guidance_argument_errors_are_clear():
    model = small(GatedPixelCNN, classes=3)
    unconditional = small(GatedPixelCNN)
    rng = np.random.default_rng(0)
    cases = [
        (dict(labels=1, guidance=2.0), "needs an unconditional model"),
        (dict(labels=1, unconditional=unconditional), "only with guidance"),
        (dict(labels=1, guidance=2.0, unconditional=model), "no classes, got one "
         "with 3 classes"),
        (dict(labels=1, guidance=2.0, unconditional=small(GatedPixelCNN, levels=8)),
         "same levels: the conditional model has 16, the unconditional one 8"),
        (dict(labels=1, guidance=-1.0, unconditional=unconditional), "w >= 0"),
        (dict(labels=1, guidance=2.0, unconditional="model.npz"), "must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(model, 2, rng, size=(3, 3), **kwargs)
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        generate(unconditional, 2, rng, size=(3, 3), guidance=2.0,
                 unconditional=unconditional)


def test_draw_order_is_one_uniform_per_sub_pixel_in_raster_order():
    """Replaying the uniforms by hand through the recorded distributions
    gives the same images: one rng.random(N) per sub-pixel, raster order,
    then colour."""
    model = small(GatedPixelCNN, image_channels=3, channels=6)
    run = generate(model, 2, np.random.default_rng(9), size=(3, 4),
                   record_probs=True)
    rng = np.random.default_rng(9)
    for i in range(3):
        for j in range(4):
            for c in range(3):
                u = rng.random(2)
                cdf = np.cumsum(run.probs[:, c, i, j], axis=-1)
                expected = (cdf <= (u * cdf[:, -1])[:, None]).sum(axis=-1)
                np.testing.assert_array_equal(run.images[:, c, i, j], expected)


def test_greedy_generation_draws_nothing_and_seeds_repeat():
    model = small(GatedPixelCNN)
    rng = np.random.default_rng(4)
    state = rng.bit_generator.state
    generate(model, 2, rng, size=(4, 4), temperature=0)
    assert rng.bit_generator.state == state
    a = sample_images(model, 3, np.random.default_rng(1), size=(5, 5))
    b = sample_images(model, 3, np.random.default_rng(1), size=(5, 5))
    c = sample_images(model, 3, np.random.default_rng(2), size=(5, 5))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_sample_images_defaults_to_mnist_size():
    model = GatedPixelCNN(GatedPixelCNN.default_config(), seed=0)
    images = sample_images(model, 1, np.random.default_rng(0))
    assert images.shape == (1, 1, 28, 28) and images.dtype == np.uint8


def test_snapshots_show_raster_order_growth():
    model = small(GatedPixelCNN)
    run = generate(model, 2, np.random.default_rng(0), size=(4, 5),
                   snapshot_every=6)
    # 20 sub-pixels: snapshots after 6, 12, 18 and the finished 20.
    assert run.snapshot_steps.tolist() == [6, 12, 18, 20]
    np.testing.assert_array_equal(run.snapshots[-1], run.images)
    for shot, steps in zip(run.snapshots, run.snapshot_steps):
        flat = shot.reshape(2, -1)
        np.testing.assert_array_equal(flat[:, :steps],
                                      run.images.reshape(2, -1)[:, :steps])
        assert (flat[:, steps:] == 0).all()


def test_bad_arguments_are_clear_errors():
    model = small(GatedPixelCNN)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="engine"):
        generate(model, 1, rng, size=(3, 3), engine="fast")
    with pytest.raises(ValueError, match="n must be"):
        generate(model, 0, rng, size=(3, 3))
    with pytest.raises(TypeError, match="Generator"):
        generate(model, 1, 0, size=(3, 3))
    with pytest.raises(ValueError, match="size"):
        generate(model, 1, rng, size=(0, 3))
    with pytest.raises(ValueError, match="unconditional"):
        generate(model, 1, rng, size=(3, 3), labels=1)
    with pytest.raises(ValueError, match="k = 0"):
        generate(model, 1, rng, size=(3, 3), top_k=0)
    conditional = small(GatedPixelCNN, classes=3)
    with pytest.raises(ValueError, match="class-conditional"):
        generate(conditional, 1, rng, size=(3, 3))
    with pytest.raises(ValueError, match="0..2"):
        generate(conditional, 2, rng, size=(3, 3), labels=np.array([0, 3]))
    with pytest.raises(ValueError, match="one class or 2"):
        generate(conditional, 2, rng, size=(3, 3), labels=np.array([0, 1, 2]))

"""The digit readers of npar.sampling.classifier on small inputs: the
convolutional reader's gradient against float64 finite differences, its
shapes, and its argument errors. (Their accuracy on real MNIST is checked in
tests/test_conditional_samples.py.)"""

import numpy as np
import pytest

from npar.sampling.classifier import (
    CNNDigitClassifier,
    cnn_loss_and_grads,
    fit_cnn_digit_classifier,
    init_cnn_params,
)

from gradient_tools import check_gradients

NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")


def test_cnn_reader_gradient_matches_finite_differences_in_float64():
    rng = np.random.default_rng(0)
    params = init_cnn_params((1, 8, 12), classes=4, seed=1, dtype=np.float64)
    # Biases off zero, so that some ReLUs sit on either side.
    for name in ("b1", "b2", "b3"):
        params[name] = rng.normal(0, 0.3, params[name].shape)
    x = rng.random((3, 1, 8, 12))
    labels = np.array([0, 3, 1])
    _, grads = cnn_loss_and_grads(params, x, labels)

    def loss(*arrays):
        return cnn_loss_and_grads(dict(zip(NAMES, arrays)), x, labels)[0]

    errors = check_gradients(loss, [grads[n] for n in NAMES],
                             [params[n] for n in NAMES], rng)
    assert max(errors) <= 1e-6, dict(zip(NAMES, errors))


def test_cnn_reader_learns_two_shapes_and_reads_uint8_images():
    # Bright left half against bright right half, 8 x 8: learnt at once.
    images = np.zeros((64, 1, 8, 8), np.uint8)
    labels = np.arange(64) % 2
    images[labels == 0, :, :, :4] = 200
    images[labels == 1, :, :, 4:] = 200
    reader = fit_cnn_digit_classifier(images, labels, classes=2, epochs=3,
                                      batch_size=16, lr=1e-2)
    assert isinstance(reader, CNNDigitClassifier)
    assert reader.log_probs(images).shape == (64, 2)
    assert reader.accuracy(images, labels) == 1.0


def test_cnn_reader_argument_errors():
    with pytest.raises(ValueError, match="multiples of 4 and C >= 1, got C=1, 6 x 8"):
        init_cnn_params((1, 6, 8))
    images = np.zeros((4, 1, 8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        fit_cnn_digit_classifier(images, np.zeros(3, int))
    with pytest.raises(ValueError, match="0..9"):
        fit_cnn_digit_classifier(images, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="integer"):
        fit_cnn_digit_classifier(images.astype(np.float32), np.zeros(4, int))


def test_cnn_reader_input_errors_name_the_value():
    params = init_cnn_params((1, 8, 8), classes=3)
    reader = CNNDigitClassifier(params)
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ValueError,
                       match=r"H W = 64 pixels .* got shape \(2, 1, 12, 12\)"):
        reader.log_probs(np.zeros((2, 1, 12, 12), np.uint8))
    with pytest.raises(ValueError, match="got shape"):
        cnn_loss_and_grads(params, np.zeros((2, 1, 4, 4), np.float32), [0, 1])
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        cnn_loss_and_grads(params, x, np.array([0]))
    with pytest.raises(ValueError, match="0..2, got values from -1 to 1"):
        cnn_loss_and_grads(params, x, np.array([1, -1]))
    with pytest.raises(TypeError, match="integers"):
        cnn_loss_and_grads(params, x, np.array([0.0, 1.7]))
    with pytest.raises(ValueError, match="0..255, got values from 0 to 1000"):
        reader.predict(np.full((2, 1, 8, 8), 1000) * np.array([0, 1])[:, None, None,
                                                                        None])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        reader.log_probs(np.zeros((2, 1, 8, 8), np.uint8), batch_size=0)
    with pytest.raises(ValueError, match="C=0"):
        init_cnn_params((0, 4, 4))
    with pytest.raises(ValueError, match="no images"):
        fit_cnn_digit_classifier(np.zeros((0, 1, 8, 8), np.uint8), np.zeros(0, int))
    with pytest.raises(ValueError, match="classes must be an integer >= 1, got 0"):
        fit_cnn_digit_classifier(np.zeros((2, 1, 8, 8), np.uint8), [0, 0], classes=0)


def test_cnn_reader_reads_no_images_and_float64_weights():
    params = init_cnn_params((1, 8, 8), classes=3, dtype=np.float64)
    reader = CNNDigitClassifier(params)
    assert reader.log_probs(np.zeros((0, 1, 8, 8), np.uint8)).shape == (0, 3)
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8)).astype(np.uint8)
    log_p = reader.log_probs(images, batch_size=2)
    assert log_p.dtype == np.float64 and log_p.shape == (5, 3)
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=1e-12)

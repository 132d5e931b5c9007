"""Do class-conditional samples show the class they were asked for?

Digit readers trained here on real MNIST (:mod:`npar.sampling.classifier`)
read the samples of a trained class-conditional Gated PixelCNN. The judge is
the small convolutional reader (about 98% on the MNIST test set); the
logistic-regression reader (about 91%) is trained and checked too, and its
reading of the samples is reported beside. The always-on tests check the
readers themselves; the sample test needs a trained model, named by the
environment variable ``NPAR_CONDITIONAL_CKPT`` (for example a checkpoint of
``npar train pixelcnn --conditional``), and is skipped without one.
``NPAR_CONDITIONAL_MIN_ACCURACY`` (default 0.8, the project's goal) sets the
share of samples that must be read as their class. With
``NPAR_UNCONDITIONAL_CKPT`` (an unconditional Gated PixelCNN checkpoint) the
samples are drawn with class guidance of weight ``NPAR_GUIDANCE`` (default
2; see :func:`npar.sampling.strategies.guided_logits`). ``NPAR_SAMPLE_SEED``
(default 0) seeds the draws.
"""

import os

import numpy as np
import pytest

from npar.data.mnist import load_mnist
from npar.sampling.classifier import fit_cnn_digit_classifier, fit_digit_classifier
from npar.sampling.pixelcnn import generate

CHECKPOINT = os.environ.get("NPAR_CONDITIONAL_CKPT")
MIN_ACCURACY = float(os.environ.get("NPAR_CONDITIONAL_MIN_ACCURACY", "0.8"))
UNCONDITIONAL = os.environ.get("NPAR_UNCONDITIONAL_CKPT")
GUIDANCE = float(os.environ.get("NPAR_GUIDANCE", "2"))
SEED = int(os.environ.get("NPAR_SAMPLE_SEED", "0"))
PER_CLASS = 10
TRAIN_IMAGES = 20000


@pytest.fixture(scope="module")
def train():
    images, labels = load_mnist("train")
    return images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES]


@pytest.fixture(scope="module")
def test_set():
    return load_mnist("test")


@pytest.fixture(scope="module")
def linear_reader(train):
    return fit_digit_classifier(*train, epochs=5)


@pytest.fixture(scope="module")
def reader(train):
    return fit_cnn_digit_classifier(*train, epochs=2)


def check_reads_real_digits(classifier, test_set, at_least):
    images, labels = test_set
    accuracy = classifier.accuracy(images, labels)
    assert accuracy >= at_least, f"accuracy {accuracy:.4f} on the 10,000 test images"
    # It is not one class for everything: every digit is predicted often.
    counts = np.bincount(classifier.predict(images), minlength=10)
    assert counts.min() > 500


def test_the_linear_reader_reads_real_mnist_test_digits(linear_reader, test_set):
    check_reads_real_digits(linear_reader, test_set, 0.80)


def test_the_convolutional_reader_reads_real_mnist_test_digits(reader, test_set):
    check_reads_real_digits(reader, test_set, 0.97)


@pytest.mark.skipif(CHECKPOINT is None, reason=(
    "needs a trained class-conditional Gated PixelCNN: set "
    "NPAR_CONDITIONAL_CKPT to its checkpoint (npar train pixelcnn --conditional)"))
def test_conditional_samples_are_read_as_their_class(reader, linear_reader):
    from npar.models.io import load

    model = load(CHECKPOINT, kind="gated_pixelcnn")
    assert model.config.get("classes") == 10, (
        f"{CHECKPOINT} is not a 10-class conditional model: {model.config}")
    guide = {}
    if UNCONDITIONAL:
        guide = dict(guidance=GUIDANCE,
                     unconditional=load(UNCONDITIONAL, kind="gated_pixelcnn"))
    labels = np.repeat(np.arange(10), PER_CLASS)
    images = generate(model, len(labels), np.random.default_rng(SEED),
                      size=(28, 28), labels=labels, **guide).images
    predicted = reader.predict(images)
    accuracy = float(np.mean(predicted == labels))
    per_class = [float(np.mean(predicted[labels == k] == k)) for k in range(10)]
    linear = float(np.mean(linear_reader.predict(images) == labels))
    print(f"\nread as their class: {accuracy:.2f} (convolutional reader), "
          f"{linear:.2f} (linear reader); per class {per_class}; guidance "
          f"{GUIDANCE if UNCONDITIONAL else None}, seed {SEED}")
    assert accuracy >= MIN_ACCURACY, (
        f"only {accuracy:.2f} of {len(labels)} samples read as their class "
        f"(per class {per_class}; the linear reader: {linear:.2f}); need "
        f"{MIN_ACCURACY}")
    # Far above what unconditioned digits would give (about 1 in 10).
    assert accuracy > 0.1 + 3 * np.sqrt(0.09 / len(labels))

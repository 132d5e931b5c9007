"""A small digit classifier, to check that class-conditional samples show
the class they were asked for.

Multinomial logistic regression on pixel intensities, trained in a few
seconds with NumPy (no pretrained network, nothing downloaded). With
``x`` an image flattened to ``D = C H W`` values in ``[0, 1]``:

.. math::  p(y = k \\mid x) = \\mathrm{softmax}(W x + b)_k,

trained by minibatch gradient descent on the mean cross-entropy plus an
L2 penalty ``(lambda / 2) ||W||^2``, whose gradient on a batch of ``B``
images with one-hot targets ``Y`` and probabilities ``P`` is

.. math::  \\partial L / \\partial W = (P - Y)^\\top X / B + \\lambda W,\\qquad
           \\partial L / \\partial b = \\textstyle\\sum_r (P - Y)_r / B .

On MNIST it reaches about 90% test accuracy.
"""

from dataclasses import dataclass

import numpy as np

from npar.ops.softmax import log_softmax


def _features(images):
    images = np.asarray(images)
    if images.dtype.kind not in "iu" or images.ndim != 4:
        raise ValueError(
            "images must be integer (N, C, H, W) arrays in 0..255, got "
            f"{images.dtype} {images.shape}"
        )
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


@dataclass
class DigitClassifier:
    """Weights ``w`` ``(K, D)`` and bias ``b`` ``(K,)`` of the regression."""

    w: np.ndarray
    b: np.ndarray

    def log_probs(self, images):
        """``(N, K)`` log-probabilities of the classes of ``(N, C, H, W)``
        uint8 images."""
        return log_softmax(_features(images) @ self.w.T + self.b, axis=1)

    def predict(self, images):
        """``(N,)`` most probable class of each image."""
        return np.argmax(self.log_probs(images), axis=1)

    def accuracy(self, images, labels):
        """Share of ``images`` classified as their ``labels``."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))


def fit_digit_classifier(images, labels, classes=10, epochs=5, batch_size=100,
                         lr=0.5, l2=1e-4, seed=0):
    """Train a :class:`DigitClassifier` (see the module docstring).

    Args:
        images: ``(N, C, H, W)`` uint8.
        labels: ``(N,)`` integers in ``0..classes-1``.
        classes: number of classes ``K``.
        epochs, batch_size, lr, l2: the gradient descent; batches follow a
            permutation from ``numpy.random.default_rng(seed)`` per epoch.

    Returns:
        the classifier.
    """
    x = _features(images)
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {labels.shape}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    rng = np.random.default_rng(seed)
    w = np.zeros((classes, x.shape[1]), np.float32)
    b = np.zeros(classes, np.float32)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            chosen = order[start:start + batch_size]
            batch = x[chosen]
            delta = np.exp(log_softmax(batch @ w.T + b, axis=1))
            delta[np.arange(len(chosen)), labels[chosen]] -= 1.0
            delta /= len(chosen)

            w -= lr * (delta.T @ batch + l2 * w)
            b -= lr * delta.sum(axis=0)
    return DigitClassifier(w, b)

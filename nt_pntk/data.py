"""Real, offline data: scikit-learn's handwritten digits (8×8×1, ten classes)."""

from __future__ import annotations

import numpy as np


def load_digits_images(*, standardize: bool = True, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as NHWC images `(1797, 8, 8, 1)` and integer labels.

    Args:
      standardize: subtract the mean pixel and divide by the pixel standard
        deviation (over the whole set), so inputs are O(1) as NTK theory assumes.
      dtype: floating dtype of the images.

    Returns:
      ``(images, labels)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64)[..., None]
    if standardize:
        images = (images - images.mean()) / images.std()
    return images.astype(dtype), digits.target.astype(np.int64)


def digits_split(n_train: int, n_test: int, *, seed: int = 0, dtype=np.float32) -> tuple[np.ndarray, ...]:
    """A random train/test split of the digits: `(x_train, y_train, x_test, y_test)`.

    Labels are integer classes; `one_hot(y, 10)` makes regression targets.

    Raises:
      ValueError: `n_train + n_test` larger than the 1,797 digits, or below 1.
    """
    images, labels = load_digits_images(dtype=dtype)
    if n_train < 1 or n_test < 0 or n_train + n_test > len(images):
        raise ValueError(
            f"`n_train` + `n_test` must be between 1 and {len(images)}; got {n_train} + {n_test}."
        )
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    return images[train], labels[train], images[test], labels[test]


def one_hot(labels: np.ndarray, classes: int, dtype=np.float32) -> np.ndarray:
    """Centered one-hot targets: 1 - 1/classes at the label, -1/classes elsewhere."""
    return (np.eye(classes)[labels] - 1.0 / classes).astype(dtype)

"""Real, offline data: scikit-learn's handwritten digits (8×8×1, ten classes)."""

from __future__ import annotations

import numpy as np

from nt_pntk._src import checks


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

    Labels are integer classes; `centred_one_hot(y, 10)` makes regression targets.

    Raises:
      ValueError: `n_train + n_test` larger than the 1,797 digits, or below 1; a `seed` outside
        [0, 2**32).
    """
    checks.seed("seed", seed)
    images, labels = load_digits_images(dtype=dtype)
    if n_train < 1 or n_test < 0 or n_train + n_test > len(images):
        raise checks.UsageError(
            f"`n_train` + `n_test` must be between 1 and {len(images)}; got {n_train} + {n_test}."
        )
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    return images[train], labels[train], images[test], labels[test]


def centred_one_hot(labels: np.ndarray, classes: int, dtype=np.float32) -> np.ndarray:
    """Centred one-hot regression targets: ``1 - 1/classes`` at the label, ``-1/classes`` elsewhere.

    Not the plain 0/1 one-hot encoding: every row sums to 0 (the plain encoding minus
    ``1/classes``), the usual NTK-regression targets; ``np.argmax`` of a row is still the
    label.

    Args:
      labels: integer class labels in ``[0, classes)``, any shape.
      classes: the number of classes, at least 1.
      dtype: floating dtype of the targets.

    Returns:
      ``labels.shape + (classes,)`` targets.

    Raises:
      ValueError: a label outside ``[0, classes)`` (a negative one would otherwise
        index from the end), a non-integer label, or ``classes`` below 1.
    """
    classes = checks.positive_int("classes", classes)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        # Integer-valued floats (e.g. labels loaded from a float CSV) are accepted, others are not.
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            flat = labels.reshape(-1)
            bad = next((v for v in flat if not _is_integral(v)), flat[0] if flat.size else labels)
            raise checks.UsageError(
                f"`labels` must be integer classes in [0, {classes}); got {bad!r} "
                f"(dtype {labels.dtype}). Pass e.g. labels.astype(int) if they are whole numbers."
            )
        labels = labels.astype(np.int64)
    outside = (labels < 0) | (labels >= classes)
    if np.any(outside):
        bad = labels[outside].reshape(-1)
        raise checks.UsageError(
            f"`labels` must be in [0, {classes}) for classes={classes}; got {bad[0]} "
            f"({bad.size} label{'s' if bad.size > 1 else ''} outside, of {labels.size}). "
            "Shift them (e.g. labels - labels.min()) or pass a larger `classes`."
        )
    return (np.eye(classes)[labels] - 1.0 / classes).astype(dtype)


def _is_integral(value) -> bool:
    try:
        return bool(np.isfinite(value) and value == np.round(value))
    except TypeError:
        return False

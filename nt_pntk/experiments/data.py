"""Real, offline data: scikit-learn's handwritten digits as 8×8×1 images, and regression targets."""

from nt_pntk._src.experiments.data import centred_one_hot, digits_split, load_digits_images, one_hot

__all__ = ["centred_one_hot", "digits_split", "load_digits_images", "one_hot"]

"""Real, offline data: scikit-learn's handwritten digits as 8×8×1 images, and regression targets."""

from nt_pntk._src import deprecations as _deprecations
from nt_pntk._src.experiments.data import centred_one_hot, digits_split, load_digits_images

__all__ = ["centred_one_hot", "digits_split", "load_digits_images"]

# Old names (`one_hot`): served with a warning from the one table.
__getattr__ = _deprecations.module_getattr(__name__)

import tempfile
from pathlib import Path

import jax
import numpy as np

import nt_pntk
from nt_pntk import regression
from nt_pntk.approximations import Sketch
from nt_pntk.experiments import data, models

# A ResNet on the digits (for CIFAR-sized inputs and a wider ResNet, only the shapes change).
model = models.get_model("resnet", width=8, outputs=10, depth=10)
x_train, y_train, x_test, y_test = data.digits_split(300, 150)
_, params = model.init_fn(jax.random.PRNGKey(0), x_train.shape)

# Each input's pNTK gradient sketched to k = 2,048 numbers: Φ Φᵀ estimates the pNTK without bias.
kernel_fn = Sketch(dim=2048, seed=0).kernel_fn(model.apply_fn)
folder = Path(tempfile.mkdtemp())  # on disk, in blocks, resumable: the same for 50,000 inputs
phi_train = nt_pntk.feature_matrix(kernel_fn, x_train, params, output=folder / "train.npy")
phi_test = nt_pntk.feature_matrix(kernel_fn, x_test, params, output=folder / "test.npy")

# Kernel regression in the primal: O(N k²) time, O(k²) memory, linear in N.
targets = data.centred_one_hot(y_train, 10)
f_test = regression.predict_features(phi_train, targets, phi_test, ridge=1e-3)
print("features:", phi_train.shape, "accuracy:", float(np.mean(f_test.argmax(1) == y_test)))

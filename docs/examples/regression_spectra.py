import jax

from nt_pntk import approximations, regression, spectra
from nt_pntk.experiments import data, models

model = models.get_model("fc", width=256, outputs=10)
x_train, y_train, x_test, y_test = data.digits_split(200, 100)
_, params = model.init_fn(jax.random.PRNGKey(0), x_train.shape)

kernel_fn = jax.jit(approximations.PNTK().kernel_fn(model.apply_fn, vmap_axes=0))
k_train = kernel_fn(x_train, None, params)  # (200, 200)
k_test = kernel_fn(x_test, x_train, params)  # (100, 200)
targets = data.centred_one_hot(y_train, 10)
f_test = regression.predict(k_train, targets, k_test, ridge=1e-3)  # (100, 10)
print("accuracy:", (f_test.argmax(1) == y_test).mean())
print("condition number:", spectra.spectrum(k_train).condition_number)

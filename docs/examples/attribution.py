import jax
import jax.numpy as jnp
import numpy as np

from nt_pntk import attribution
from nt_pntk.approximations import PNTK
from nt_pntk.experiments import data, models

# A small MLP trained briefly on 200 digits (plain gradient descent on cross-entropy).
x_train, y_train, x_test, y_test = data.digits_split(200, 3)
model = models.get_model("fc", width=64, outputs=10, depth=2)
_, params = model.init_fn(jax.random.PRNGKey(0), x_train.shape)


def loss(params):
    logits = model.apply_fn(params, x_train)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y_train)), y_train])


step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.5 * g, p, jax.grad(loss)(p)))
for _ in range(100):
    params = step(params)

# The pNTK of the trained network, and the kernel surrogate fitted to its logits (Engel et al.).
kernel_fn = PNTK().kernel_fn(model.apply_fn)
k_train = np.asarray(kernel_fn(x_train, None, params), np.float64)
k_test = np.asarray(kernel_fn(x_test, x_train, params), np.float64)
train_logits = np.asarray(model.apply_fn(params, x_train))
test_logits = np.asarray(model.apply_fn(params, x_test))
readout = attribution.margin_readout(test_logits, y_test)  # attribute each test digit's margin
k_train = (k_train + k_train.T) / 2  # symmetric up to float32 round-off
surrogate = attribution.surrogate_scores(k_test, k_train, train_logits, readout)

# TRAK-style: the regression weights times the residuals 1 - p_i and the readouts' agreement.
residuals = attribution.residuals(train_logits, y_train)
train_readout = attribution.margin_readout(train_logits, y_train)
trak = attribution.trak_scores(k_test, k_train, residuals, test_readout=readout, train_readout=train_readout)

for name, scores in [("surrogate", surrogate), ("TRAK", trak)]:
    for x, row in enumerate(scores):
        top = np.argsort(row)[::-1][:5]  # the training digits that raise the margin most
        print(f"{name}, test digit {x} (a {y_test[x]}): top {top.tolist()}, labels {y_train[top].tolist()}")

import jax
import numpy as np

from nt_pntk import active_learning
from nt_pntk.approximations import PNTK
from nt_pntk.experiments import data, models

# A pool of 150 digits whose labels an oracle reveals, 10 of them labelled; a small CNN.
x_pool, y_pool, _, _ = data.digits_split(150, 0, seed=0)
model = models.get_model("cnn", width=8, outputs=10, depth=2)
_, params = model.init_fn(jax.random.PRNGKey(0), x_pool.shape)

# Three rounds of 10 labels chosen by look-ahead with the pNTK at initialization (pass a `train_fn`
# to retrain the network each round and use the kernel at its trained parameters, as the paper does).
kernel_fn = PNTK().kernel_fn(model.apply_fn)
history = active_learning.run_rounds(
    kernel_fn, model.apply_fn, params, x_pool, y_pool, range(10), rounds=3, per_round=10, ridge=1e-3
)
labelled = history[-1]
print("labelled:", len(labelled), "classes covered:", len(np.unique(y_pool[labelled])))

# The scores themselves, from any kernel: how much labelling each pool digit would change the pool's
# predictions (block-inverse update of the kernel regression, one candidate at a time, never re-solving).
k = np.asarray(kernel_fn(x_pool, None, params), np.float64)
f0 = np.asarray(model.apply_fn(params, x_pool), np.float64)
pool = np.setdiff1d(np.arange(len(x_pool)), labelled)
k_ll, k_ul, k_uu = k[np.ix_(labelled, labelled)], k[np.ix_(pool, labelled)], k[np.ix_(pool, pool)]
y_l = data.centred_one_hot(y_pool[labelled], 10)
scores = active_learning.lookahead_scores(k_ll, k_ul, k_uu, y_l, f0[labelled], f0[pool], ridge=1e-3)
print("next to label:", pool[active_learning.select(scores, 5)])

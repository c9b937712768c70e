import jax

import nt_pntk
from nt_pntk import approximations, trainability
from nt_pntk.experiments import data, models

x, _, _, _ = data.digits_split(32, 0)  # a minibatch of 32 digits

for depth in (1, 3, 6):
    model = models.get_model("fc", width=64, outputs=10, depth=depth)
    _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
    pntk = trainability.scores(nt_pntk.empirical_pntk_fn(model.apply_fn), x, params)  # 32 x 32
    entk = trainability.scores(approximations.FullENTK().kernel_fn(model.apply_fn), x, params)  # 320 x 320
    print(
        f"depth {depth}: pNTK condition number {pntk.condition_number:.0f} ({pntk.kernel_s:.3f} s), "
        f"eNTK {entk.condition_number:.0f} ({entk.kernel_s:.3f} s)"
    )

import flax.linen as nn
import jax

import nt_pntk


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(256)(x)))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(10)(x)


module = MLP()
x = jax.random.normal(jax.random.PRNGKey(1), (8, 784))
variables = module.init(jax.random.PRNGKey(0), x)  # {'params': ..., 'batch_stats': ...}
apply_fn, params = nt_pntk.from_linen(module, variables)  # params = variables['params']
pntk = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)(x, None, params)
print(pntk.shape)  # (8, 8)

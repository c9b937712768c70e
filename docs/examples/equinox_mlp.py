import equinox as eqx
import jax

import nt_pntk

module = eqx.nn.MLP(784, 10, width_size=256, depth=1, key=jax.random.PRNGKey(0))
apply_fn, params = nt_pntk.from_equinox(module)  # {'layers.0.bias': ..., 'layers.0.weight': ...}
x1 = jax.random.normal(jax.random.PRNGKey(1), (8, 784))
x2 = jax.random.normal(jax.random.PRNGKey(2), (4, 784))
kernel_fn = nt_pntk.empirical_kernel_fn(apply_fn, vmap_axes=0)
k = kernel_fn(x1, x2, ("ntk", "pntk"), params)
print(k.ntk.shape, k.pntk.shape)  # (8, 4) (8, 4)

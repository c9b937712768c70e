import jax
from flax import nnx

import nt_pntk


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(784, 256, rngs=rngs)
        self.norm = nnx.BatchNorm(256, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.readout = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        return self.readout(self.dropout(jax.nn.relu(self.norm(self.hidden(x)))))


module = MLP(nnx.Rngs(0))
module.eval()  # BatchNorm uses its running statistics, Dropout is off
apply_fn, params = nt_pntk.from_nnx(module)  # {'hidden.bias': ..., 'hidden.kernel': ..., ...}
x = jax.random.normal(jax.random.PRNGKey(1), (9, 784))
kernel_fn = nt_pntk.approximations.PNTK().kernel_fn(apply_fn, vmap_axes=0)
k = nt_pntk.kernel_matrix(kernel_fn, x, None, params, tile_size=4, progress=False)
print(k.shape, sorted(params)[:2])  # (9, 9) ['hidden.bias', 'hidden.kernel']

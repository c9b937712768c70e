"""What importing nt_pntk (or neural_tangents, through the ``.pth`` file) sets up: cheap, no JAX import.

* `xla_cpu.apply`: the ``XLA_FLAGS`` workaround for jaxlib 0.10.2's CPU miscompile,
  while JAX's CPU backend has not started;
* `nt_hook.install`: the import hook that adapts neural-tangents 0.6.5 to the
  running JAX as its modules load.

``startup/_nt_pntk_startup.py``, installed beside the package with a ``.pth``
file that imports it at interpreter start, calls `activate` the moment
``neural_tangents`` is first imported, so ``import neural_tangents`` needs no
``import nt_pntk`` before it.
"""

from __future__ import annotations

import sys

from nt_pntk._src.compat import nt_hook, xla_cpu


def activate() -> None:
    """Applies the XLA workaround where needed and installs NT's import hook (idempotent)."""
    xla_cpu.apply()
    nt_hook.install()
    # The startup finder has nothing left to wait for (nt_hook's finder now comes first).
    for finder in [f for f in sys.meta_path if type(f).__name__ == "_ActivateOnNeuralTangents"]:
        sys.meta_path.remove(finder)

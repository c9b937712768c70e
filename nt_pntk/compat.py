"""How neural-tangents 0.6.5 is made to run on this JAX, and XLA's CPU workaround.

* `applied_patches`: what was adapted in this process, each with its reason;
* `xla_status`: whether the ``XLA_FLAGS`` workaround for jaxlib 0.10.2 is in effect.
"""

from nt_pntk._src.compat.nt_hook import applied_patches
from nt_pntk._src.compat.xla_cpu import XlaMiscompileWarning
from nt_pntk._src.compat.xla_cpu import status as xla_status

__all__ = ["XlaMiscompileWarning", "applied_patches", "xla_status"]

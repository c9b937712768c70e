"""How neural-tangents 0.6.5 is made to run on this JAX, and XLA's CPU workaround.

* `applied_patches`: what nt_pntk changed in this process, as `AppliedPatch`
  records (``kind``, ``module``, ``reason``), adaptations to the running JAX
  first (kind ``"adaptation"``), then fixes of NT's own bugs that apply on every
  JAX (``"nt-bug"``), then the ``XLA_FLAGS`` workaround (``"xla"``);
  ``print(*nt_pntk.compat.applied_patches(), sep="\\n")`` shows one line each;
* `xla_status`: whether the ``XLA_FLAGS`` workaround for jaxlib 0.10.2 is in effect
  (`XlaMiscompileWarning` when it came too late);
* `SUPPORTED_NT_VERSION`: the one neural-tangents release nt_pntk adapts; its
  patched files are pinned by sha256, so another version is an `ImportError`
  that names the fix (``pip install --no-deps neural-tangents==0.6.5``).
"""

from nt_pntk._src.compat.nt_hook import SUPPORTED_NT_VERSION, AppliedPatch, PatchKind, applied_patches
from nt_pntk._src.compat.xla_cpu import XlaMiscompileWarning
from nt_pntk._src.compat.xla_cpu import status as xla_status

__all__ = [
    "SUPPORTED_NT_VERSION",
    "AppliedPatch",
    "PatchKind",
    "XlaMiscompileWarning",
    "applied_patches",
    "xla_status",
]

"""Make neural-tangents 0.6.5 import and run on JAX 0.4.30 – 0.10.x, without TensorFlow: the import hook.

neural-tangents (NT) 0.6.5 is the last release. It imports TensorFlow at import
time (through ``neural_tangents.experimental``) and uses JAX internals that
later JAX releases deprecated, moved or removed. This module installs an import
hook that rewrites a handful of lines in NT's own modules *as they are loaded*:
nothing on disk changes, JAX itself is not touched, and each patch applies only
when the running JAX (or SciPy, or environment) actually needs it. On a stack
where NT works unmodified, every patch is skipped.

One job per module:

* `probes`: whether the running stack needs a patch (no warning, no compile, no
  backend started);
* `shims`: what patched NT code calls in place of changed JAX internals (it sees
  that module as ``_nt_pntk_compat``, set in its namespace by the loader here);
* `patches`: the patch table (``PATCHES``, each with the reason it exists) and
  the sha256 of each patched file in NT 0.6.5 (``NT_SOURCE_SHA256``);
* this module: the finder and loader. Another NT version, or a modified file, is
  an `ImportError` that names the file, both digests and the fix, instead of
  half-patched code. The patched text is registered with `linecache` and served
  by the loader's ``get_source``: tracebacks, `inspect` and debuggers show what
  runs.

``install()`` is called by ``import nt_pntk`` and, through the startup ``.pth``
file installed with nt_pntk, when ``neural_tangents`` is imported first.
``applied_patches()`` lists what was applied in this process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import linecache
import sys
from typing import Any, Literal

from nt_pntk._src.compat import patches, shims
from nt_pntk._src.compat.patches import INSTALL_NT, SUPPORTED_NT_VERSION

# --- NT's version and files, checked before any patch applies ---------------------


def _check_nt_version() -> None:
    try:
        version = importlib.metadata.version("neural-tangents")
    except importlib.metadata.PackageNotFoundError:
        return  # NT on sys.path without metadata (a source checkout): the digests decide
    if version != SUPPORTED_NT_VERSION:
        raise ImportError(
            f"neural-tangents {version} is installed, but nt_pntk (installed in this environment, it "
            f"adapts neural_tangents on import) supports only neural-tangents=={SUPPORTED_NT_VERSION}, "
            f"whose source its patches rewrite. Fix: `{INSTALL_NT}`."
        )


def _verified_source(module: str, origin: str, data: bytes) -> str:
    """`data` (the bytes of `module`'s file) as text, if it is NT 0.6.5's file; else ImportError."""
    expected, found = patches.NT_SOURCE_SHA256[module], hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ImportError(
            f"nt_pntk cannot adapt `{module}`: {origin} is not the file neural-tangents=="
            f"{SUPPORTED_NT_VERSION} ships (sha256 expected {expected}, found {found}), so another "
            f"NT version or a modified file. nt_pntk's patches rewrite lines of that exact file. "
            f"Fix: `{INSTALL_NT} --force-reinstall`."
        )
    return importlib.util.decode_source(data)


# --- Applying the patches ---------------------------------------------------------

PatchKind = Literal["adaptation", "nt-bug", "xla"]
_KIND_ORDER: tuple[PatchKind, ...] = ("adaptation", "nt-bug", "xla")


@dataclasses.dataclass(frozen=True)
class AppliedPatch:
    """One change nt_pntk made in this process (`print` shows one line)."""

    #: "adaptation": NT adapted to the running JAX, SciPy or environment (absent TensorFlow);
    #: "nt-bug": a fix of a bug of NT itself, applied on every JAX;
    #: "xla": the ``XLA_FLAGS`` workaround for jaxlib's CPU miscompile.
    kind: PatchKind
    #: The module changed: an NT module, or "jaxlib" for the XLA workaround.
    module: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.module}: {self.reason}"


_applied: list[AppliedPatch] = []


def _patch_source(module: str, source: str) -> tuple[str, list[AppliedPatch]]:
    applied = []
    for patch in patches.PATCHES:
        if patch.module != module or not patch.needed():
            continue
        found = source.count(patch.old)
        if found == 0 or (patch.count > 0 and found != patch.count):  # the digests rule this out
            raise ImportError(
                f"nt_pntk cannot adapt `{module}` for this JAX: expected "
                f"{patch.count if patch.count > 0 else 'some'} occurrence(s) of "
                f"{patch.old!r}, found {found}. Fix: `{INSTALL_NT}`."
            )
        source = source.replace(patch.old, patch.new)
        applied.append(AppliedPatch("nt-bug" if patch.nt_bug else "adaptation", module, patch.why))
    return source, applied


class _PatchingLoader(importlib.abc.InspectLoader):
    """Loads an NT module from its verified source with `patches.PATCHES` applied (no .pyc).

    The patched text is what `get_source` returns and what `linecache` holds for the
    file, so tracebacks, `inspect.getsource` and debuggers show the code that runs.
    Anything else (`get_data`, `get_resource_reader`, ...) is the original loader's.
    """

    def __init__(self, fullname: str, origin: str, original: Any):
        self._fullname = fullname
        self._origin = origin
        self._original = original
        self._patched: tuple[str, list[AppliedPatch]] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._original, name)

    def _source(self) -> tuple[str, list[AppliedPatch]]:
        if self._patched is None:
            if self._fullname == "neural_tangents":
                _check_nt_version()
            get_data = getattr(self._original, "get_data", None)
            if get_data is not None:
                data = get_data(self._origin)
            else:
                with open(self._origin, "rb") as f:
                    data = f.read()
            source = _verified_source(self._fullname, self._origin, data)
            self._patched = _patch_source(self._fullname, source)
        return self._patched

    def get_source(self, fullname: str) -> str:
        return self._source()[0]

    def is_package(self, fullname: str) -> bool:
        return self._original.is_package(fullname)

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        source, applied = self._source()
        # mtime None: `linecache.checkcache` keeps the entry (the file on disk is the unpatched text).
        linecache.cache[self._origin] = (len(source), None, source.splitlines(keepends=True), self._origin)
        module.__dict__[patches.COMPAT_NAME] = shims
        _applied.extend(p for p in applied if p not in _applied)
        exec(compile(source, self._origin, "exec", dont_inherit=True), module.__dict__)


def _asked_by_an_import() -> bool:
    """Whether the finder runs for an import (which fails if it finds nothing), not a probe.

    `importlib.util.find_spec` probes expect None for a module that is not installed;
    an import statement (or `importlib.import_module`) gets a `ModuleNotFoundError`
    anyway, and ours says how to install NT.
    """
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return False
        name = frame.f_globals.get("__name__")
        if name == "importlib.util":
            return False
        if name == "importlib._bootstrap" and frame.f_code.co_name == "_find_and_load_unlocked":
            return True
        frame = frame.f_back
    return False


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """First on `sys.meta_path`: gives the patched NT modules a `_PatchingLoader`."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in patches.PATCHED_MODULES:
            return None
        if fullname == "neural_tangents":
            from nt_pntk._src.compat import xla_cpu as _xla_cpu

            _xla_cpu.apply()  # NT imported on its own (before nt_pntk's kernels) gets it too
        spec = _find_elsewhere(fullname, path, target)
        if spec is None:
            if fullname == "neural_tangents" and _asked_by_an_import():
                raise ModuleNotFoundError(
                    "No module named 'neural_tangents': nt_pntk's kernels need neural-tangents=="
                    f"{SUPPORTED_NT_VERSION}, installed without its dependencies (its metadata "
                    f"requires TensorFlow, which nt_pntk does not use): `{INSTALL_NT}`.",
                    name=fullname,
                )
            return None
        if spec.origin is None or not spec.has_location:
            raise ImportError(f"nt_pntk cannot adapt `{fullname}`: no source file. Fix: `{INSTALL_NT}`.")
        spec.loader = _PatchingLoader(fullname, spec.origin, spec.loader)
        return spec


def _find_elsewhere(fullname: str, path, target) -> importlib.machinery.ModuleSpec | None:
    """The spec that the other finders (the path finder, an editable install's, ...) give."""
    for finder in list(sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if finder is _finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


_finder = _PatchingFinder()


def _loaded_unpatched(module: str) -> bool:
    loader = getattr(getattr(sys.modules.get(module), "__spec__", None), "loader", None)
    return module in sys.modules and not isinstance(loader, _PatchingLoader)


def install() -> None:
    """Install the import hook for NT (idempotent; cheap: nothing is imported).

    NT's version and files are checked when it is imported: another version, or a
    modified file, is an `ImportError` that names the fix; so is NT not installed.

    Raises:
      ImportError: NT was imported *before* nt_pntk, unpatched, on a stack that
        needs patches (Python started with ``-S``, or nt_pntk used from
        ``PYTHONPATH`` without its ``.pth`` file); the message names the fix.
    """
    if _finder in sys.meta_path:
        return
    stale = [
        m for m in sorted(patches.PATCHED_MODULES) if _loaded_unpatched(m) and patches.needed_adaptations(m)
    ]
    if stale:
        reasons = "; ".join(p.why for m in stale for p in patches.needed_adaptations(m))
        raise ImportError(
            f"neural_tangents was imported before nt_pntk, so {', '.join(stale)} run(s) without the "
            f"adaptation this JAX/SciPy needs ({reasons}). Import nt_pntk before neural_tangents "
            "(restart the interpreter if needed), or install nt_pntk (`pip install nt-pntk`), whose "
            "startup file adapts neural_tangents whenever it is imported first."
        )
    sys.meta_path.insert(0, _finder)


def applied_patches() -> tuple[AppliedPatch, ...]:
    """What nt_pntk changed in this process: adaptations, then NT bug fixes, then XLA's flag.

    ``print(*applied_patches(), sep="\\n")`` shows one line each.
    """
    from nt_pntk._src.compat import xla_cpu as _xla_cpu

    xla = _xla_cpu.describe()
    patches = [*_applied, *([AppliedPatch("xla", "jaxlib", xla)] if xla else [])]
    return tuple(sorted(patches, key=lambda p: _KIND_ORDER.index(p.kind)))  # stable: load order kept

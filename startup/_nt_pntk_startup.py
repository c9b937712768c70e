"""Installed beside nt_pntk and imported at interpreter start by ``nt_pntk_startup.pth``.

It only registers a finder that waits for ``neural_tangents``: on its first
import, nt_pntk's NT adaptation is activated (see ``nt_pntk._src.compat.startup``),
so ``import neural_tangents`` works without ``import nt_pntk`` before it. Until
then nothing is imported (not even ``importlib.abc``, which costs tens of
milliseconds): other programs in the environment are not affected.
"""

import sys


class _ActivateOnNeuralTangents:
    """A meta path finder (duck-typed) that finds nothing, and activates nt_pntk on NT's import."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "neural_tangents" and not fullname.startswith("neural_tangents."):
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            from nt_pntk._src.compat import startup
        except ImportError:  # nt_pntk uninstalled, its .pth file left behind
            return None
        startup.activate()
        # The import system is in the middle of its loop over sys.meta_path, where `activate` has
        # put the adaptation's finder: ask the finders now in place (this one is gone).
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                return spec
        return None


# First: the path finder would otherwise find neural_tangents before this finder is asked.
if not any(type(f).__name__ == "_ActivateOnNeuralTangents" for f in sys.meta_path):
    sys.meta_path.insert(0, _ActivateOnNeuralTangents())

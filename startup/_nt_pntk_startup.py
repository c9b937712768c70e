"""Installed beside nt_pntk and imported at interpreter start by ``nt_pntk_startup.pth``.

It only registers a finder that waits for ``neural_tangents``: on its first
import, nt_pntk's NT adaptation is activated (see ``nt_pntk._src.compat.startup``),
so ``import neural_tangents`` works without ``import nt_pntk`` before it. Until
then nothing is imported: other programs in the environment are not affected.
"""

import importlib.abc
import sys


class _ActivateOnNeuralTangents(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "neural_tangents" and not fullname.startswith("neural_tangents."):
            return None
        sys.meta_path.remove(self)
        try:
            from nt_pntk._src.compat import startup
        except ImportError:  # nt_pntk uninstalled, its .pth file left behind
            return None
        startup.activate()
        # The import system's loop over sys.meta_path has passed the adaptation's finder, which
        # `activate` put first: ask the finders now in place (this one is gone).
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                return spec
        return None


if not any(type(f).__name__ == "_ActivateOnNeuralTangents" for f in sys.meta_path):
    sys.meta_path.append(_ActivateOnNeuralTangents())

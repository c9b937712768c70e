"""The test suite on the oldest and the newest supported JAX.

    nox                      # both sessions
    nox -s oldest            # jax 0.4.30 with a NumPy/SciPy of its time
    nox -s newest -- -x -k compat   # arguments after `--` go to pytest

neural-tangents 0.6.5 is installed with ``--no-deps`` (its metadata requires
TensorFlow, which nt-pntk never uses); each session checks that TensorFlow is
absent, so the suite always runs the TensorFlow-free path. The virtual
environments live in ``.nox/`` and are reused between runs (``nox -R`` skips
the install step altogether).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["oldest", "newest"]
nox.options.envdir = ".nox"
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"
NT = "neural-tangents==0.6.5"
# The oldest supported stack: the `jax>=0.4.30` floor of pyproject.toml, with the
# NumPy and SciPy releases of its time (NumPy 2.0; SciPy 1.13, which still has the
# `eigvalsh(eigvals=...)` that NT uses).
OLDEST = ["jax==0.4.30", "jaxlib==0.4.30", "numpy>=2.0,<2.1", "scipy>=1.13,<1.14", "ml-dtypes<0.5"]
NO_TENSORFLOW = (
    "import importlib.util, sys; "
    "found = [m for m in ('tensorflow', 'tf2jax') if importlib.util.find_spec(m)]; "
    "sys.exit(f'TensorFlow must not be installed here: {found}' if found else 0)"
)

VERSIONS = "import jax, numpy, scipy; print('jax', jax.__version__, numpy.__version__, scipy.__version__)"


def _test(session: nox.Session) -> None:
    session.run("python", "-c", NO_TENSORFLOW)
    session.run("python", "-c", VERSIONS)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def oldest(session: nox.Session) -> None:
    """The whole suite on jax 0.4.30 (the oldest supported)."""
    session.install("-e", ".[test]", *OLDEST)
    session.install("--no-deps", NT)
    _test(session)


@nox.session(python=PYTHON)
def newest(session: nox.Session) -> None:
    """The whole suite on the pinned versions of constraints.txt (the newest supported)."""
    session.install("-c", "constraints.txt", "-e", ".[test]")
    session.install("--no-deps", "-c", "constraints.txt", NT)
    _test(session)

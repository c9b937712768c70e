"""The test suite on the oldest and the newest supported JAX.

    nox                      # both sessions
    nox -s oldest            # jax 0.4.30 with a NumPy/SciPy of its time
    nox -s newest -- -x -k compat   # arguments after `--` go to pytest
    nox -s "differential(stack='newest')"   # the differential test matrix's full sweep

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
# The model libraries' releases of that time (flax 0.12 and equinox 0.13 need jax >= 0.10 / 0.7).
OLDEST_MODEL_LIBRARIES = ["flax==0.8.5", "equinox==0.11.4", "optax<0.2.4", "orbax-checkpoint<0.6"]
NO_TENSORFLOW = (
    "import importlib.util, sys; "
    "found = [m for m in ('tensorflow', 'tf2jax') if importlib.util.find_spec(m)]; "
    "sys.exit(f'TensorFlow must not be installed here: {found}' if found else 0)"
)

VERSIONS = "import jax, numpy, scipy; print('jax', jax.__version__, numpy.__version__, scipy.__version__)"


def _test(session: nox.Session, *pytest_args: str) -> None:
    session.run("python", "-c", NO_TENSORFLOW)
    session.run("python", "-c", VERSIONS)
    session.run("pytest", *pytest_args, *session.posargs)


def _install(session: nox.Session, stack: str) -> None:
    if stack == "oldest":
        session.install("-e", ".[test]", *OLDEST, *OLDEST_MODEL_LIBRARIES)
        session.install("--no-deps", NT)
    else:
        session.install("-c", "constraints.txt", "-e", ".[test,flax,equinox]")
        session.install("--no-deps", "-c", "constraints.txt", NT)


@nox.session(python=PYTHON)
def oldest(session: nox.Session) -> None:
    """The whole suite on jax 0.4.30 (the oldest supported)."""
    _install(session, "oldest")
    _test(session)


@nox.session(python=PYTHON)
def newest(session: nox.Session) -> None:
    """The whole suite on the pinned versions of constraints.txt (the newest supported)."""
    _install(session, "newest")
    _test(session)


@nox.session(python=PYTHON)
@nox.parametrize("stack", ["oldest", "newest"])
def differential(session: nox.Session, stack: str) -> None:
    """The differential test matrix's full sweep (about 1,200 cases; an hour or more on 2 cores)."""
    _install(session, stack)
    _test(session, "--sweep", "-m", "sweep", "tests/test_differential.py")

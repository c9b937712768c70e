"""XLA:CPU's YNNPACK fusions are switched off where they miscompile (see `nt_pntk._src.compat.xla_cpu`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nt_pntk._src.compat import xla_cpu as _xla_cpu

JAXLIB = importlib.metadata.version("jaxlib")

# The smallest program found that jaxlib 0.10.2 compiles wrongly (1/10 of the right
# result), and its float64 NumPy value. Prints the relative error as JSON.
PROGRAM = """
import json, sys
{prelude}
import jax, jax.numpy as jnp, numpy as np
x = np.random.default_rng(0).standard_normal((64, 8, 8, 8)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
f = lambda x, b: (jnp.ones((64, 10)) @ jnp.ones((10, 64))) * (x.sum(axis=(1, 2)) @ b)
expected = 10 * (x.astype(np.float64).sum(axis=(1, 2)) @ b)
got = np.asarray(jax.jit(f)(x, b), np.float64)
from nt_pntk._src.compat import xla_cpu as _xla_cpu
print(json.dumps({{"error": float(np.abs(got - expected).max() / np.abs(expected).max()),
                  "status": _xla_cpu.status()}}))
"""


def _run(prelude: str = "", env: dict | None = None, warnings_as_errors: bool = False) -> dict:
    full_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", _xla_cpu.OPT_OUT)}
    full_env.update(env or {})
    command = [sys.executable, *(["-W", "error"] if warnings_as_errors else []), "-c"]
    result = subprocess.run(
        [*command, PROGRAM.format(prelude=prelude)], capture_output=True, text=True, env=full_env, check=False
    )
    assert result.returncode == 0, result.stderr
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "stderr": result.stderr}


def _program_error_here() -> float:
    x = np.random.default_rng(0).standard_normal((64, 8, 8, 8)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    got = jax.jit(lambda x, b: (jnp.ones((64, 10)) @ jnp.ones((10, 64))) * (x.sum(axis=(1, 2)) @ b))(x, b)
    expected = 10 * (x.astype(np.float64).sum(axis=(1, 2)) @ b)
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())


def test_this_process_compiles_the_program_right():
    """The suite imports nt_pntk first (conftest), so the workaround, where needed, is in place."""
    assert _program_error_here() < 1e-5
    assert _xla_cpu.status() in ("applied", "not needed")


def test_import_nt_pntk_first_fixes_the_program():
    result = _run("import nt_pntk")
    assert result["error"] < 1e-5
    assert result["status"] == ("applied" if _xla_cpu.affected(JAXLIB) else "not needed")


def test_importing_neural_tangents_alone_applies_it():
    """With nt_pntk installed, its startup file applies it when NT is imported first."""
    startup = Path(__file__).resolve().parents[1] / "startup"  # what nt_pntk_startup.pth imports
    pythonpath = os.pathsep.join(filter(None, [str(startup), os.environ.get("PYTHONPATH")]))
    result = _run("import _nt_pntk_startup\nimport neural_tangents", env={"PYTHONPATH": pythonpath})
    assert result["error"] < 1e-5
    assert result["status"] == ("applied" if _xla_cpu.affected(JAXLIB) else "not needed")


def test_unprotected_jax_is_what_the_version_table_says():
    """Without nt_pntk the program is wrong exactly on the jaxlib releases `AFFECTED` lists.

    On an unlisted release a wrong result means the table misses it; on a listed one a right
    result means the table (or this CPU) differs from what was measured.
    """
    result = _run()  # _xla_cpu is imported after the computation here: it changes nothing
    wrong = result["error"] > 1e-2
    assert wrong == _xla_cpu.affected(JAXLIB), (JAXLIB, result["error"])


def test_too_late_is_a_warning_that_names_the_fix():
    """JAX computed before nt_pntk was imported: the flag cannot act any more, and it says so."""
    prelude = "import jax.numpy as jnp; jnp.ones(2).block_until_ready()\nimport nt_pntk"
    result = _run(prelude)
    if not _xla_cpu.affected(JAXLIB):
        assert (result["status"], result["stderr"]) == ("not needed", "")
        return
    assert result["status"] == "too late"
    assert "XlaMiscompileWarning" in result["stderr"]
    assert "--xla_cpu_experimental_ynn_fusion_type=" in result["stderr"]
    assert result["error"] > 1e-2  # the warning is right: this process computes it wrongly


@pytest.mark.slow
def test_a_flag_set_by_the_user_is_respected_and_the_opt_out_works():
    opt_out = _run("import nt_pntk", env={_xla_cpu.OPT_OUT: "1"})
    if not _xla_cpu.affected(JAXLIB):  # older jaxlib do not know the flag (XLA aborts on it)
        assert opt_out["status"] == "not needed"
        return
    user = _run("import nt_pntk", env={"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="})
    assert user["error"] < 1e-5
    assert (user["status"], opt_out["status"]) == ("set by the user", f"skipped ({_xla_cpu.OPT_OUT}=1)")
    assert opt_out["error"] > 1e-2


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.9.2", False), ("0.10.0", False), ("0.10.1", False), ("0.10.2", True), ("0.11.0", False)],
)
def test_version_table(version, expected):
    assert _xla_cpu.affected(version) is expected

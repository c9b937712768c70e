"""The public API: every exported name resolves, `import nt_pntk` stays light, the deprecated names keep
working (with a warning naming the new one), and the typed approximations as `kernel_matrix` uses them."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import tiled_helpers as th

import nt_pntk
from nt_pntk import approximations, tiled
from nt_pntk.approximations import PNTK, EmpiricalKernelFn, FullENTK, Projection, SingleLogit, Trace
from nt_pntk.experiments import data, models
from nt_pntk.tiled import kernel_matrix

DEPRECATED_MODULES = {
    "nt_pntk.models": "nt_pntk.experiments.models",
    "nt_pntk.data": "nt_pntk.experiments.data",
}


def public_modules() -> list[str]:
    """nt_pntk and every module under it outside `_src` (the deprecated aliases have their own test)."""
    names = ["nt_pntk"]
    for info in pkgutil.walk_packages(nt_pntk.__path__, "nt_pntk."):
        parts = info.name.split(".")
        if not any(part.startswith("_") for part in parts) and info.name not in DEPRECATED_MODULES:
            names.append(info.name)
    return names


# --- Names ---


def test_the_public_modules_are_found():
    """The walk finds the modules of the layout (so the next test is not vacuous)."""
    found = set(public_modules())
    expected = {"nt_pntk", "nt_pntk.approximations", "nt_pntk.regression", "nt_pntk.spectra", "nt_pntk.tiled"}
    expected |= {"nt_pntk.compat", "nt_pntk.experiments.models", "nt_pntk.experiments.data", "nt_pntk.cli"}
    assert expected <= found, expected - found


@pytest.mark.parametrize("name", public_modules())
def test_every_name_in_all_resolves(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        # The command line's modules are used through the command; nt_pntk.figure1 is a deprecated script.
        assert name.split(".")[:2] == ["nt_pntk", "cli"] or name == "nt_pntk.figure1", (
            f"{name} has no __all__"
        )
        return
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which {name} does not have"


def test_top_level_names_are_the_documented_objects():
    assert nt_pntk.empirical_pntk_fn is approximations.empirical_pntk_fn
    assert nt_pntk.PNTK is PNTK and nt_pntk.FullENTK is FullENTK
    assert nt_pntk.kernel_matrix is kernel_matrix
    assert set(nt_pntk.__all__) <= set(dir(nt_pntk))
    with pytest.raises(AttributeError, match=r"module 'nt_pntk' has no attribute 'empirical_ntk_fn'"):
        nt_pntk.empirical_ntk_fn  # noqa: B018  (NT's, not ours)


def test_import_nt_pntk_imports_no_jax():
    code = (
        "import sys, nt_pntk\n"
        "heavy = sorted(m for m in ('jax', 'jaxlib', 'neural_tangents') if m in sys.modules)\n"
        "print(heavy, nt_pntk.__version__)\n"
        "nt_pntk.empirical_pntk_fn\n"  # the lazy names still load on use
        "print('jax' in sys.modules, 'neural_tangents' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = proc.stdout.splitlines()
    assert before.startswith("[] "), f"`import nt_pntk` imported {before}"
    assert after == "True True"


# --- Deprecated names: they work, warn with the new name, and give what the new name gives. ---


@pytest.fixture
def fresh_deprecated_modules():
    """Forgets the deprecated modules before and after a test (a module warns only when first imported)."""

    def forget():
        for name in DEPRECATED_MODULES:
            sys.modules.pop(name, None)
            nt_pntk.__dict__.pop(name.split(".")[1], None)

    forget()
    yield
    forget()


@pytest.mark.usefixtures("fresh_deprecated_modules")
@pytest.mark.parametrize(("old", "new"), DEPRECATED_MODULES.items())
@pytest.mark.parametrize("how", ["import", "attribute"])
def test_deprecated_modules(old, new, how):
    message = rf"{old} is deprecated \(removed in the next release\); use {new}\."
    with pytest.warns(DeprecationWarning, match=message):
        module = importlib.import_module(old) if how == "import" else getattr(nt_pntk, old.split(".")[1])
    replacement = importlib.import_module(new)
    assert module.__all__ == replacement.__all__
    for name in replacement.__all__:
        assert getattr(module, name) is getattr(replacement, name), name


def test_get_model_out():
    with pytest.warns(DeprecationWarning, match=r"get_model\(\): `out` is deprecated .*; use `outputs`\."):
        old = models.get_model("fc", width=4, out=3, depth=1)
    new = models.get_model("fc", width=4, outputs=3, depth=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    shapes = jax.eval_shape(lambda: new.init_fn(jax.random.PRNGKey(0), x.shape)[1])
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    old_fx = jax.jit(old.apply_fn)(params, x)
    assert old_fx.shape == (2, 3)
    np.testing.assert_array_equal(old_fx, jax.jit(new.apply_fn)(params, x))
    with pytest.raises(TypeError, match=r"get_model\(\) got both `outputs` and its deprecated name `out`"):
        models.get_model("fc", width=4, out=3, outputs=3)


def test_one_hot():
    labels = np.array([2, 0, 1])
    with pytest.warns(DeprecationWarning, match=r"one_hot is deprecated .*; use .*\bcentred_one_hot\."):
        old = data.one_hot(labels, 3)
    np.testing.assert_array_equal(old, data.centred_one_hot(labels, 3))
    np.testing.assert_array_equal(old, (np.eye(3)[labels] - 1 / 3).astype(np.float32))


def test_projection_directions_and_jacobian_rows_out():
    with pytest.warns(
        DeprecationWarning, match=r"projection_directions\(\): `out` is deprecated .*`outputs`"
    ):
        old = approximations.projection_directions(3, out=4, seed=1)
    np.testing.assert_array_equal(old, approximations.projection_directions(3, 4, seed=1))
    with pytest.warns(DeprecationWarning, match=r"jacobian_rows\(\): `out` is deprecated .*`outputs`"):
        assert approximations.jacobian_rows("trace", out=4) == approximations.jacobian_rows("trace", 4) == 4


@pytest.fixture(scope="module")
def p():
    return th.problem()


def test_kernel_matrix_out(p, tmp_path):
    x = p.x1[:12]
    with pytest.warns(DeprecationWarning, match=r"kernel_matrix\(\): `out` is deprecated .*; use `output`\."):
        old = kernel_matrix(p.pntk_fn, x, None, p.params, out=tmp_path / "old.npy", **th.COMMON)
    new = kernel_matrix(p.pntk_fn, x, None, p.params, output=tmp_path / "new.npy", **th.COMMON)
    assert isinstance(old, np.memmap) and np.array_equal(old, new)
    with pytest.raises(TypeError, match=r"kernel_matrix\(\) got both `output` and its deprecated name `out`"):
        kernel_matrix(p.pntk_fn, x, None, p.params, out=tmp_path / "a.npy", output=tmp_path / "b.npy")


@pytest.mark.parametrize("pseudo", [False, True], ids=["trace", "pntk"])
def test_tiled_feature_functions(p, pseudo):
    new = (PNTK() if pseudo else Trace()).kernel_fn(p.model.apply_fn, vmap_axes=0)
    message = (
        rf"with_jacobian_features is deprecated .*; use .*{re.escape(repr(new.approximation))}\.kernel_fn"
    )
    with pytest.warns(DeprecationWarning, match=message):
        old = tiled.with_jacobian_features(None, p.model.apply_fn, vmap_axes=0, pseudo=pseudo)
    assert isinstance(old, EmpiricalKernelFn) and old.describe() == new.describe()
    with pytest.warns(
        DeprecationWarning, match=r"jacobian_features_fn is deprecated .*; use .*features_fn\(\)"
    ):
        old_features = tiled.jacobian_features_fn(p.model.apply_fn, vmap_axes=0, pseudo=pseudo)
    x1, x2 = p.x1[:3], p.x2[:2]
    if pseudo:  # the same computation (as `describe` says); its values once
        np.testing.assert_array_equal(jax.jit(old)(x1, x2, p.params), jax.jit(new)(x1, x2, p.params))
    for a, b in zip(
        jax.jit(old_features)(x1, p.params), jax.jit(new.features_fn())(x1, p.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


# --- The typed approximations. ---


def test_jacobian_rows_per_class():
    outputs = 10
    assert PNTK().jacobian_rows(outputs) == 1
    assert Trace().jacobian_rows(outputs) == outputs
    assert SingleLogit(3).jacobian_rows(outputs) == 1
    assert Projection(m=5).jacobian_rows(outputs) == 5
    assert FullENTK().jacobian_rows(outputs) == outputs


def test_approximation_lookup():
    assert approximations.approximation("projection", m=3) == Projection(m=3, seed=0)
    assert approximations.approximation("single_logit", logit=2) == SingleLogit(logit=2)
    assert approximations.approximation("pntk") == PNTK()
    for name in approximations.APPROXIMATION_NAMES:
        assert approximations.approximation(name).name == name
    names = r"\('entk', 'pntk', 'trace', 'single_logit', 'projection'\)"
    with pytest.raises(ValueError, match=rf"`name` must be one of {names}; got 'ntk'\."):
        approximations.approximation("ntk")
    with pytest.raises(TypeError, match=rf"`name` must be one of {names}; got 3 of type int\."):
        approximations.approximation(3)
    with pytest.raises(
        TypeError, match=r"'projection' takes only \['m', 'seed'\]; got \['k'\]\. The options"
    ):
        approximations.approximation("projection", k=3)
    with pytest.raises(TypeError, match=r"'trace' takes no options; got \['m'\]\."):
        approximations.approximation("trace", m=3)


@pytest.mark.parametrize(
    "approximation", [PNTK(), Trace(), SingleLogit(2), Projection(m=3, seed=1)], ids=repr
)
def test_kernel_matrix_reuses_gram_features(p, tmp_path, approximation):
    fn = approximation.kernel_fn(p.model.apply_fn, vmap_axes=0)
    x = p.x1[:12]  # two row blocks of 8
    k = kernel_matrix(fn, x, None, p.params, output=tmp_path / "k.npy", **th.COMMON)
    # The features route: Gram products of features_fn()'s features, not fn on each tile.
    assert json.loads((tmp_path / "k.npy.tiles" / "meta.json").read_text())["mode"] == "features"
    th.assert_close(k, jax.jit(fn)(x, None, p.params))


def test_kernel_matrix_refuses_the_full_entk(p, tmp_path):
    fn = FullENTK().kernel_fn(p.model.apply_fn, vmap_axes=0)
    message = r"`fn` must give an \(N1, N2\) kernel; got the full eNTK EmpiricalKernelFn\(FullENTK\(\), .*"
    message += r"an \(N1, N2, O, O\) kernel\. .*PNTK\(\)\.kernel_fn\(f\)"
    with pytest.raises(ValueError, match=message):
        kernel_matrix(fn, p.x1, None, p.params, output=tmp_path / "k.npy", **th.COMMON)
    assert list(tmp_path.iterdir()) == []

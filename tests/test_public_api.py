"""The public API: every exported name resolves, `import nt_pntk` stays light, the deprecated names keep
working (with a warning naming the new one), and the typed approximations as `kernel_matrix` uses them."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import tiled_helpers as th

import nt_pntk
from nt_pntk import approximations, tiled
from nt_pntk._src import deprecations
from nt_pntk._src.kernels import approximations as by_name  # the deprecated lookups by name
from nt_pntk._src.kernels import pntk
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
    assert nt_pntk.empirical_pntk_fn is pntk.empirical_pntk_fn
    assert nt_pntk.approximations.PNTK is PNTK and nt_pntk.approximations.FullENTK is FullENTK
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


# --- The surface: each public module's `__all__` is what the user guide and the reference document. ---

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_API = {
    "nt_pntk": [
        "__version__",
        "active_learning",
        "adapters",
        "approximations",
        "attribution",
        "cli",
        "compat",
        "empirical_entk_fn",
        "empirical_kernel_fn",
        "empirical_pntk_fn",
        "empirical_projection_fn",
        "empirical_single_logit_fn",
        "empirical_trace_fn",
        "experiments",
        "feature_matrix",
        "from_equinox",
        "from_linen",
        "from_nnx",
        "kernel_matrix",
        "regression",
        "spectra",
        "summed_logits_fn",
        "tiled",
        "trainability",
    ],
    "nt_pntk.approximations": [
        "PNTK",
        "Approximation",
        "EmpiricalKernelFn",
        "FullENTK",
        "NotAGramKernel",
        "Projection",
        "SingleLogit",
        "Sketch",
        "SketchedKernelFn",
        "Trace",
        "projection_directions",
        "relative_error",
    ],
    "nt_pntk.tiled": [
        "KernelMatrixPlan",
        "KernelMatrixStats",
        "NonFiniteKernelError",
        "feature_matrix",
        "kernel_matrix",
        "plan_kernel_matrix",
    ],
    "nt_pntk.regression": ["predict", "predict_features"],
    "nt_pntk.attribution": [
        "DatamodelingScore",
        "linear_datamodeling_score",
        "margin_readout",
        "margins",
        "residuals",
        "surrogate_feature_scores",
        "surrogate_scores",
        "trak_feature_scores",
        "trak_scores",
    ],
    "nt_pntk.spectra": [
        "SpectralErrors",
        "Spectrum",
        "repeated_eigenvalue_errors",
        "spectral_errors",
        "spectrum",
    ],
    "nt_pntk.trainability": [
        "RankCorrelation",
        "TrainabilityScores",
        "kendall_tau",
        "scores",
        "scores_from_kernel",
    ],
    "nt_pntk.active_learning": ["acquire", "lookahead_scores", "run_rounds", "select"],
    "nt_pntk.adapters": ["from_equinox", "from_linen", "from_nnx"],
    "nt_pntk.compat": [
        "SUPPORTED_NT_VERSION",
        "AppliedPatch",
        "PatchKind",
        "XlaMiscompileWarning",
        "applied_patches",
        "xla_status",
    ],
    # The experiments: documented module by module on the reference page (docs/experiments.rst).
    "nt_pntk.experiments": ["data", "figure1", "models", "validation"],
    "nt_pntk.experiments.models": [
        "B_STD",
        "MAX_LAYERS",
        "MAX_WIDTH",
        "MODELS",
        "RESNET_STAGES",
        "W_STD",
        "Model",
        "builder_options",
        "cnn",
        "fc",
        "get_model",
        "parameter_bytes",
        "resnet",
        "wide_resnet",
    ],
    "nt_pntk.experiments.data": ["centred_one_hot", "digits_split", "load_digits_images"],
    "nt_pntk.experiments.figure1": [
        "DEFAULT_DEPTHS",
        "DEFAULT_OUTPUTS",
        "FULL_SIZE",
        "REDUCED",
        "measure",
        "plot",
    ],
    "nt_pntk.experiments.validation": [
        "Config",
        "ConfigError",
        "fit_slopes",
        "load",
        "parse",
        "run_sweep",
        "write_report",
    ],
}


def test_all_is_the_public_api():
    with_all = {name for name in public_modules() if hasattr(importlib.import_module(name), "__all__")}
    assert with_all == set(PUBLIC_API)
    for name, expected in PUBLIC_API.items():
        assert sorted(importlib.import_module(name).__all__) == sorted(expected), name


def _docs_text() -> str:
    pages = sorted((ROOT / "docs" / "guide").glob("*.rst")) + sorted((ROOT / "docs").glob("*.rst"))
    return "\n".join(page.read_text() for page in pages)


@pytest.mark.parametrize("module", [m for m in PUBLIC_API if not m.startswith("nt_pntk.experiments")])
def test_every_public_name_is_in_the_guide(module):
    """Each name is written out (``nt_pntk.spectra.spectrum``, ``spectra.spectrum``) in the user guide or
    the reference's text, not only listed by autodoc; the experiments' reference documents them whole."""
    text = _docs_text()
    last = module.rpartition(".")[2]
    missing = [
        name
        for name in PUBLIC_API[module]
        if name != "__version__" and not re.search(rf"\b(nt_pntk|{module}|{last})\.{re.escape(name)}\b", text)
    ]
    assert not missing, f"{module}: {missing} are not in docs/guide/*.rst nor docs/*.rst"


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
    message = rf"{old} is deprecated \(removed in 0\.4\.0\); use {new}\."
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
        assert by_name.jacobian_rows("trace", out=4) == by_name.jacobian_rows("trace", 4) == 4


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
    assert by_name.approximation("projection", m=3) == Projection(m=3, seed=0)
    assert by_name.approximation("single_logit", logit=2) == SingleLogit(logit=2)
    assert by_name.approximation("pntk") == PNTK()
    for name in by_name.APPROXIMATION_NAMES:
        assert by_name.approximation(name).name == name
    names = r"\('entk', 'pntk', 'trace', 'single_logit', 'projection'\)"
    with pytest.raises(ValueError, match=rf"`name` must be one of {names}; got 'ntk'\."):
        by_name.approximation("ntk")
    with pytest.raises(TypeError, match=rf"`name` must be one of {names}; got 3 of type int\."):
        by_name.approximation(3)
    with pytest.raises(
        TypeError, match=r"'projection' takes only \['m', 'seed'\]; got \['k'\]\. The options"
    ):
        by_name.approximation("projection", k=3)
    with pytest.raises(TypeError, match=r"'trace' takes no options; got \['m'\]\."):
        by_name.approximation("trace", m=3)


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


# --- The table of deprecated names (nt_pntk._src.deprecations). ---

DEPRECATED_ATTRIBUTES = [e for e in deprecations.DEPRECATIONS if e.kind == "attribute"]


@pytest.mark.parametrize("entry", DEPRECATED_ATTRIBUTES, ids=lambda e: e.name)
def test_deprecated_attributes(entry):
    """Each works, warns at the line that uses it (naming the new name and the release that removes
    it), gives what the new name gives, and is in no `__all__`."""
    module = importlib.import_module(entry.where)
    with pytest.warns(DeprecationWarning, match=rf"^{re.escape(entry.message())}$") as caught:
        old = getattr(module, entry.old)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert old is entry.resolve()
    if re.fullmatch(r"nt_pntk(\.\w+)+", entry.new):  # a plain new name: the same object
        new_module, _, new_name = entry.new.rpartition(".")
        assert old is getattr(importlib.import_module(new_module), new_name)
    assert entry.old not in module.__all__


def test_the_changelog_lists_the_table():
    """``CHANGELOG.md`` lists every deprecated name under the release that deprecated it, with the
    release that removes it, as `deprecations.changelog_table` writes it."""
    text = (ROOT / "CHANGELOG.md").read_text()
    sections = {part.partition("\n")[0].strip(): part for part in re.split(r"^## ", text, flags=re.M)[1:]}
    for release in deprecations.releases():
        assert deprecations.changelog_table(release) in sections[release], (
            f"the CHANGELOG's deprecations of {release} differ from nt_pntk._src.deprecations; its table:\n"
            + deprecations.changelog_table(release)
        )
    assert text.count("| deprecated | use instead | removed in |") == len(deprecations.releases())


def test_every_deprecation_is_removed_in_a_later_release():
    def release(text):
        return tuple(int(part) for part in re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text).groups())

    for entry in deprecations.DEPRECATIONS:
        assert release(entry.removed_in) > release(nt_pntk.__version__), entry
    assert len({(e.kind, e.where, e.old) for e in deprecations.DEPRECATIONS}) == len(
        deprecations.DEPRECATIONS
    )

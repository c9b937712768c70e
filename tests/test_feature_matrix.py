"""`feature_matrix`: a Sketch's features in blocks, in memory, .npy or .zarr, resumable, refused when stale.

The reference for the features is the Sketch's own `sketch_fn` on the whole input (the route under
test here is the blocking, padding, storing and resuming; `test_sketch` checks the sketch itself
against the exact kernel), and for their Gram the float64 per-example-gradient pNTK within k^-1/2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import zarr

import nt_pntk
from nt_pntk.approximations import Sketch, Trace
from nt_pntk.experiments import models
from nt_pntk.tiled import NonFiniteKernelError, feature_matrix

BUDGET = "1MiB"  # blocks of 16 rows (XLA's peak): three blocks, the last one padded


@pytest.fixture(scope="module")
def p():
    model = models.get_model("fc", width=64, outputs=5, depth=1)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    x = np.random.default_rng(0).standard_normal((37, 8, 8, 1)).astype(np.float32)
    fn = Sketch(dim=1024, seed=2).kernel_fn(model.apply_fn)
    return model, params, x, fn, np.asarray(fn.sketch_fn()(x, params))


def _blocks(path) -> int:
    import os

    return len(os.listdir(str(path) + ".blocks/done"))


@pytest.mark.parametrize("where", ["memory", "npy", "zarr"])
def test_features_in_blocks_equal_the_sketch_of_the_whole_input(p, where, tmp_path):
    model, params, x, fn, phi = p
    output = None if where == "memory" else tmp_path / f"phi.{where}"
    got = feature_matrix(fn, x, params, output=output, memory_budget=BUDGET, progress=False)
    assert got.shape == (37, 1024)
    np.testing.assert_allclose(np.asarray(got), phi, rtol=1e-5, atol=1e-6 * np.abs(phi).max())
    if output is not None:
        assert _blocks(output) > 2
    # Their Gram is the exact pNTK within the sketch's error.
    exact = reference.pntk_from_full(reference.full_entk_jacobian(model.apply_fn, x, None, params), (-1,))
    gram = np.asarray(got, np.float64) @ np.asarray(got, np.float64).T
    assert np.linalg.norm(gram - exact) / np.linalg.norm(exact) < 0.15


def test_returned_types(p, tmp_path):
    _, params, x, fn, _ = p
    npy = feature_matrix(fn, x, params, output=tmp_path / "a.npy", progress=False)
    assert isinstance(npy, np.memmap) and not npy.flags.writeable
    z = feature_matrix(fn, x, params, output=tmp_path / "a.zarr", progress=False)
    assert isinstance(z, zarr.Array) and z.read_only


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_resume_computes_only_missing_or_damaged_blocks(p, suffix, tmp_path, count_tiles):
    _, params, x, fn, _ = p
    out = tmp_path / f"phi{suffix}"
    first = np.array(feature_matrix(fn, x, params, output=out, memory_budget=BUDGET, progress=False))
    blocks = count_tiles["tiles"]
    assert blocks == _blocks(out) > 2
    done = sorted((out.parent / (out.name + ".blocks") / "done").iterdir())
    done[0].unlink()  # block 0 never recorded (killed before its marker)
    if suffix == ".npy":  # block 1's bytes damaged on disk
        with open(out, "r+b") as f:
            f.seek(-8, 2)
            f.write(b"\xff" * 8)
    count_tiles["tiles"] = 0
    again = np.array(feature_matrix(fn, x, params, output=out, progress=False))
    assert count_tiles["tiles"] == (2 if suffix == ".npy" else 1)
    np.testing.assert_array_equal(again, first)


def test_resume_refuses_other_inputs_sketch_or_network(p, tmp_path):
    model, params, x, fn, _ = p
    out = tmp_path / "phi.npy"
    feature_matrix(fn, x, params, output=out, progress=False)
    with pytest.raises(ValueError, match=r"holds other features: .*x differs"):
        feature_matrix(fn, x + 1, params, output=out, progress=False)
    with pytest.raises(ValueError, match=r"holds other features: kernel differs .*seed=3"):
        feature_matrix(
            Sketch(dim=1024, seed=3).kernel_fn(model.apply_fn), x, params, output=out, progress=False
        )

    def network(activation):
        def f(params_, x_):  # the same name, another function
            return activation(model.apply_fn(params_, x_))

        return f

    a, b = tmp_path / "a.npy", network(jnp.tanh)
    feature_matrix(Sketch(dim=64).kernel_fn(network(jnp.sin)), x, params, output=a, progress=False)
    with pytest.raises(ValueError, match=r"features differ at the probe inputs"):
        feature_matrix(Sketch(dim=64).kernel_fn(b), x, params, output=a, progress=False)
    other = tmp_path / "other.npy"
    np.save(other, np.zeros((37, 64), np.float32))
    with pytest.raises(ValueError, match=r"has no feature record beside it"):
        feature_matrix(Sketch(dim=64).kernel_fn(b), x, params, output=other, progress=False)


def test_several_rows_per_input(p):
    model, params, x, _, _ = p
    fn = Sketch(base=Trace(), dim=32).kernel_fn(model.apply_fn)
    got = feature_matrix(fn, x, params, memory_budget=BUDGET, progress=False)
    assert got.shape == (37, 5, 32)
    np.testing.assert_allclose(got, np.asarray(fn.sketch_fn()(x, params)), rtol=1e-5, atol=1e-6)


def test_kernel_matrix_of_a_sketch_is_the_gram_of_its_features(p):
    _, params, x, fn, phi = p
    k, stats = nt_pntk.kernel_matrix(fn, x, None, params, tile_size=8, progress=False, stats=True)
    assert stats.route == "rows" and "sketched features" in stats.choice.reason
    gram = phi.astype(np.float64) @ phi.astype(np.float64).T
    np.testing.assert_allclose(k, gram, rtol=1e-5, atol=1e-5 * np.abs(gram).max())


def test_non_finite_features_are_refused_or_kept(p):
    _, params, x, fn, _ = p
    big = x.copy()
    big[5] = 3e38
    with pytest.raises(NonFiniteKernelError, match=r"non-finite features .* inputs \[5\]"):
        feature_matrix(fn, big, params, progress=False)
    kept = feature_matrix(fn, big, params, progress=False, allow_non_finite=True)
    assert not np.isfinite(kept[5]).all() and np.isfinite(kept[4]).all()


def test_bad_arguments(p, tmp_path):
    model, params, x, fn, _ = p
    with pytest.raises(TypeError, match=r"`fn` must be the kernel function of a Sketch"):
        feature_matrix(nt_pntk.empirical_pntk_fn(model.apply_fn), x, params)
    with pytest.raises(ValueError, match=r"`output` must end in .npy"):
        feature_matrix(fn, x, params, output=tmp_path / "phi.txt")
    with pytest.raises(ValueError, match=r"`memory_budget`"):
        feature_matrix(fn, x, params, memory_budget="lots")
    with pytest.raises(ValueError, match=r"`x` has"):
        feature_matrix(fn, x[:0], params)

"""`nt_pntk.regression.predict_features` (the primal) against `regression.predict` on the kernel ΦΦᵀ.

`predict` (the dual: an N×N solve on the kernel, itself tested against a direct NO×NO solve and NT in
test_regression.py) is the reference: the kernels are formed here in float64 NumPy from the features.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from reference import assert_close

from nt_pntk import regression
from nt_pntk._src.kernels import regression_features

O = 3  # noqa: E741  (outputs)
M = 5  # test inputs
LEARNING_RATE = 0.5
TIMES = [None, 0.0, 0.3, 40.0, 1e6, np.inf]
RIDGES = [0.0, 0.1]
# (N, rows, k): more inputs than features (K singular), fewer (ΦᵀΦ singular), and Jacobian rows.
SHAPES = {"N>k": (40, None, 6), "N<k": (6, None, 40), "rows": (9, 3, 4)}


def features(shape, seed: int = 0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training features, test features (M inputs) and (N, O) targets."""
    n, rows, k = shape
    per_input = (k,) if rows is None else (rows, k)
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n + M, *per_input)) / np.sqrt(k)
    return phi[:n].astype(dtype), phi[n:].astype(dtype), rng.standard_normal((n, O))


def gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_r a_r b_rᵀ in float64: the kernel of features with or without a rows axis."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.einsum("ak,bk->ab" if a.ndim == 2 else "ark,brk->ab", a, b)


def dual(phi, y, phi_test, **options) -> np.ndarray:
    return regression.predict(gram(phi, phi), y, gram(phi_test, phi), **options)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("ridge", RIDGES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_matches_predict_on_the_gram_kernel(shape, ridge, t):
    phi, phi_test, y = features(shape)
    options = {"ridge": ridge, "t": t, "learning_rate": LEARNING_RATE}
    expected = dual(phi, y, phi_test, **options)
    assert_close(regression.predict_features(phi, y, phi_test, **options), expected, rtol=1e-10)
    # On the training inputs (phi_test=None), and in several blocks.
    on_train = regression.predict_features(phi, y, block_rows=4, **options)
    assert_close(on_train, dual(phi, y, phi, **options), rtol=1e-10)


@pytest.mark.parametrize("t", [None, 0.3, 1e6])
@pytest.mark.parametrize("ridge", RIDGES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_float32_features(shape, ridge, t):
    """float32 Φ is read exactly and solved in float64: `predict` on the float64 kernel of the same
    values, to float64 round-off (both count eigenvalues within float32's round-off as zero)."""
    phi, phi_test, y = features(shape, dtype=np.float32)
    options = {"ridge": ridge, "t": t, "learning_rate": LEARNING_RATE}
    actual = regression.predict_features(phi, y, phi_test, **options)
    assert actual.dtype == np.float64
    assert_close(actual, dual(phi, y, phi_test, **options), rtol=1e-10)


@pytest.mark.parametrize("t", [None, 0.3, np.inf])
def test_rank_deficient_features_give_the_pseudo_inverse(t):
    """Φ of rank 3 < min(N, k), a repeated input among them: at ridge 0 and infinite time the minimum-norm
    interpolant Φ_* Φ⁺ Y of NumPy's pseudo-inverse; at every t `predict`'s answer."""
    rng = np.random.default_rng(2)
    low_rank = rng.standard_normal((12 + M, 3)) @ rng.standard_normal((3, 8))
    low_rank[1] = low_rank[0]
    phi, phi_test, y = low_rank[:12], low_rank[12:], rng.standard_normal((12, O))
    actual = regression.predict_features(phi, y, phi_test, t=t, learning_rate=LEARNING_RATE)
    assert_close(actual, dual(phi, y, phi_test, t=t, learning_rate=LEARNING_RATE), rtol=1e-9)
    if t != 0.3:
        assert_close(actual, phi_test @ np.linalg.pinv(phi) @ y, rtol=1e-9)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_blocks_agree_with_one_block(shape):
    phi, phi_test, y = features(shape)
    n = len(phi)
    for t in (None, 0.3):
        whole = regression.predict_features(phi, y, phi_test, ridge=0.1, t=t, block_rows=n)
        for block_rows in (1, 2, n - 1, n + 5):
            blocks = regression.predict_features(phi, y, phi_test, ridge=0.1, t=t, block_rows=block_rows)
            assert_close(blocks, whole, rtol=1e-12)


class RecordingRows:
    """An array-like (shape, dtype, slicing) that records the rows each read asks for."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, index):
        assert isinstance(index, slice) and index.step is None
        start, stop, _ = index.indices(self.shape[0])
        self.reads.append(stop - start)
        return self.array[index]


def test_features_are_read_in_blocks(monkeypatch):
    """Never more rows at once than `block_rows`, nor than the byte bound by default; twice in all for
    phi_test=None (the sums, then the predictions), once each otherwise."""
    phi, phi_test, y = features(SHAPES["N>k"])
    expected = dual(phi, y, phi_test, ridge=0.1)
    train, test = RecordingRows(phi), RecordingRows(phi_test)
    assert_close(regression.predict_features(train, y, test, ridge=0.1, block_rows=7), expected, rtol=1e-10)
    assert max(train.reads) == 7 and sum(train.reads) == len(phi)
    assert max(test.reads) <= 7 and sum(test.reads) == M
    # By default a block's float64 copy is at most BLOCK_BYTES: here 5 rows of 6 float64 features.
    monkeypatch.setattr(regression_features, "BLOCK_BYTES", 5 * 6 * 8 + 7)
    train = RecordingRows(phi)
    assert_close(regression.predict_features(train, y, ridge=0.1), dual(phi, y, phi, ridge=0.1), rtol=1e-10)
    assert max(train.reads) == 5 and sum(train.reads) == 2 * len(phi)


@pytest.mark.parametrize("shape", [SHAPES["N>k"], SHAPES["rows"]], ids=["N>k", "rows"])
def test_memmap_and_npy_path(tmp_path, shape):
    phi, phi_test, y = features(shape, dtype=np.float32)
    expected = dual(phi, y, phi_test, ridge=0.1, t=0.3)
    for name, values in (("train", phi), ("test", phi_test)):
        stored = np.lib.format.open_memmap(
            tmp_path / f"{name}.npy", mode="w+", dtype=values.dtype, shape=values.shape
        )
        stored[:] = values
        stored.flush()
        del stored
    train = np.load(tmp_path / "train.npy", mmap_mode="r")
    assert isinstance(train, np.memmap)
    actual = regression.predict_features(train, y, str(tmp_path / "test.npy"), ridge=0.1, t=0.3, block_rows=4)
    assert_close(actual, expected, rtol=1e-10)
    assert_close(
        regression.predict_features(tmp_path / "train.npy", y, phi_test, ridge=0.1, t=0.3),
        expected,
        rtol=1e-10,
    )


def test_zarr_array_and_path(tmp_path):
    import zarr  # a dependency (pyproject.toml)

    phi, phi_test, y = features(SHAPES["rows"], dtype=np.float32)
    stored = zarr.open_array(
        store=str(tmp_path / "phi.zarr"), mode="w", shape=phi.shape, chunks=(4, 3, 4), dtype="f4"
    )
    stored[:] = phi
    expected = dual(phi, y, phi_test, t=40.0)
    reopened = zarr.open_array(store=str(tmp_path / "phi.zarr"), mode="r")
    assert_close(
        regression.predict_features(reopened, y, phi_test, t=40.0, block_rows=2), expected, rtol=1e-10
    )
    assert_close(
        regression.predict_features(tmp_path / "phi.zarr", y, phi_test, t=40.0), expected, rtol=1e-10
    )


def test_jax_arrays_and_lists():
    phi, phi_test, y = features(SHAPES["N>k"], dtype=np.float32)
    y = y.astype(np.float32)  # as JAX holds it (without x64)
    expected = dual(phi, y, phi_test, ridge=0.1)
    actual = regression.predict_features(jnp.asarray(phi), jnp.asarray(y), jnp.asarray(phi_test), ridge=0.1)
    assert_close(actual, expected, rtol=1e-10)
    assert_close(
        regression.predict_features(phi.tolist(), y.tolist(), phi_test.tolist(), ridge=0.1),
        expected,
        rtol=1e-10,
    )


def test_int_and_bool_features_and_targets():
    """Exact in float64, like `predict`'s integer kernels and bool one-hot targets."""
    rng = np.random.default_rng(4)
    phi = rng.integers(-3, 4, size=(10, 4))
    y = np.eye(O, dtype=bool)[np.arange(10) % O]
    expected = dual(phi, y.astype(float), phi[:3], t=0.3)
    assert_close(regression.predict_features(phi, y, phi[:3], t=0.3), expected, rtol=1e-10)
    bits = phi > 0
    assert_close(
        regression.predict_features(bits, y, ridge=0.1),
        dual(bits, y.astype(float), bits, ridge=0.1),
        rtol=1e-10,
    )


@pytest.mark.parametrize(
    ("scale", "t"), [(2.0**660, None), (2.0**-660, None), (2.0**500, 0.3), (2.0**-500, 0.3)]
)
def test_features_of_extreme_scale(scale, t):
    """Entries of 1e±199: ΦᵀΦ would overflow (underflow) in float64; Φ is scaled by a power of two as it
    is read. At 1e±150, where c²·t is a float: the flow on c²K for t/c² is the flow on K for t."""
    phi, phi_test, y = features(SHAPES["N>k"])
    expected = dual(phi, y, phi_test, ridge=0.1, t=t)
    actual = regression.predict_features(
        phi * scale, y, phi_test * scale, ridge=0.1, t=None if t is None else t / scale / scale, block_rows=3
    )
    assert_close(actual, expected, rtol=1e-10)


def test_scale_growing_from_block_to_block():
    """A later block with far larger entries rescales the sums of the earlier ones."""
    phi, phi_test, y = features(SHAPES["N>k"])
    scales = np.logspace(-100, 100, len(phi))[:, None]
    expected = dual(phi * scales, y, phi_test, ridge=0.1, t=0.3)
    assert_close(
        regression.predict_features(phi * scales, y, phi_test, ridge=0.1, t=0.3, block_rows=3),
        expected,
        rtol=1e-9,
    )


def test_huge_ridge_does_not_overflow():
    """ridge × mean diagonal beyond float64's range: K_* Y / λ, as `predict` gives."""
    phi, phi_test, y = features(SHAPES["N>k"])
    phi, phi_test = 10 * phi, 10 * phi_test
    actual = regression.predict_features(phi, y, phi_test, ridge=1.7e308)
    assert np.all(np.isfinite(actual))
    mean_diagonal = np.mean(np.sum(phi**2, axis=1))
    np.testing.assert_allclose(actual, (phi_test @ phi.T / mean_diagonal) @ y / 1.7e308, rtol=1e-6)


def test_zero_features_predict_zero():
    y = np.ones((6, O))
    for t in TIMES:
        for ridge in RIDGES:
            assert np.all(
                regression.predict_features(np.zeros((6, 4)), y, np.ones((2, 4)), ridge=ridge, t=t) == 0
            )


def test_overflowing_time_is_infinite_time():
    phi, phi_test, y = features(SHAPES["N>k"])
    actual = regression.predict_features(phi, y, phi_test, t=1e300, learning_rate=1e300)
    assert_close(actual, dual(phi, y, phi_test), rtol=1e-10)


# --- Bad arguments. ---


@pytest.mark.parametrize(
    ("y_shape", "match"),
    [
        (
            (40,),
            r"`y_train` must have shape \(N, O\) = \(40, O\) for a `phi_train` of shape \(40, 6\), O >= 1; "
            r"got shape \(40,\)",
        ),
        ((39, O), r"`y_train` must have shape \(N, O\) = \(40, O\) .*got shape \(39, 3\)"),
        ((40, 0), r"`y_train` must have shape .*O >= 1; got shape \(40, 0\)"),
    ],
)
def test_bad_targets_shape(y_shape, match):
    phi, phi_test, _ = features(SHAPES["N>k"])
    with pytest.raises(ValueError, match=match):
        regression.predict_features(phi, np.ones(y_shape), phi_test)


@pytest.mark.parametrize(
    ("shape", "test_shape", "argument"),
    [
        ((40,), (M, 6), "phi_train"),
        ((40, 2, 3, 1), (M, 6), "phi_train"),
        ((40, 0), (M, 0), "phi_train"),
        ((40, 6), (M, 5), "phi_test"),
        ((40, 6), (M, 1, 6), "phi_test"),
        ((40, 2, 3), (M, 6), "phi_test"),
        ((40, 2, 3), (M, 3, 2), "phi_test"),
    ],
)
def test_bad_features_shape(shape, test_shape, argument):
    match = (
        r"`phi_train` must have shape \(N, k\) .* or \(N, rows, k\)"
        if argument == "phi_train"
        else (rf"`phi_test` must have shape \(M, {', '.join(map(str, shape[1:]))}\) .*; got shape \({M}, ")
    )
    with pytest.raises(ValueError, match=match):
        regression.predict_features(np.ones(shape), np.ones((40, O)), np.ones(test_shape))


@pytest.mark.parametrize("argument", ["phi_train", "y_train", "phi_test"])
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (lambda a: a + 1j, TypeError, r"must be an array of real numbers; got dtype complex128 .*np\.real\("),
        (
            lambda a: a.astype(str),
            TypeError,
            r"must be an array of real numbers; got dtype <U\d+; pass numbers",
        ),
        (lambda a: a.astype(object), TypeError, r"must be an array of real numbers; got dtype object"),
    ],
)
def test_bad_dtypes_are_named(argument, bad, error, match):
    phi, phi_test, y = features(SHAPES["N>k"])
    arrays = {"phi_train": phi, "y_train": y, "phi_test": phi_test}
    arrays[argument] = bad(arrays[argument])
    with pytest.raises(error, match=rf"^`{argument}` {match}"):
        regression.predict_features(arrays["phi_train"], arrays["y_train"], arrays["phi_test"])


@pytest.mark.parametrize("argument", ["phi_train", "phi_test"])
def test_non_finite_features_are_named_at_their_index(argument):
    """Found in the block that holds them; the index is in the whole array."""
    phi, phi_test, y = features(SHAPES["rows"])
    bad = {"phi_train": phi, "phi_test": phi_test}[argument].copy()
    bad[3, 1, 2] = np.nan
    bad[2, 0, 1] = np.inf
    arrays = {"phi_train": phi, "phi_test": phi_test, argument: bad}
    match = (
        rf"^`{argument}` must be finite; it has 2 NaN or infinite entries in its rows 2 to 3, "
        r"the first inf at index \(2, 0, 1\)"
    )
    with pytest.raises(ValueError, match=match):
        regression.predict_features(arrays["phi_train"], y, arrays["phi_test"], block_rows=2)


def test_non_finite_targets_are_refused():
    phi, phi_test, y = features(SHAPES["N>k"])
    y[2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"^`y_train` must be finite; it has 1 NaN or infinite entries .*index \(2, 1\)"
    ):
        regression.predict_features(phi, y, phi_test)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ridge": -1.0}, ValueError, r"`ridge` must be >= 0; got ridge=-1.0"),
        ({"ridge": np.nan}, ValueError, r"`ridge` must be finite; got ridge=nan"),
        ({"ridge": "small"}, TypeError, r"`ridge` must be a real number; got 'small' of type str"),
        ({"t": -1.0}, ValueError, r"`t` must be a time >= 0, or None"),
        ({"t": True}, TypeError, r"`t` must be a real number; got True of type bool"),
        ({"learning_rate": 0.0}, ValueError, r"`learning_rate` must be > 0; got learning_rate=0.0"),
        ({"block_rows": 0}, ValueError, r"`block_rows` must be an int >= 1; got block_rows=0"),
        ({"block_rows": 2.0}, TypeError, r"`block_rows` must be an int; got 2.0 of type float"),
    ],
)
def test_bad_options(options, error, match):
    phi, phi_test, y = features(SHAPES["N>k"])
    with pytest.raises(error, match=match):
        regression.predict_features(phi, y, phi_test, **options)


def test_bad_kinds_of_features(tmp_path):
    phi, _, y = features(SHAPES["N>k"])
    with pytest.raises(TypeError, match=r"^`phi_train` must be an array of features, .*got 3 of type int"):
        regression.predict_features(3, y)
    with pytest.raises(ValueError, match=r"^`phi_test` must be an array or the path of a \.npy .*'phi\.csv'"):
        regression.predict_features(phi, y, "phi.csv")
    missing = str(tmp_path / "missing.npy")
    with pytest.raises(
        ValueError, match=rf"^`phi_train`={re.escape(repr(missing))} cannot be read as an array"
    ):
        regression.predict_features(missing, y)


def test_memory_is_a_block_not_the_whole_features(tmp_path):
    """A memmapped Φ is read a block at a time: NumPy's allocations (traced) stay far below Φ's size, in
    float32 as stored, let alone its float64 copy."""
    import tracemalloc

    n, k = 50_000, 32
    phi = np.lib.format.open_memmap(tmp_path / "phi.npy", mode="w+", dtype=np.float32, shape=(n, k))
    rng = np.random.default_rng(5)
    for start in range(0, n, 10_000):
        phi[start : start + 10_000] = rng.standard_normal((10_000, k))
    phi.flush()
    y = rng.standard_normal((n, 2))
    phi = np.load(tmp_path / "phi.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        actual = regression.predict_features(phi, y, phi[:M], ridge=0.1, t=0.3, block_rows=1_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < phi.nbytes / 4, f"peak {peak:,} bytes for a Φ of {phi.nbytes:,}"
    # The reference, in feature space from the SVD Φ = U S Vᵀ (no kernel of 50,000²):
    # K_*(K + λI)⁻¹(I − e^{−τ(K + λI)})Y = Φ_* V diag(S (1 − e^{−τ(S² + λ)}) / (S² + λ)) Uᵀ Y.
    phi64 = np.asarray(phi, np.float64)
    u, s, vt = np.linalg.svd(phi64, full_matrices=False)
    lam, tau = 0.1 * np.sum(phi64**2) / n, 0.3 / y.size
    gains = s * -np.expm1(-tau * (s**2 + lam)) / (s**2 + lam)
    assert_close(actual, phi64[:M] @ vt.T @ (gains[:, None] * (u.T @ y)), rtol=1e-10)

"""`nt_pntk.spectra`: eigenvalues of known matrices, and eNTK ≈ pNTK ⊗ I_O seen in the spectrum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import IMAGE, RTOL, full_entk_nt

from nt_pntk import spectra
from nt_pntk.experiments import models

O = 3  # noqa: E741  (the number of outputs, as in the paper)
N = 4
TOL = RTOL[np.dtype("float64")]


def rotated(eigenvalues: np.ndarray, seed: int = 0) -> np.ndarray:
    """Q diag(eigenvalues) Qᵀ with a random orthogonal Q: a dense matrix with a known spectrum."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T


def kron(k: np.ndarray, b: np.ndarray) -> np.ndarray:
    """K ⊗ B in the (N, N, O, O) eNTK layout."""
    return np.einsum("ab,op->abop", k, b)


def test_spectrum_of_a_known_matrix():
    eigenvalues = np.array([5.0, 3.0, 2.0, 0.5])
    s = spectra.spectrum(rotated(eigenvalues))
    np.testing.assert_allclose(s.eigenvalues, eigenvalues, rtol=TOL)
    np.testing.assert_allclose(s.top(2), eigenvalues[:2], rtol=TOL)
    np.testing.assert_allclose((s.lambda_max, s.lambda_min, s.condition_number), (5.0, 0.5, 10.0), rtol=TOL)


def test_condition_number_of_a_singular_matrix_is_inf():
    assert spectra.spectrum(np.diag([1.0, 0.0])).condition_number == np.inf


def test_entk_spectrum_is_the_no_by_no_matrix():
    k, b = rotated(np.array([4.0, 2.0, 1.0, 0.25])), rotated(np.array([3.0, 1.0, 0.5]), seed=1)
    # The eigenvalues of K ⊗ B are the products of theirs.
    expected = np.sort(np.outer([4.0, 2.0, 1.0, 0.25], [3.0, 1.0, 0.5]).ravel())[::-1]
    np.testing.assert_allclose(spectra.spectrum(kron(k, b)).eigenvalues, expected, rtol=TOL)


def test_exact_kronecker_product_has_zero_errors():
    k = rotated(np.array([4.0, 2.0, 1.0, 0.25]))
    entk = kron(k, np.eye(O))
    np.testing.assert_allclose(spectra.repeated_eigenvalue_errors(entk, k, top_k=N * O), 0.0, atol=TOL)
    errors = spectra.spectral_errors(entk, k, top_k=N * O)
    np.testing.assert_allclose((errors.lambda_max, errors.lambda_min, errors.condition_number), 0.0, atol=TOL)


def test_errors_of_a_known_perturbation():
    # eNTK = K ⊗ diag(1 + ε_o): the top group of the eNTK's eigenvalues is λ_1 (1 + ε_o), sorted.
    eigenvalues = np.array([4.0, 2.0, 1.0, 0.25])
    k = rotated(eigenvalues)
    eps = np.array([0.1, 0.0, -0.1])
    errors = spectra.spectral_errors(kron(k, np.diag(1 + eps)), k, top_k=O)
    np.testing.assert_allclose(errors.top_k, np.abs(eps) / (1 + eps), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(errors.lambda_max, 0.1 / 1.1, rtol=TOL)
    np.testing.assert_allclose(errors.lambda_min, 0.1 / 0.9, rtol=TOL)
    cond = 4.0 * 1.1 / (0.25 * 0.9)
    np.testing.assert_allclose(errors.condition_number, abs(16.0 - cond) / cond, rtol=TOL)


def _entk_of_fc(width: int, seed: int = 0) -> np.ndarray:
    """The (N, N, O, O) eNTK of a one-hidden-layer zoo FC net at init, parameters drawn by NumPy."""
    model = models.get_model("fc", width=width, outputs=O, depth=1)
    shapes = jax.eval_shape(lambda: model.init_fn(jax.random.PRNGKey(seed), (-1, *IMAGE))[1])
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)
    x = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((N, *IMAGE)), jnp.float32)
    return full_entk_nt(model.apply_fn, x, None, params).transpose(0, 2, 1, 3)


def test_pntk_eigenvalues_repeated_approach_the_entk_with_width():
    # eNTK = pNTK ⊗ I_O + O(n^{-1/2}) (Mohamadi et al. 2023), so the spectral errors fall like
    # n^{-1/2}: by sqrt(narrow / wide) = 1/16 between these widths. SLACK allows 4x less decay, for the
    # finite-width fluctuations of one draw of the parameters.
    narrow, wide, slack = 16, 4096, 4.0
    errors = {}
    for width in (narrow, wide):
        entk = _entk_of_fc(width)
        pntk = entk.sum(axis=(2, 3)) / O  # the pNTK's definition (tested in test_pntk.py)
        errors[width] = spectra.repeated_eigenvalue_errors(entk, pntk, top_k=2 * O).max()
    assert errors[wide] <= slack * np.sqrt(narrow / wide) * errors[narrow]


def test_spectrum_objects_are_accepted():
    k = rotated(np.array([4.0, 2.0, 1.0, 0.25]))
    entk = kron(k, np.eye(O))
    from_objects = spectra.repeated_eigenvalue_errors(spectra.spectrum(entk), spectra.spectrum(k), top_k=O)
    np.testing.assert_allclose(from_objects, spectra.repeated_eigenvalue_errors(entk, k, top_k=O), atol=TOL)


# --- Bad arguments. ---


@pytest.mark.parametrize("shape", [(N, N + 1), (N,), (N, N, O), (N, N, O, O + 1)])
def test_bad_kernel_shape(shape):
    with pytest.raises(ValueError, match=r"`kernel` must be a square \(N, N\) kernel or an \(N, N, O, O\)"):
        spectra.spectrum(np.ones(shape))


@pytest.mark.parametrize(
    ("top_k", "error", "match"),
    [
        (0, ValueError, r"`top_k` must be at least 1 and at most 12 .*; got top_k=0"),
        (N * O + 1, ValueError, r"`top_k` must be at least 1 and at most 12"),
        (1.5, TypeError, r"`top_k` must be an int"),
        (True, TypeError, r"`top_k` must be an int"),
    ],
)
def test_bad_top_k(top_k, error, match):
    k = np.eye(N)
    with pytest.raises(error, match=match):
        spectra.repeated_eigenvalue_errors(kron(k, np.eye(O)), k, top_k=top_k)


def test_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match=r"`reference` has 12 eigenvalues, not a multiple of the 5"):
        spectra.spectral_errors(kron(np.eye(N), np.eye(O)), np.eye(5), top_k=1)
    with pytest.raises(ValueError, match=r"`entk` has 12 eigenvalues, not a multiple of the 5 of `kernel`"):
        spectra.repeated_eigenvalue_errors(kron(np.eye(N), np.eye(O)), np.eye(5), top_k=1)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_kernel_is_refused(value):
    """A NaN kernel raised NumPy's LinAlgError ("Eigenvalues did not converge"), naming nothing."""
    k = np.eye(N)
    k[1, 2] = k[2, 1] = value
    with pytest.raises(
        ValueError, match=rf"^`kernel` must be finite; it has 2 NaN or infinite entries of {N * N}"
    ):
        spectra.spectrum(k)


@pytest.mark.parametrize("shape", [(0, 0), (0, 0, O, O), (N, N, 0, 0)])
def test_empty_kernel_is_refused(shape):
    """A 0×0 kernel gave an empty spectrum, whose λ_max is an IndexError later."""
    with pytest.raises(
        ValueError, match=rf"`kernel` must be a square .*N and O at least 1; got shape \({shape[0]}, "
    ):
        spectra.spectrum(np.zeros(shape))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        # The imaginary part was dropped with NumPy's ComplexWarning only.
        (lambda k: k * (1 + 1j), r"got dtype complex128 \(complex values are not supported"),
        (lambda k: k.astype(str), r"got dtype <U\d+; pass numbers"),
    ],
)
def test_kernels_that_are_not_real_are_refused_by_name(bad, match):
    k = rotated(np.array([4.0, 2.0, 1.0, 0.25]))
    with pytest.raises(TypeError, match=rf"^`kernel` must be an array of real numbers; {match}"):
        spectra.spectrum(bad(k))
    entk = kron(k, np.eye(O))
    with pytest.raises(TypeError, match=r"^`reference` must be an array of real numbers"):
        spectra.spectral_errors(bad(entk), k, top_k=1)
    with pytest.raises(TypeError, match=r"^`approximation` must be an array of real numbers"):
        spectra.spectral_errors(entk, bad(k), top_k=1)
    with pytest.raises(TypeError, match=r"^`entk` must be an array of real numbers"):
        spectra.repeated_eigenvalue_errors(bad(entk), k, top_k=1)
    with pytest.raises(TypeError, match=r"^`kernel` must be an array of real numbers"):
        spectra.repeated_eigenvalue_errors(entk, bad(k), top_k=1)


def test_entries_near_the_float64_limit():
    """(K + Kᵀ)/2 overflowed for entries near 1.8e308."""
    eigenvalues = np.array([1.5, 1.0, 0.5, 0.25]) * 1e308
    s = spectra.spectrum(rotated(eigenvalues / 1e308) * 1e308)
    np.testing.assert_allclose(s.eigenvalues, eigenvalues, rtol=TOL)


def test_int_and_bool_kernels_are_numbers():
    np.testing.assert_array_equal(spectra.spectrum(np.array([[2, 0], [0, 1]])).eigenvalues, [2.0, 1.0])
    np.testing.assert_array_equal(spectra.spectrum(np.eye(2, dtype=bool)).eigenvalues, [1.0, 1.0])

"""`nt_pntk.trainability`: spectral scores against numpy's eigvalsh of float64 reference kernels, and
Kendall's τ against a count of concordant pairs."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import entk_as_matrix, full_entk_jacobian, kernel_from_entk, problem

import nt_pntk
from nt_pntk import approximations, trainability

O = 3  # noqa: E741  (the number of outputs)
N = 5
TOL = 1e-9  # float64 kernels summed in another order than the reference's


def rotated(eigenvalues: np.ndarray, seed: int = 0) -> np.ndarray:
    """Q diag(eigenvalues) Qᵀ with a random orthogonal Q: a dense matrix with a known spectrum."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T


def test_scores_of_a_known_matrix():
    s = trainability.scores_from_kernel(rotated(np.array([6.0, 3.0, 2.0, 0.5])))
    np.testing.assert_allclose(
        (s.lambda_max, s.lambda_min, s.condition_number, s.mean_eigenvalue),
        (6.0, 0.5, 12.0, 2.875),
        rtol=1e-12,
    )
    assert s.size == 4 and np.isnan(s.kernel_s) and np.isnan(s.compile_s) and s.eigen_s >= 0


@pytest.mark.parametrize("eigenvalues", [[2.0, 0.0], [3.0, -1.0]])
def test_a_singular_kernel_has_an_infinite_condition_number(eigenvalues):
    s = trainability.scores_from_kernel(rotated(np.array(eigenvalues)))
    assert s.condition_number == np.inf
    assert s.lambda_min == pytest.approx(eigenvalues[1], abs=1e-12)


def _reference_matrix(name: str, p) -> np.ndarray:
    """The float64 kernel from per-example Jacobians (jax.jacobian, not NT): N×N, or the eNTK as NO×NO."""
    entk = full_entk_jacobian(p.f, p.x1, None, p.params).transpose(0, 2, 1, 3)  # (N, N, O, O)
    return entk_as_matrix(entk) if name == "entk" else kernel_from_entk(entk, name)


KERNEL_FNS = {
    "pntk": lambda f: nt_pntk.empirical_pntk_fn(f),
    "trace": lambda f: approximations.Trace().kernel_fn(f),
    "entk": lambda f: approximations.FullENTK().kernel_fn(f),
}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("name", list(KERNEL_FNS))
def test_scores_of_a_network_against_eigvalsh_of_the_reference(name):
    p = problem("fc", out=O, n1=N)
    s = trainability.scores(KERNEL_FNS[name](p.f), p.x1, p.params)
    expected = np.linalg.eigvalsh(_reference_matrix(name, p))  # ascending
    assert s.size == (N * O if name == "entk" else N) == len(expected)
    np.testing.assert_allclose(
        (s.lambda_max, s.lambda_min, s.condition_number, s.mean_eigenvalue),
        (expected[-1], expected[0], expected[-1] / expected[0], expected.mean()),
        rtol=TOL,
    )
    assert s.kernel_s > 0 and s.compile_s > 0 and s.eigen_s >= 0


def test_the_pntk_scores_are_those_of_k_kron_identity():
    # The pNTK stands for K ⊗ I_O: the extremes of its repeated spectrum are K's.
    k = rotated(np.array([5.0, 1.0, 0.25]))
    kron = np.einsum("ab,op->abop", k, np.eye(O))
    a, b = trainability.scores_from_kernel(k), trainability.scores_from_kernel(kron)
    np.testing.assert_allclose(
        (a.lambda_max, a.lambda_min, a.condition_number, a.mean_eigenvalue),
        (b.lambda_max, b.lambda_min, b.condition_number, b.mean_eigenvalue),
        rtol=1e-12,
    )
    assert (a.size, b.size) == (3, 3 * O)


def test_keyword_arguments_reach_the_network():
    p = problem("dict", out=O, n1=N)
    plain = trainability.scores(nt_pntk.empirical_pntk_fn(p.f), p.x1, p.params)
    scaled = trainability.scores(nt_pntk.empirical_pntk_fn(p.f), p.x1, p.params, scale=2.0)
    # f -> 2 f multiplies the kernel by 4: κ unchanged, eigenvalues × 4.
    np.testing.assert_allclose(scaled.lambda_max, 4 * plain.lambda_max, rtol=1e-5)
    np.testing.assert_allclose(scaled.condition_number, plain.condition_number, rtol=1e-3)


# --- Bad inputs. ---


def test_a_network_whose_kernel_is_not_finite():
    p = problem("fc", out=O, n1=N)
    params = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), p.params)
    with pytest.raises(ValueError, match=r"has \d+ NaN or infinite entries of 25: its outputs or gradients"):
        trainability.scores(nt_pntk.empirical_pntk_fn(p.f), p.x1, params)


def test_a_kernel_fn_that_is_not_callable():
    p = problem("fc", out=O, n1=N)
    with pytest.raises(TypeError, match=r"`kernel_fn` must be a kernel function .*; got 3 of type int"):
        trainability.scores(3, p.x1, p.params)


@pytest.mark.parametrize(
    ("kernel", "error", "match"),
    [
        (np.ones((3, 4)), ValueError, r"`kernel` must be a square \(N, N\) kernel or an \(N, N, O, O\)"),
        (np.ones((2, 2, 3, 4)), ValueError, r"`kernel` must be a square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), ValueError, r"`kernel` must be finite; it has 2 NaN"),
        (np.eye(2, dtype=complex), TypeError, r"`kernel` must be an array of real numbers"),
    ],
)
def test_bad_kernels(kernel, error, match):
    with pytest.raises(error, match=match):
        trainability.scores_from_kernel(kernel)


# --- Kendall's τ. ---


def concordance_tau(x: np.ndarray, y: np.ndarray) -> float:
    """τ by its definition, counting every pair (no ties): (concordant − discordant) / pairs."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    return float(np.mean(signs))


def test_kendall_tau_against_pair_counts():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(12)
    accuracies = 0.5 - 0.1 * scores + 0.2 * rng.standard_normal(12)
    r = trainability.kendall_tau(scores, accuracies, resamples=300)
    assert r.tau == pytest.approx(concordance_tau(scores, accuracies), abs=1e-12)
    assert r.n == 12 and 0 <= r.p_value <= 1
    assert -1 <= r.low <= r.tau <= r.high <= 1


def test_infinite_scores_rank_last():
    scores = np.array([1.0, np.inf, 2.0, 4.0, 3.0])
    accuracies = np.array([0.9, 0.1, 0.8, 0.6, 0.7])
    as_largest = np.array([1.0, 1e9, 2.0, 4.0, 3.0])
    r = trainability.kendall_tau(scores, accuracies, resamples=50)
    assert r.tau == pytest.approx(concordance_tau(as_largest, accuracies), abs=1e-12) == -1.0


def test_the_interval_narrows_with_more_networks():
    rng = np.random.default_rng(1)

    def width(n):
        scores = rng.standard_normal(n)
        r = trainability.kendall_tau(scores, -scores + rng.standard_normal(n), resamples=400)
        return r.high - r.low

    assert width(200) < width(10)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([1.0, 2.0], [0.5]), {}, ValueError, r"must be 1-D arrays of the same length.*\(2,\) and \(1,\)"),
        (([1.0], [0.5]), {}, ValueError, r"at least 2"),
        (([1.0, np.nan], [0.5, 0.6]), {}, ValueError, r"`scores` must not be NaN"),
        (([1.0, 2.0], [0.5, np.inf]), {}, ValueError, r"`accuracies` must be finite"),
        (([1.0, 2.0], [0.5, 0.6]), {"confidence": 1.0}, ValueError, r"`confidence` must be in \(0, 1\)"),
        (([1.0, 2.0], [0.5, 0.6]), {"resamples": 0}, ValueError, r"`resamples` must be an int >= 1"),
        ((["a", "b"], [0.5, 0.6]), {}, TypeError, r"`scores` must be an array of real numbers"),
    ],
)
def test_kendall_tau_bad_inputs(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        trainability.kendall_tau(*args, **kwargs)

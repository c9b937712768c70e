"""`nt_pntk.regression.predict` against a direct NO×NO solve and `nt.predict.gradient_descent_mse`."""

from __future__ import annotations

import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest
import scipy.linalg
from reference import assert_close

from nt_pntk import regression

N, M, O = 6, 4, 3  # noqa: E741  (training inputs, test inputs, outputs)
FEATURES = 2 * (N + M) * O  # more features than kernel rows: the kernels are positive definite
LEARNING_RATE = 0.5
TIMES = [None, 0.3, 40.0]  # infinite, short and long training
RIDGES = [0.0, 0.1]


def kernel_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A positive definite N×N kernel K and its (M, N) test rows, from random features."""
    phi = np.random.default_rng(seed).standard_normal((N + M, FEATURES)) / np.sqrt(FEATURES)
    k = phi @ phi.T
    return k[:N, :N], k[N:, :N]


def entk_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A positive definite (N, N, O, O) eNTK and its (M, N, O, O) test rows, from random Jacobians."""
    jac = np.random.default_rng(seed).standard_normal((N + M, O, FEATURES)) / np.sqrt(FEATURES)
    e = np.einsum("aoq,bpq->abop", jac, jac)
    return e[:N, :N], e[N:, :N]


def targets(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, O))


def direct(k_matrix: np.ndarray, k_star_matrix: np.ndarray, y: np.ndarray, ridge: float, t) -> np.ndarray:
    """The NO×NO solve written out: K*(K + λI)^{-1} (I - expm(-η t (K + λI) / (NO))) vec(Y)."""
    k_reg = k_matrix + ridge * np.mean(np.diag(k_matrix)) * np.eye(len(k_matrix))
    vec = y.reshape(-1)
    if t is not None:
        vec = (np.eye(len(k_reg)) - scipy.linalg.expm(-LEARNING_RATE * t * k_reg / y.size)) @ vec
    return (k_star_matrix @ np.linalg.solve(k_reg, vec)).reshape(-1, y.shape[1])


def as_matrix(e: np.ndarray) -> np.ndarray:
    n1, n2, o, _ = e.shape
    return e.transpose(0, 2, 1, 3).reshape(n1 * o, n2 * o)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("ridge", RIDGES)
def test_kron_matches_direct_no_by_no_solve(ridge, t):
    k, k_star = kernel_pair()
    y = targets()
    eye = np.eye(O)
    # np.kron(K, I_O) has (example, output) rows, matching Y's row-major vec.
    expected = direct(np.kron(k, eye), np.kron(k_star, eye), y, ridge, t)
    actual = regression.predict(k, y, k_star, ridge=ridge, t=t, learning_rate=LEARNING_RATE)
    assert_close(actual, expected)
    # On the training inputs: k_test_train = k_train_train.
    expected_train = direct(np.kron(k, eye), np.kron(k, eye), y, ridge, t)
    assert_close(regression.predict(k, y, ridge=ridge, t=t, learning_rate=LEARNING_RATE), expected_train)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("ridge", RIDGES)
def test_full_entk_matches_direct_no_by_no_solve(ridge, t):
    e, e_star = entk_pair()
    y = targets()
    expected = direct(as_matrix(e), as_matrix(e_star), y, ridge, t)
    actual = regression.predict(e, y, e_star, ridge=ridge, t=t, learning_rate=LEARNING_RATE)
    assert_close(actual, expected)


@pytest.mark.parametrize("t", TIMES)
def test_full_entk_of_a_kronecker_product_matches_kron(t):
    k, k_star = kernel_pair()
    y = targets()
    eye = np.eye(O)
    as_full = regression.predict(
        np.einsum("ab,op->abop", k, eye), y, np.einsum("ab,op->abop", k_star, eye), ridge=RIDGES[-1], t=t
    )
    assert_close(as_full, regression.predict(k, y, k_star, ridge=RIDGES[-1], t=t))


def test_interpolates_the_targets_without_ridge():
    k, _ = kernel_pair()
    y = targets()
    assert_close(regression.predict(k, y), y)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("ridge", RIDGES)
@pytest.mark.parametrize("kind", ["kron", "full"])
def test_matches_nt_gradient_descent_mse(float64, kind, ridge, t):
    if kind == "kron":  # NT's trace_axes=(-1,): the N×N kernel is K ⊗ I_O
        (k, k_star), trace_axes = kernel_pair(), (-1,)
    else:  # NT's trace_axes=(): the full (N, N, O, O) kernel
        (k, k_star), trace_axes = entk_pair(), ()
    y = targets()
    predict_fn = nt.predict.gradient_descent_mse(
        jnp.asarray(k), jnp.asarray(y), learning_rate=LEARNING_RATE, diag_reg=ridge, trace_axes=trace_axes
    )
    _, nt_test = predict_fn(t, 0.0, 0.0, jnp.asarray(k_star))
    actual = regression.predict(k, y, k_star, ridge=ridge, t=t, learning_rate=LEARNING_RATE)
    assert_close(actual, np.asarray(nt_test))


def test_infinite_time_is_the_limit():
    k, k_star = kernel_pair()
    y = targets()
    assert_close(regression.predict(k, y, k_star, t=np.inf), regression.predict(k, y, k_star))


def test_zero_time_predicts_zero():
    k, k_star = kernel_pair()
    assert np.all(regression.predict(k, targets(), k_star, t=0.0) == 0)


# --- Bad arguments. ---


@pytest.mark.parametrize(
    ("y_shape", "kind", "expected"),
    [
        ((N,), "kron", rf"\(N, O\) = \({N}, O\)"),
        ((N + 1, O), "kron", rf"\(N, O\) = \({N}, O\)"),
        ((N, O + 1), "full", rf"\(N, O\) = \({N}, {O}\)"),
    ],
)
def test_bad_targets_shape(y_shape, kind, expected):
    k, _ = kernel_pair() if kind == "kron" else entk_pair()
    got = rf"got shape \({y_shape[0]},"
    with pytest.raises(ValueError, match=rf"`y_train` must have shape {expected} .*{got}"):
        regression.predict(k, np.ones(y_shape))


@pytest.mark.parametrize("shape", [(N, N + 1), (N,), (N, N, O), (N, N, O, O + 1)])
def test_bad_kernel_shape(shape):
    with pytest.raises(ValueError, match=r"`k_train_train` must be an \(N, N\) kernel"):
        regression.predict(np.ones(shape), targets())


@pytest.mark.parametrize("kind", ["kron", "full"])
def test_bad_test_kernel_shape(kind):
    k, k_star = kernel_pair() if kind == "kron" else entk_pair()
    with pytest.raises(ValueError, match=r"`k_test_train` must have shape \(M, "):
        regression.predict(k, targets(), k_star[:, :-1])


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ridge": -1.0}, ValueError, r"`ridge` must be a finite number >= 0; got ridge=-1.0"),
        ({"ridge": np.nan}, ValueError, r"`ridge` must be a finite number >= 0"),
        ({"ridge": "small"}, TypeError, r"`ridge` must be a real number"),
        ({"t": -1.0}, ValueError, r"`t` must be a time >= 0, or None"),
        ({"learning_rate": 0.0}, ValueError, r"`learning_rate` must be a finite number > 0"),
    ],
)
def test_bad_options(options, error, match):
    k, k_star = kernel_pair()
    with pytest.raises(error, match=match):
        regression.predict(k, targets(), k_star, **options)


def test_singular_kernel_asks_for_a_ridge():
    rank_one = np.ones((N, N))
    with pytest.raises(ValueError, match=r"not positive definite.*pass a larger `ridge`"):
        regression.predict(rank_one, targets())
    # A ridge makes it solvable.
    assert np.all(np.isfinite(regression.predict(rank_one, targets(), ridge=RIDGES[-1])))

"""`nt_pntk.regression.predict` against a direct NO×NO solve and `nt.predict.gradient_descent_mse`."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest
import scipy.linalg
from reference import assert_close, entk_from_jacobians

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
    e = entk_from_jacobians(jac)
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


# --- Kernels that are not symmetric, or not positive semi-definite. ---


def gradient_flow_reference(k_matrix, k_star_matrix, y, ridge, t) -> np.ndarray:
    """`direct`, also for a singular K at finite t: ∫₀^τ e^{-sK} ds = K⁻¹(I - e^{-τK}) is the top-right
    block of expm(τ [[-K, I], [0, 0]]) (Van Loan), with no inverse."""
    if t is None:
        return direct(k_matrix, k_star_matrix, y, ridge, t)
    size = len(k_matrix)
    k_reg = k_matrix + ridge * np.mean(np.diag(k_matrix)) * np.eye(size)
    block = np.zeros((2 * size, 2 * size))
    block[:size, :size], block[:size, size:] = -k_reg, np.eye(size)
    tau = LEARNING_RATE * t / y.size
    integral = scipy.linalg.expm(tau * block)[:size, size:]
    return (k_star_matrix @ (integral @ y.reshape(-1))).reshape(-1, y.shape[1])


def square_entk(seed: int = 0) -> np.ndarray:
    """A positive definite (N, N, O, O) eNTK with N = O, so that the (N, O, N, O) layout fits its shape."""
    jac = np.random.default_rng(seed).standard_normal((O, O, FEATURES)) / np.sqrt(FEATURES)
    return entk_from_jacobians(jac)


@pytest.mark.parametrize("t", [None, 0.3])
@pytest.mark.parametrize(
    "case", ["kron-nonsymmetric", "kron-test-block", "full-nonsymmetric", "full-other-layout"]
)
def test_non_symmetric_kernel_is_refused(case, t):
    k, _ = kernel_pair()
    if case == "kron-nonsymmetric":
        bad, y = k + 0.01 * np.triu(np.ones((N, N)), 1), targets()
    elif case == "kron-test-block":  # a test-train block passed where the train-train one goes
        phi = np.random.default_rng(3).standard_normal((2 * N, FEATURES))
        bad, y = phi[:N] @ phi[N:].T, targets()
    elif case == "full-nonsymmetric":
        e, _ = entk_pair()
        bad, y = e.copy(), targets()
        bad[0, 1, 0, 2] += 0.1 * np.abs(e).max()
    else:  # NT's (N, O, N, O) layout mistaken for (N, N, O, O)
        bad, y = square_entk().transpose(0, 2, 1, 3), np.random.default_rng(1).standard_normal((O, O))
    matrix = as_matrix(bad) if bad.ndim == 4 else bad
    asymmetry = np.linalg.norm(matrix - matrix.T) / np.linalg.norm(matrix)
    assert asymmetry > 1e-3  # the cases are wrong arguments, not round-off
    transpose = "K.transpose(1, 0, 3, 2)" if bad.ndim == 4 else "K.T"
    with pytest.raises(ValueError, match=r"`k_train_train` must be symmetric") as excinfo:
        regression.predict(bad, y, ridge=0.1, t=t)
    message = str(excinfo.value)
    assert f"relative asymmetry ‖K − Kᵀ‖/‖K‖ is {asymmetry:.3g}" in message
    assert f"symmetrize it: (K + {transpose}) / 2" in message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_asymmetry_just_beyond_round_off_is_refused(dtype):
    k, _ = kernel_pair()
    bad = (k + 1e-4 * np.triu(k, 1)).astype(dtype)  # relative asymmetry ~ 1e-4
    with pytest.raises(ValueError, match="must be symmetric"):
        regression.predict(bad, targets(), t=1.0)


def test_round_off_asymmetry_of_float32_is_accepted():
    """One float32 ulp of asymmetry, in float32 or cast to float64 (as the validation sweep does)."""
    k, k_star = kernel_pair()
    k32 = k.astype(np.float32)
    k32[0, 1] = np.nextafter(k32[0, 1], np.float32(np.inf))
    k32[2, 4] = np.nextafter(k32[2, 4], np.float32(-np.inf))
    symmetric = (k32.astype(np.float64) + k32.T.astype(np.float64)) / 2
    y = targets()
    for t in TIMES:
        expected = direct(np.kron(symmetric, np.eye(O)), np.kron(k_star, np.eye(O)), y, 0.0, t)
        for kernel in (k32, k32.astype(np.float64)):
            actual = regression.predict(kernel, y, k_star, t=t, learning_rate=LEARNING_RATE)
            assert_close(actual, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["kron", "full"])
def test_indefinite_kernel_with_finite_time_is_refused(kind):
    """A negative eigenvalue far beyond round-off was silently clipped to 0; now it is an error."""
    (k, _), y = (kernel_pair() if kind == "kron" else entk_pair()), targets()
    matrix = as_matrix(k) if kind == "full" else k
    evals, evecs = np.linalg.eigh(matrix)
    lowest = -0.05 * evals[-1]  # move the smallest eigenvalue to -5% of the largest
    indefinite = matrix + (lowest - evals[0]) * np.outer(evecs[:, 0], evecs[:, 0])
    mean_diagonal = np.mean(np.diag(indefinite))
    if kind == "full":
        indefinite = indefinite.reshape(N, O, N, O).transpose(0, 2, 1, 3)
    ridge = 0.01
    reg_lowest = lowest + ridge * mean_diagonal
    with pytest.raises(ValueError, match=r"must be positive semi-definite for a finite `t`") as excinfo:
        regression.predict(indefinite, y, ridge=ridge, t=1.0)
    message = str(excinfo.value)
    assert f"its most negative eigenvalue is {reg_lowest:.3g}" in message
    suggested = float(re.search(r"e\.g\. ridge=(\S+) \(relative to the mean diagonal\)", message)[1])
    assert suggested * mean_diagonal > -lowest  # the suggested ridge does lift it above 0
    assert np.all(np.isfinite(regression.predict(indefinite, y, ridge=suggested, t=1.0)))
    # Infinite time already refused it (Cholesky), with the same advice.
    with pytest.raises(ValueError, match=r"not positive definite.*pass a larger `ridge`"):
        regression.predict(indefinite, y, ridge=ridge)


def test_non_finite_kernel_is_refused():
    k, k_star = kernel_pair()
    k[1, 2] = k[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`k_train_train` must be finite; it has 2 NaN or infinite entries"):
        regression.predict(k, targets(), t=1.0)
    k_star[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"`k_test_train` must be finite; it has 1 NaN"):
        regression.predict(kernel_pair()[0], targets(), k_star)


@functools.cache
def genuine_kernels(implementation: int) -> tuple[jax.Array, jax.Array]:
    """A real float32 pNTK and eNTK of a zoo network on N + M inputs, the first two equal."""
    import nt_pntk
    from nt_pntk.experiments import models

    model = models.get_model("fc", width=16, outputs=O, depth=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (N + M, 4, 4, 1))
    x = x.at[1].set(x[0])  # two equal training inputs: the kernels are singular
    _, params = model.init_fn(jax.random.PRNGKey(1), x.shape)
    pntk_fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=implementation)
    entk_fn = nt.empirical_ntk_fn(model.apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation)
    return jax.jit(pntk_fn)(x, None, params), jax.jit(entk_fn)(x, None, params)


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("implementation", [1, 2])
def test_genuine_float32_kernels_pass(implementation, t):
    """A real float32 pNTK and eNTK from JAX (implementation 2 is asymmetric at round-off), singular
    because of a repeated input: accepted, with the answer of the symmetrized float64 kernel."""
    pntk, entk = genuine_kernels(implementation)
    assert pntk.dtype == entk.dtype == jnp.float32
    y = targets()
    ridge = 1e-3 if t is None else 0.0  # (infinite time needs a ridge on a singular kernel)
    for kernel, flat in (
        (pntk, np.asarray(pntk, np.float64)),
        (entk, as_matrix(np.asarray(entk, np.float64))),
    ):
        if kernel.ndim == 2:
            flat_train, flat_star = np.kron(flat[:N, :N], np.eye(O)), np.kron(flat[N:, :N], np.eye(O))
        else:
            flat_train, flat_star = flat[: N * O, : N * O], flat[N * O :, : N * O]
        expected = gradient_flow_reference((flat_train + flat_train.T) / 2, flat_star, y, ridge, t)
        actual = regression.predict(
            kernel[:N, :N], y, kernel[N:, :N], ridge=ridge, t=t, learning_rate=LEARNING_RATE
        )
        assert_close(actual, expected, rtol=1e-3)  # K⁻¹ amplifies the float32 round-off at t=None

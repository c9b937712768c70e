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
        ({"ridge": -1.0}, ValueError, r"`ridge` must be >= 0; got ridge=-1.0"),
        ({"ridge": np.nan}, ValueError, r"`ridge` must be finite; got ridge=nan"),
        ({"ridge": np.inf}, ValueError, r"`ridge` must be finite; got ridge=inf"),
        ({"ridge": "small"}, TypeError, r"`ridge` must be a real number; got 'small' of type str"),
        ({"ridge": "1e-3"}, TypeError, r"`ridge` must be a real number; got '1e-3' of type str"),
        ({"ridge": True}, TypeError, r"`ridge` must be a real number; got True of type bool"),
        ({"t": -1.0}, ValueError, r"`t` must be a time >= 0, or None"),
        ({"t": np.nan}, ValueError, r"`t` must be a time >= 0, or None .*; got t=nan"),
        ({"t": True}, TypeError, r"`t` must be a real number; got True of type bool"),
        ({"t": "1"}, TypeError, r"`t` must be a real number; got '1' of type str"),
        ({"learning_rate": 0.0}, ValueError, r"`learning_rate` must be > 0; got learning_rate=0.0"),
        ({"learning_rate": np.inf}, ValueError, r"`learning_rate` must be finite"),
        ({"learning_rate": False}, TypeError, r"`learning_rate` must be a real number; got False"),
    ],
)
def test_bad_options(options, error, match):
    k, k_star = kernel_pair()
    with pytest.raises(error, match=match):
        regression.predict(k, targets(), k_star, **options)


@pytest.mark.parametrize("wrap", [np.float32, np.int64, np.asarray, jnp.asarray])
def test_scalar_arrays_are_numbers(wrap):
    # `t=jnp.array(40.0)` is how a JAX user writes a time: the same prediction as the float,
    # whose own correctness the NO x NO and NT comparisons above establish.
    k, k_star = kernel_pair()
    expected = regression.predict(k, targets(), k_star, ridge=1e-3, t=40.0, learning_rate=2.0)
    got = regression.predict(k, targets(), k_star, ridge=1e-3, t=wrap(40), learning_rate=wrap(2))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    with pytest.raises(TypeError, match=r"`t` must be a real number; got .* of type"):
        regression.predict(k, targets(), k_star, t=np.array([40.0]))
    with pytest.raises(TypeError, match=r"`t` must be a real number"):
        regression.predict(k, targets(), k_star, t=np.bool_(True))


@pytest.mark.parametrize("argument", ["k_train_train", "y_train", "k_test_train"])
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        # Complex arrays were cast to float64 with NumPy's ComplexWarning only: the imaginary part was lost.
        (lambda a: a + 1j, TypeError, r"must be an array of real numbers; got dtype complex128 .*np\.real\("),
        (
            lambda a: a.astype(str),
            TypeError,
            r"must be an array of real numbers; got dtype <U\d+; pass numbers",
        ),
        (lambda a: a.astype(object), TypeError, r"must be an array of real numbers; got dtype object"),
        (
            lambda a: np.where(np.arange(a.size).reshape(a.shape) == 1, np.nan, a),
            ValueError,
            r"must be finite; "
            r"it has 1 NaN or infinite entries of \d+, the first nan at index \(0, 1\)",
        ),
    ],
)
def test_bad_arrays_are_named(argument, bad, error, match):
    k, k_star = kernel_pair()
    arrays = {"k_train_train": k, "y_train": targets(), "k_test_train": k_star}
    arrays[argument] = bad(arrays[argument])
    with pytest.raises(error, match=rf"^`{argument}` {match}"):
        regression.predict(arrays["k_train_train"], arrays["y_train"], arrays["k_test_train"], t=1.0)


def test_ragged_targets_are_refused():
    with pytest.raises(
        TypeError, match=r"^`y_train` must be an array of real numbers; got \[\[1.0\], \[\]\]"
    ):
        regression.predict(np.eye(2), [[1.0], []])


def test_targets_without_outputs_are_refused():
    with pytest.raises(
        ValueError, match=rf"`y_train` must have shape \(N, O\) = \({N}, O\) .*O >= 1; got shape"
    ):
        regression.predict(kernel_pair()[0], np.zeros((N, 0)))


def test_int_and_bool_arrays_are_numbers():
    """Integer kernels and bool one-hot targets are exact in float64; they are accepted as such."""
    k = np.array([[2, 1], [1, 2]])
    y = np.array([[True, False], [False, True]])
    expected = direct(np.kron(k, np.eye(2)), np.kron(k, np.eye(2)), y.astype(float), 0.0, 0.3)
    assert_close(regression.predict(k, y, t=0.3, learning_rate=LEARNING_RATE), expected)


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
    for t in (1.0, None):  # infinite time too, with the same message
        with pytest.raises(ValueError, match=r"plus the ridge .* must be positive semi-definite;") as excinfo:
            regression.predict(indefinite, y, ridge=ridge, t=t)
        message = str(excinfo.value)
        assert f"its most negative eigenvalue is {reg_lowest:.3g}" in message
        suggested = float(re.search(r"e\.g\. ridge=(\S+) \(relative to the mean diagonal\)", message)[1])
        assert suggested * mean_diagonal > -lowest  # the suggested ridge does lift it above 0
        assert np.all(np.isfinite(regression.predict(indefinite, y, ridge=suggested, t=t)))
    # The eigenvalue is reported in the kernel's units, whatever its scale.
    with pytest.raises(
        ValueError, match=re.escape(f"its most negative eigenvalue is {reg_lowest * 1e300:.3g},")
    ):
        regression.predict(indefinite * 1e300, y, ridge=ridge, t=1.0)


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


# --- Singular kernels and extreme times (|f| was ≈ 1e267 at t=1e300). ---

EXTREME_TIMES = [0.0, 0.3, 40.0, 1e6, 1e300, np.inf, None]


def repeated_input_features(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Features Φ of the N training and M test inputs, the second training input equal to the first,
    as (N·rows, P) and (M·rows, P) matrices: rows are examples (kron: K = ΦΦᵀ, used as K ⊗ I_O) or
    (example, output) pairs (full: the eNTK from Jacobians). Also the exact rank of K."""
    rng = np.random.default_rng(seed)
    rows = 1 if kind == "kron" else O
    phi = rng.standard_normal((N + M, rows, FEATURES)) / np.sqrt(FEATURES)
    phi[1] = phi[0]
    phi = phi.reshape((N + M) * rows, FEATURES)
    return phi[: N * rows], phi[N * rows :], (N - 1) * rows


def feature_space_flow(
    phi: np.ndarray, phi_star: np.ndarray, rank: int, y: np.ndarray, ridge, t
) -> np.ndarray:
    """Gradient flow from zero on K = ΦΦᵀ + λI, written in feature space with a rank-`rank` SVD
    Φ = U S Vᵀ and no eigendecomposition of K: K* (K + λI)⁻¹ (I - e^{-τ(K + λI)}) Y is
    Φ* V diag(s (1 - e^{-(s² + λ)τ}) / (s² + λ)) Uᵀ Y, as K* = Φ* V S Uᵀ vanishes on K's null space.
    At t = inf (and λ = 0), the pseudo-inverse interpolant Φ* Φ⁺ Y."""
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    lam = ridge * np.mean(np.sum(phi**2, axis=1))  # ridge × the mean diagonal of ΦΦᵀ
    tau = np.inf if t is None else LEARNING_RATE * t / y.size
    gains = s * -np.expm1(-(s**2 + lam) * tau) / (s**2 + lam)
    rhs = y if len(phi) == y.shape[0] else y.reshape(-1, 1)  # kron: O columns; full: vec(Y)
    return (phi_star @ vt.T @ (gains[:, None] * (u.T @ rhs))).reshape(-1, y.shape[1])


def with_round_off(k: np.ndarray, sign: int, kind: str) -> np.ndarray:
    """`k` (a kernel whose inputs 0 and 1 are equal) plus ±1e-9 λmax along its null space
    (e0 - e1)/√2 ⊗ I: a round-off eigenvalue of either sign, deterministically (eigh gives ~1e-16)."""
    v = np.zeros(N)
    v[:2] = [1 / np.sqrt(2), -1 / np.sqrt(2)]
    null = np.outer(v, v) if kind == "kron" else np.einsum("ab,op->abop", np.outer(v, v), np.eye(O))
    matrix = k if kind == "kron" else as_matrix(k)
    return k + sign * 1e-9 * np.linalg.eigvalsh(matrix)[-1] * null


@pytest.mark.parametrize("t", EXTREME_TIMES)
@pytest.mark.parametrize("ridge", RIDGES)
@pytest.mark.parametrize("sign", [-1, 0, 1])
@pytest.mark.parametrize("kind", ["kron", "full"])
def test_singular_kernel_matches_feature_space_flow(kind, sign, ridge, t):
    """A repeated training input, round-off eigenvalues of either sign: round-off was clipped to 0 and
    multiplied by t (|f| ≈ 1e267 at t=1e300); infinite time refused the kernel. Now every t gives
    gradient flow, the pseudo-inverse interpolant at t=inf."""
    phi, phi_star, rank = repeated_input_features(kind)
    k, k_star = phi @ phi.T, phi_star @ phi.T
    if kind == "full":  # the (N, N, O, O) layout
        k, k_star = (m.reshape(-1, O, N, O).transpose(0, 2, 1, 3) for m in (k, k_star))
    y = targets()
    expected = feature_space_flow(phi, phi_star, rank, y, ridge, t)
    actual = regression.predict(
        with_round_off(k, sign, kind), y, k_star, ridge=ridge, t=t, learning_rate=LEARNING_RATE
    )
    assert_close(actual, expected, rtol=1e-7)
    if t is None and ridge == 0:  # the interpolant of NumPy's pseudo-inverse, and the training targets
        flat, flat_star = (phi @ phi.T, phi_star @ phi.T)
        rhs = y if kind == "kron" else y.reshape(-1, 1)
        assert_close(
            actual, (flat_star @ np.linalg.pinv(flat, hermitian=True) @ rhs).reshape(-1, O), rtol=1e-7
        )
        on_train = regression.predict(k, y, ridge=ridge, t=t)
        y_fit = y.copy()
        y_fit[:2] = y[:2].mean(axis=0)  # the equal inputs get the mean of their targets
        assert_close(on_train, y_fit, rtol=1e-7)


def test_singular_kernel_agrees_with_the_van_loan_flow():
    """At moderate t, also against the matrix-exponential reference (no eigendecomposition at all)."""
    phi, phi_star, _ = repeated_input_features("kron")
    k, k_star = phi @ phi.T, phi_star @ phi.T
    y = targets()
    for t in (0.3, 40.0):
        expected = gradient_flow_reference(np.kron(k, np.eye(O)), np.kron(k_star, np.eye(O)), y, 0.0, t)
        assert_close(regression.predict(k, y, k_star, t=t, learning_rate=LEARNING_RATE), expected, rtol=1e-7)


def test_rank_one_kernel_gives_the_mean():
    """All inputs equal: K = 11ᵀ. Every prediction is the mean target (it was refused at t=None)."""
    y = targets()
    assert_close(regression.predict(np.ones((N, N)), y), np.tile(y.mean(axis=0), (N, 1)), rtol=1e-12)


def test_zero_kernel_predicts_zero():
    """No features: gradient flow does not move, at any t (NaN in NT)."""
    for t in EXTREME_TIMES:
        assert np.all(regression.predict(np.zeros((N, N)), targets(), t=t) == 0)


@pytest.mark.parametrize("t", EXTREME_TIMES)
@pytest.mark.parametrize("ridge", RIDGES)
@pytest.mark.parametrize("kind", ["kron", "full"])
def test_extreme_times_match_nt_on_regular_kernels(float64, kind, ridge, t):
    """Away from singular, NT's gradient_descent_mse at t = 0, 1e300 and inf too."""
    if kind == "kron":
        (k, k_star), trace_axes = kernel_pair(), (-1,)
    else:
        (k, k_star), trace_axes = entk_pair(), ()
    y = targets()
    predict_fn = nt.predict.gradient_descent_mse(
        jnp.asarray(k), jnp.asarray(y), learning_rate=LEARNING_RATE, diag_reg=ridge, trace_axes=trace_axes
    )
    _, nt_test = predict_fn(t, 0.0, 0.0, jnp.asarray(k_star))
    actual = regression.predict(k, y, k_star, ridge=ridge, t=t, learning_rate=LEARNING_RATE)
    assert_close(actual, np.asarray(nt_test), rtol=1e-9)


@pytest.mark.parametrize("t", [1e300, 1e308])
def test_overflowing_time_is_infinite_time(t):
    """learning_rate · t beyond float64's range: the infinite-time limit, without overflow warnings,
    on a regular and on a singular kernel (inf × 0 gave NaN there)."""
    k, k_star = kernel_pair()
    y = targets()
    expected = direct(np.kron(k, np.eye(O)), np.kron(k_star, np.eye(O)), y, 0.0, None)
    assert_close(regression.predict(k, y, k_star, t=t, learning_rate=1e300), expected)
    phi, phi_star, rank = repeated_input_features("kron")
    expected = feature_space_flow(phi, phi_star, rank, y, 0.0, None)
    actual = regression.predict(phi @ phi.T, y, phi_star @ phi.T, t=t, learning_rate=1e300)
    assert_close(actual, expected, rtol=1e-7)


def test_huge_ridge_does_not_overflow():
    """ridge · mean diagonal beyond float64's range overflowed (an error naming nothing); the answer is
    K* Y / λ to float64 precision (K is 1e-308 of λ)."""
    k, k_star = (10 * m for m in kernel_pair())  # a mean diagonal of about 10
    y = targets()
    ridge = 1.7e308
    actual = regression.predict(k, y, k_star, ridge=ridge)
    mean_diagonal = float(np.mean(np.diag(k)))
    assert ridge * mean_diagonal == np.inf
    expected = (k_star / mean_diagonal) @ y / ridge  # λ = ridge · mean diagonal, in two steps
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    # At a finite time too, long enough to converge (λ·t overflows: no warning).
    np.testing.assert_allclose(regression.predict(k, y, k_star, ridge=ridge, t=1e300), expected, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_kernels_of_extreme_scale(scale):
    """Entries near float64's limits: norms and the mean diagonal overflowed; the flow on c·K for t/c
    is the flow on K for t."""
    k, k_star = kernel_pair()
    y = targets()
    for t in (0.3, None):
        expected = direct(np.kron(k, np.eye(O)), np.kron(k_star, np.eye(O)), y, 0.1, t)
        actual = regression.predict(
            k * scale,
            y,
            k_star * scale,
            ridge=0.1,
            t=None if t is None else t / scale,
            learning_rate=LEARNING_RATE,
        )
        assert_close(actual, expected)

"""`nt_pntk.attribution` against explicit float64 formulas (numpy.linalg.solve, loops, scipy's spearmanr).

The references form every matrix: (K + λI)⁻¹ by `np.linalg.solve`, Φ Φᵀ and (ΦᵀΦ + λI)⁻¹ explicitly,
the readouts' agreement and the residuals entry by entry; the LDS against `scipy.stats.spearmanr`
column by column and a case worked by hand.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from reference import assert_close

from nt_pntk import attribution
from nt_pntk.approximations import PNTK

N, M, O, K = 9, 4, 3, 5  # training inputs, test inputs, outputs, features  # noqa: E741
RIDGE = 0.05


def problem(seed: int = 0, n: int = N, k: int = K, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((n + M, k)) * scale
    logits = rng.standard_normal((n + M, O)) * 2
    labels = rng.integers(0, O, n + M)
    return phi[:n], phi[n:], logits[:n], labels[:n], logits[n:], labels[n:]


def explicit_readout(logits, labels):
    readout = np.zeros_like(logits)
    for row, (values, label) in enumerate(zip(logits, labels, strict=True)):
        others = [o for o in range(len(values)) if o != label]
        readout[row, label] = 1.0
        readout[row, max(others, key=lambda o: values[o])] = -1.0
    return readout


def reference_surrogate(k_star, k, outputs, readout, ridge):
    lam = ridge * np.trace(k) / len(k)
    alpha = np.linalg.solve(k + lam * np.eye(len(k)), outputs)
    return np.array(
        [[k_star[x, i] * alpha[i] @ readout[x] for i in range(len(k))] for x in range(len(k_star))]
    )


def reference_trak_primal(phi_test, phi, q, r_test, r_train, ridge):
    lam = ridge * np.sum(phi**2) / len(phi)
    inverse = np.linalg.solve(phi.T @ phi + lam * np.eye(phi.shape[1]), np.eye(phi.shape[1]))
    return np.array(
        [
            [phi_test[x] @ inverse @ phi[i] * q[i] * (r_test[x] @ r_train[i]) for i in range(len(phi))]
            for x in range(len(phi_test))
        ]
    )


def test_margins_readout_and_residuals_match_their_definitions():
    _, _, logits, labels, _, _ = problem()
    readout = explicit_readout(logits, labels)
    assert_close(attribution.margin_readout(logits, labels), readout, rtol=0)
    assert_close(attribution.margins(logits, labels), np.sum(readout * logits, axis=1), rtol=1e-15)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert_close(attribution.residuals(logits, labels), 1 - p[np.arange(N), labels], rtol=1e-12)
    # Positive exactly where the network is right.
    assert np.array_equal(attribution.margins(logits, labels) > 0, logits.argmax(1) == labels)


def test_surrogate_scores_match_the_explicit_solve_and_sum_to_the_surrogate():
    phi, phi_test, outputs, _, test_logits, test_labels = problem()
    k, k_star = phi @ phi.T, phi_test @ phi.T
    readout = attribution.margin_readout(test_logits, test_labels)
    expected = reference_surrogate(k_star, k, outputs, readout, RIDGE)
    scores = attribution.surrogate_scores(k_star, k, outputs, readout, ridge=RIDGE, block_rows=3)
    assert_close(scores, expected, rtol=1e-10)
    lam = RIDGE * np.trace(k) / N
    surrogate = k_star @ np.linalg.solve(k + lam * np.eye(N), outputs)
    assert_close(scores.sum(1), np.sum(surrogate * readout, axis=1), rtol=1e-10)
    # From the features, a k×k solve: the same scores, whatever the blocks, the scale or the storage.
    primal = attribution.surrogate_feature_scores(phi_test, phi, outputs, readout, ridge=RIDGE, block_rows=2)
    assert_close(primal, expected, rtol=1e-9)
    scaled = attribution.surrogate_feature_scores(
        1e150 * phi_test, 1e150 * phi, outputs, readout, ridge=RIDGE
    )
    assert_close(scaled, expected, rtol=1e-9)  # K = ΦΦᵀ is 1e300 times larger, α 1e300 times smaller


@pytest.mark.parametrize("readouts", [True, False], ids=["readouts", "single-output"])
def test_trak_scores_match_the_explicit_primal_and_dual(readouts):
    phi, phi_test, logits, labels, test_logits, test_labels = problem(n=7, k=11)  # k > N: ΦᵀΦ singular
    q = attribution.residuals(logits, labels)
    r_test = explicit_readout(test_logits, test_labels) if readouts else np.ones((M, 1))
    r_train = explicit_readout(logits, labels) if readouts else np.ones((7, 1))
    expected = reference_trak_primal(phi_test, phi, q, r_test, r_train, RIDGE)
    options = {"test_readout": r_test, "train_readout": r_train} if readouts else {}
    dual = attribution.trak_scores(phi_test @ phi.T, phi @ phi.T, q, ridge=RIDGE, **options)
    primal = attribution.trak_feature_scores(phi_test, phi, q, ridge=RIDGE, block_rows=3, **options)
    assert_close(dual, expected, rtol=1e-9)
    assert_close(primal, expected, rtol=1e-9)


def test_feature_scores_read_npy_files_and_write_into_out(tmp_path):
    phi, phi_test, outputs, _, test_logits, test_labels = problem(n=30)
    np.save(tmp_path / "train.npy", phi.astype(np.float32))
    np.save(tmp_path / "test.npy", phi_test.astype(np.float32))
    readout = attribution.margin_readout(test_logits, test_labels)
    out = np.lib.format.open_memmap(tmp_path / "scores.npy", mode="w+", dtype=np.float64, shape=(M, 30))
    result = attribution.surrogate_feature_scores(
        tmp_path / "test.npy", tmp_path / "train.npy", outputs, readout, ridge=RIDGE, block_rows=4, out=out
    )
    assert result is out
    phi32, test32 = phi.astype(np.float32).astype(np.float64), phi_test.astype(np.float32).astype(np.float64)
    expected = reference_surrogate(test32 @ phi32.T, phi32 @ phi32.T, outputs, readout, RIDGE)
    assert_close(np.load(tmp_path / "scores.npy"), expected, rtol=1e-9)


def test_trak_from_exact_gradients_of_g_is_trak_on_the_pntk():
    # A network's exact per-example gradients of g = Σ_o f_o / √O are features of its pNTK.
    def apply_fn(params, x):
        return jnp.tanh(x @ params[0]) @ params[1]

    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = (jax.random.normal(key1, (3, 6)), jax.random.normal(key2, (6, O)))
    x = jax.random.normal(key3, (N + M, 3))

    def g(params, xi):
        return jnp.sum(apply_fn(params, xi[None])) / jnp.sqrt(O)

    grads = jax.vmap(jax.grad(g), in_axes=(None, 0))(params, x)
    phi = np.concatenate([np.asarray(a, np.float64).reshape(N + M, -1) for a in grads], axis=1)
    kernel = np.asarray(PNTK().kernel_fn(apply_fn)(x, None, params), np.float64)
    kernel = (kernel + kernel.T) / 2
    q = np.linspace(0.1, 0.9, N)
    from_features = attribution.trak_feature_scores(phi[N:], phi[:N], q, ridge=RIDGE)
    from_kernel = attribution.trak_scores(kernel[N:, :N], kernel[:N, :N], q, ridge=RIDGE)
    assert_close(from_kernel, from_features, rtol=1e-4)  # float32 kernel against float32 gradients


def test_lds_of_a_case_worked_by_hand():
    # One test input; predicted margins 3, 5, 6 (ranks 1, 2, 3), actual 0.1, 0.3, 0.2 (ranks 1, 3, 2):
    # ρ = 1 - 6 Σd² / (n(n² - 1)) = 1 - 6·2/24 = 0.5. A second test input ranked in reverse: -1.
    scores = np.array([[1.0, 2.0, 4.0], [-1.0, -2.0, -4.0]])
    subsets = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool)
    margins = np.array([[0.1, 1.0], [0.3, 2.0], [0.2, 3.0]])
    lds = attribution.linear_datamodeling_score(scores, subsets, margins)
    assert_close(lds.per_test, np.array([0.5, -1.0]), rtol=1e-15)
    assert lds.mean == pytest.approx(-0.25)


def test_lds_matches_scipy_spearmanr_with_ties_and_undefined_columns():
    rng = np.random.default_rng(1)
    scores = rng.integers(-2, 3, (6, 20)).astype(float)  # integer scores: tied predictions
    scores[5] = 0.0  # constant predictions: no correlation
    subsets = rng.random((15, 20)) < 0.5
    margins = np.round(rng.standard_normal((15, 6)), 1)  # tied margins
    lds = attribution.linear_datamodeling_score(scores, subsets, margins)
    predicted = subsets.astype(float) @ scores.T
    expected = [scipy.stats.spearmanr(predicted[:, x], margins[:, x]).statistic for x in range(5)]
    assert_close(lds.per_test[:5], np.array(expected), rtol=1e-12)
    assert np.isnan(lds.per_test[5])
    assert lds.mean == pytest.approx(np.mean(expected), rel=1e-12)


def _bad_calls():
    phi, phi_test, outputs, labels, test_logits, test_labels = problem()
    k, k_star = phi @ phi.T, phi_test @ phi.T
    readout = attribution.margin_readout(test_logits, test_labels)
    q = np.full(N, 0.5)
    subsets = np.ones((5, N), bool)
    return {
        "label out of range": (
            lambda: attribution.margins(outputs, labels + 3),
            ValueError,
            "`labels` must be classes in \\[0, 3\\)",
        ),
        "float labels": (
            lambda: attribution.margins(outputs, labels * 1.0),
            TypeError,
            "`labels` must be integer",
        ),
        "one logit": (lambda: attribution.residuals(outputs[:, :1], labels), ValueError, "O >= 2"),
        "non-square kernel": (
            lambda: attribution.surrogate_scores(k_star, k[:, :3], outputs, readout),
            ValueError,
            "`k_train_train` must be a square",
        ),
        "test kernel of other width": (
            lambda: attribution.surrogate_scores(k_star[:, :3], k, outputs, readout),
            ValueError,
            "`k_test_train` must have shape \\(N_test, N_train\\) = \\(N_test, 9\\)",
        ),
        "readout of other O": (
            lambda: attribution.surrogate_scores(k_star, k, outputs, readout[:, :2]),
            ValueError,
            "`test_readout` must have O = 3",
        ),
        "zero ridge": (
            lambda: attribution.surrogate_scores(k_star, k, outputs, readout, ridge=0.0),
            ValueError,
            "`ridge` must be > 0",
        ),
        "indefinite kernel": (
            lambda: attribution.trak_scores(k_star, -k, q),
            ValueError,
            "not positive definite",
        ),
        "asymmetric kernel": (
            lambda: attribution.trak_scores(k_star, k + np.triu(k, 1), q),
            ValueError,
            "symmetric",
        ),
        "one readout": (
            lambda: attribution.trak_scores(k_star, k, q, test_readout=readout),
            ValueError,
            "`test_readout` was given without `train_readout`",
        ),
        "residuals of other N": (
            lambda: attribution.trak_scores(k_star, k, q[:3]),
            ValueError,
            "`train_residuals` must have shape \\(N_train,\\) = \\(9,\\)",
        ),
        "features of other k": (
            lambda: attribution.trak_feature_scores(phi_test[:, :2], phi, q),
            ValueError,
            "the same k",
        ),
        "NaN features": (
            lambda: attribution.trak_feature_scores(phi_test, phi * np.nan, q),
            ValueError,
            "`phi_train` must be finite",
        ),
        "not a file of features": (
            lambda: attribution.trak_feature_scores("phi.txt", phi, q),
            ValueError,
            "\\.npy",
        ),
        "out of other shape": (
            lambda: attribution.trak_scores(k_star, k, q, out=np.empty((2, 2))),
            ValueError,
            "`out` must be a writable array of shape \\(N_test, N_train\\) = \\(4, 9\\)",
        ),
        "int masks": (
            lambda: attribution.linear_datamodeling_score(k_star, subsets.astype(int), np.ones((5, M))),
            TypeError,
            "astype\\(bool\\)",
        ),
        "two subsets": (
            lambda: attribution.linear_datamodeling_score(k_star, subsets[:2], np.ones((2, M))),
            ValueError,
            "N_subsets >= 3",
        ),
        "margins transposed": (
            lambda: attribution.linear_datamodeling_score(k_star, subsets, np.ones((M, 5))),
            ValueError,
            "`subset_margins` must have shape",
        ),
        "constant margins": (
            lambda: attribution.linear_datamodeling_score(k_star, subsets, np.ones((5, M))),
            ValueError,
            "undefined",
        ),
    }


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_inputs_get_clear_errors(name):
    call, error, message = BAD_CALLS[name]
    with pytest.raises(error, match=message):
        call()

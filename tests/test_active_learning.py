"""`nt_pntk.active_learning` against a direct re-solve of the bordered system per candidate (float64)."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from reference import entk_from_jacobians

from nt_pntk import active_learning, regression
from nt_pntk.approximations import PNTK, FullENTK
from nt_pntk.experiments import data, models

N_L, N_U, O = 5, 9, 3  # noqa: E741  (labelled inputs, pool, outputs)
FEATURES = 40
RIDGE = 0.05


def kernels(full: bool, seed: int = 0):
    """A positive definite kernel of N_L + N_U inputs from random features (the eNTK: random Jacobians)."""
    rng = np.random.default_rng(seed)
    if full:
        k = entk_from_jacobians(rng.standard_normal((N_L + N_U, O, FEATURES)) / np.sqrt(FEATURES))
    else:
        phi = rng.standard_normal((N_L + N_U, FEATURES)) / np.sqrt(FEATURES)
        k = phi @ phi.T
    return k[:N_L, :N_L], k[N_L:, :N_L], k[N_L:, N_L:], k


def problem(seed: int = 1):
    rng = np.random.default_rng(seed)
    y_l = np.eye(O)[rng.integers(0, O, N_L)] - 1 / O
    f0 = 0.3 * rng.standard_normal((N_L + N_U, O))
    return y_l, f0[:N_L], f0[N_L:]


def as_matrix(k: np.ndarray) -> np.ndarray:
    if k.ndim == 2:
        return k
    n1, n2, o, _ = k.shape
    return k.transpose(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def direct_predictions(k, rows_l, y, f0, ridge_absolute, rows_out):
    """f0(out) + K(out, L) (K_LL + λI)⁻¹ (Y − f0(L)) by numpy.linalg.solve, for the inputs rows_l / rows_out
    of the whole kernel `k` (N×N or eNTK), written out without the module's algebra."""
    full = k.ndim == 4
    m = as_matrix(k)
    idx_l = np.concatenate([np.arange(i * O, (i + 1) * O) for i in rows_l]) if full else np.asarray(rows_l)
    idx_o = (
        np.concatenate([np.arange(i * O, (i + 1) * O) for i in rows_out]) if full else np.asarray(rows_out)
    )
    a = m[np.ix_(idx_l, idx_l)] + ridge_absolute * np.eye(len(idx_l))
    residual = y - f0[rows_l]
    rhs = residual.reshape(-1, 1) if full else residual
    solved = np.linalg.solve(a, rhs)
    return f0[rows_out] + (m[np.ix_(idx_o, idx_l)] @ solved).reshape(len(rows_out), O)


def direct_scores(k, y_l, f0_l, f0_u, *, ridge, pseudo_label, criterion, candidates=range(N_U)):
    """The look-ahead scores by re-solving the (N_L + 1)-input system for every candidate and label."""
    f0 = np.concatenate([f0_l, f0_u])
    labelled, pool = list(range(N_L)), list(range(N_L, N_L + N_U))
    ridge_absolute = ridge * np.mean(np.diag(as_matrix(k[:N_L, :N_L])))
    f = direct_predictions(k, labelled, y_l, f0, ridge_absolute, pool)
    targets = np.eye(O) - 1 / O
    probabilities = np.exp(f) / np.exp(f).sum(1, keepdims=True)
    scores = np.zeros(N_U)
    for u in candidates:
        classes = [int(np.argmax(f[u]))] if pseudo_label == "predicted" else range(O)
        for c in classes:
            y_new = np.concatenate([y_l, targets[c][None]])
            f_new = direct_predictions(k, [*labelled, N_L + u], y_new, f0, ridge_absolute, pool)
            others = np.arange(N_U) != u
            if criterion == "norm":
                score = np.linalg.norm(f_new - f, axis=1)[others].sum()
            else:
                score = np.sum(np.argmax(f_new, 1)[others] != np.argmax(f, 1)[others])
            scores[u] += score if pseudo_label == "predicted" else probabilities[u, c] * score
    return scores


@pytest.mark.parametrize("full", [False, True], ids=["NxN", "eNTK"])
@pytest.mark.parametrize("pseudo_label", ["predicted", "expected"])
@pytest.mark.parametrize("criterion", ["norm", "argmax"])
def test_block_update_matches_a_direct_re_solve_per_candidate(full, pseudo_label, criterion):
    k_ll, k_ul, k_uu, k = kernels(full)
    y_l, f0_l, f0_u = problem()
    expected = direct_scores(k, y_l, f0_l, f0_u, ridge=RIDGE, pseudo_label=pseudo_label, criterion=criterion)
    options = dict(ridge=RIDGE, pseudo_label=pseudo_label, criterion=criterion)
    scores = active_learning.lookahead_scores(k_ll, k_ul, k_uu, y_l, f0_l, f0_u, **options)
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)
    assert np.ptp(expected) > 0  # the candidates are told apart
    # The same in chunks of any size (here 2: a last, shorter chunk) and one candidate at a time.
    for chunk_size in (1, 2):
        chunked = active_learning.lookahead_scores(
            k_ll, k_ul, k_uu, y_l, f0_l, f0_u, chunk_size=chunk_size, **options
        )
        np.testing.assert_allclose(chunked, expected, rtol=1e-9, atol=1e-12)


def test_the_pntk_as_kron_identity_scores_as_its_entk():
    """An N×N kernel K is used as K ⊗ I_O: the same scores as the (N, N, O, O) eNTK K ⊗ I."""
    k_ll, k_ul, k_uu, _ = kernels(full=False)
    y_l, f0_l, f0_u = problem()
    kron = [np.einsum("ab,ij->abij", block, np.eye(O)) for block in (k_ll, k_ul, k_uu)]
    for criterion in ("norm", "argmax"):
        a = active_learning.lookahead_scores(k_ll, k_ul, k_uu, y_l, f0_l, f0_u, criterion=criterion)
        b = active_learning.lookahead_scores(*kron, y_l, f0_l, f0_u, criterion=criterion)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_ridge_zero_and_a_pool_point_repeating_a_labelled_one():
    """With ridge 0, a candidate equal to a labelled input (Schur complement 0) changes nothing, and the
    others match the direct re-solve."""
    *_, k = kernels(full=False)
    phi = np.linalg.cholesky(k + 1e-12 * np.eye(len(k)))  # features of the kernel
    phi[N_L] = phi[0]  # pool input 0 repeats labelled input 0
    k = phi @ phi.T
    y_l, f0_l, f0_u = problem()
    f0_u[0] = f0_l[0]
    scores = active_learning.lookahead_scores(
        k[:N_L, :N_L], k[N_L:, :N_L], k[N_L:, N_L:], y_l, f0_l, f0_u, ridge=0.0
    )
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    others = range(1, N_U)  # (the direct solve of candidate 0 is singular)
    expected = direct_scores(
        k, y_l, f0_l, f0_u, ridge=0.0, pseudo_label="predicted", criterion="norm", candidates=others
    )
    np.testing.assert_allclose(scores[1:], expected[1:], rtol=1e-6)


def test_custom_class_targets_and_zero_outputs_are_plain_kernel_regression():
    """class_targets rows are the pseudo-labels; f0 = 0 is `regression.predict`'s kernel regression."""
    k_ll, k_ul, k_uu, _ = kernels(full=False)
    y_l = np.eye(O)[[0, 1, 2, 0, 1]]
    zeros_l, zeros_u = np.zeros((N_L, O)), np.zeros((N_U, O))
    scores = active_learning.lookahead_scores(
        k_ll, k_ul, k_uu, y_l, zeros_l, zeros_u, class_targets=np.eye(O), ridge=RIDGE
    )
    f = regression.predict(k_ll, y_l, k_ul, ridge=RIDGE)
    a = k_ll + RIDGE * np.mean(np.diag(k_ll)) * np.eye(N_L)
    c = k_uu - k_ul @ np.linalg.solve(a, k_ul.T)
    s = np.diag(c) + RIDGE * np.mean(np.diag(k_ll))
    jump = np.linalg.norm(np.eye(O)[np.argmax(f, 1)] - f, axis=1) / s
    expected = (np.abs(c).sum(0) - np.abs(np.diag(c))) * jump  # Σ_{x≠u} |c_u(x)| ‖y − f(u)‖ / s_u
    np.testing.assert_allclose(scores, expected, rtol=1e-9)


def test_select_takes_the_highest_scores_first():
    assert active_learning.select(np.array([0.5, 2.0, -1.0, 2.0, 1.0]), 3).tolist() == [1, 3, 4]
    assert active_learning.select([1.0], 1).dtype == np.int64


def test_acquire_and_run_rounds_on_a_network():
    """`acquire` computes the kernels and outputs itself: the same choice as `lookahead_scores` on the
    pNTK computed here; the eNTK route runs too; `run_rounds` labels distinct new inputs each round."""
    model = models.get_model("fc", width=16, outputs=4, depth=1)
    x, labels, _, _ = data.digits_split(16, 0, seed=3)
    labels = labels % 4
    _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
    pntk_fn = PNTK().kernel_fn(model.apply_fn)
    chosen = active_learning.acquire(pntk_fn, model.apply_fn, params, x[:6], labels[:6], x[6:], 3)
    k = np.asarray(pntk_fn(x, None, params), dtype=np.float64)
    f0 = np.asarray(model.apply_fn(params, x), dtype=np.float64)
    y_l = data.centred_one_hot(labels[:6], 4).astype(np.float64)
    scores = active_learning.lookahead_scores(k[:6, :6], k[6:, :6], k[6:, 6:], y_l, f0[:6], f0[6:])
    assert chosen.tolist() == np.argsort(-scores, kind="stable")[:3].tolist()
    entk_fn = FullENTK().kernel_fn(model.apply_fn)
    assert active_learning.acquire(entk_fn, model.apply_fn, params, x[:6], labels[:6], x[6:], 2).shape == (2,)

    def train_fn(p, x_l, y_l):  # a stand-in for training: parameters that depend on the labelled set
        return jax.tree_util.tree_map(lambda w: w * (1 + 0.01 * len(x_l)), p)

    history = active_learning.run_rounds(
        pntk_fn, model.apply_fn, params, x, labels, [0, 1], rounds=2, per_round=3, train_fn=train_fn
    )
    assert [len(h) for h in history] == [2, 5, 8]
    assert len(np.unique(history[-1])) == 8 and history[-1][:2].tolist() == [0, 1]


def _call(**changes):
    k_ll, k_ul, k_uu, _ = kernels(full=False)
    y_l, f0_l, f0_u = problem()
    arguments = dict(k_ll=k_ll, k_ul=k_ul, k_uu=k_uu, y_l=y_l, f0_l=f0_l, f0_u=f0_u)
    options = {name: changes.pop(name) for name in list(changes) if name not in arguments}
    arguments.update(changes)
    return active_learning.lookahead_scores(*arguments.values(), **options)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (dict(pseudo_label="sampled"), ValueError, "`pseudo_label` must be one of ['predicted', 'expected']"),
        (dict(criterion="entropy"), ValueError, "`criterion` must be one of ['norm', 'argmax']"),
        (dict(ridge=-1.0), ValueError, "`ridge` must be >= 0"),
        (dict(ridge="1e-3"), TypeError, "`ridge` must be a real number"),
        (dict(chunk_size=0), ValueError, "`chunk_size` must be an int >= 1"),
        (dict(chunk_size=2.0), TypeError, "`chunk_size` must be an int"),
        (
            dict(k_uu=np.eye(N_U - 1)),
            ValueError,
            f"`k_uu` must be the pool's kernel with itself, of shape ({N_U}, {N_U})",
        ),
        (dict(k_ul=np.ones((N_U, N_L + 1))), ValueError, "`k_test_train` must have shape"),
        (
            dict(f0_u=np.zeros((N_U, O + 1))),
            ValueError,
            f"`f0_u` must hold the network's outputs, of shape ({N_U}, {O})",
        ),
        (
            dict(f0_l=np.zeros(N_L)),
            ValueError,
            f"`f0_l` must hold the network's outputs, of shape ({N_L}, {O})",
        ),
        (dict(y_l=np.zeros((N_L + 1, O))), ValueError, "`y_train` must have shape"),
        (dict(class_targets=np.eye(O + 1)), ValueError, f"`class_targets` must be ({O}, {O})"),
        (dict(k_ll=np.triu(np.ones((N_L, N_L)))), ValueError, "`k_train_train` must be symmetric"),
        (
            dict(k_ll=-np.eye(N_L), ridge=0.0),
            ValueError,
            "`k_ll` plus the ridge (ridge=0.0 × mean diagonal) must be positive definite",
        ),
        (dict(f0_u=np.full((N_U, O), np.nan)), ValueError, "`f0_u` must be finite"),
        (dict(k_uu=np.full((N_U, N_U), "a")), TypeError, "`k_uu` must be an array of real numbers"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(changes, error, message):
    with pytest.raises(error, match=re.escape(message)):
        _call(**changes)


def test_bad_selections_and_rounds_are_refused():
    with pytest.raises(
        ValueError, match=re.escape("`n` must be at least 1 and at most 2 (the number of scores)")
    ):
        active_learning.select([1.0, 2.0], 3)
    with pytest.raises(ValueError, match=re.escape("`scores` must be a 1-D array")):
        active_learning.select(np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match=re.escape("`scores` must be finite")):
        active_learning.select([1.0, np.nan], 1)
    model = models.get_model("fc", width=8, outputs=3, depth=1)
    x = np.zeros((6, 8, 8, 1), np.float32)
    _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
    fn = PNTK().kernel_fn(model.apply_fn)
    with pytest.raises(ValueError, match=re.escape("`labels` must be 2 integer classes in [0, 3)")):
        active_learning.acquire(fn, model.apply_fn, params, x[:2], np.array([0, 3]), x[2:], 1)
    with pytest.raises(ValueError, match=re.escape("`initial` must be distinct indices into the pool of 6")):
        active_learning.run_rounds(
            fn, model.apply_fn, params, x, np.zeros(6, int), [0, 0], rounds=1, per_round=1
        )
    with pytest.raises(ValueError, match=re.escape("must label at most the 4 inputs left in the pool")):
        active_learning.run_rounds(
            fn, model.apply_fn, params, x, np.zeros(6, int), [0, 1], rounds=3, per_round=2
        )

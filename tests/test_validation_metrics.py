"""The validation's block-by-block kernels and error sums against a direct float64 computation.

The reference is `jax.jacobian` written out by hand (tests/reference.py): the eNTK J Jᵀ of
all N inputs at once, and each error computed on the NO×NO matrices with `np.kron`.
"""

import jax
import neural_tangents as nt
import numpy as np
import pytest
import reference

from nt_pntk._src.experiments.validation import metrics
from nt_pntk._src.kernels import pntk as _pntk

N, OUT = 7, 3


@pytest.fixture
def fc_problem(float64):
    """A small FC net in float64: its kernel functions, parameters, 7 inputs and the reference eNTK."""
    p = reference.problem("fc", out=OUT, n1=N, n2=2, seed=3)
    entk_fn = jax.jit(nt.empirical_ntk_fn(p.f, trace_axes=(), vmap_axes=0, implementation=3))
    pntk_fn = jax.jit(_pntk.empirical_pntk_fn(p.f, vmap_axes=0, implementation=3))
    full = reference.full_entk_jacobian(p.f, p.x1, None, p.params)  # (N, O, N, O)
    return entk_fn, pntk_fn, p.params, p.x1, full.transpose(0, 2, 1, 3)


@pytest.mark.parametrize("pntk_from_entk", [False, True])  # NT's pNTK function, or summed from Θ's blocks
@pytest.mark.parametrize("block", [1, 3, N])  # blocks of one input, uneven blocks, one block
def test_blocked_kernels_and_errors_equal_the_direct_computation(fc_problem, block, pntk_from_entk):
    entk_fn, pntk_fn, params, x, reference_entk = fc_problem
    theta_inf = np.cov(np.random.default_rng(0).standard_normal((N, 3 * N)))  # any symmetric N×N kernel
    entk, pntk, sums = metrics.kernels_by_blocks(
        entk_fn, None if pntk_from_entk else pntk_fn, x, params, block=block, theta_inf=theta_inf
    )

    np.testing.assert_allclose(entk, reference_entk, rtol=1e-10, atol=1e-10 * np.abs(reference_entk).max())
    reference_pntk = reference.kernel_from_entk(reference_entk, "pntk")
    np.testing.assert_allclose(pntk, reference_pntk, rtol=1e-10, atol=1e-10 * np.abs(reference_pntk).max())

    kernels = {
        "pntk": reference_pntk,
        "single": reference.kernel_from_entk(reference_entk, "single_logit", logit=0),
        "trace": reference.kernel_from_entk(reference_entk, "trace"),
        "inf": theta_inf,
    }
    for name, k in kernels.items():
        assert sums.relative_error(name) == pytest.approx(
            reference.kronecker_error(reference_entk, k), rel=1e-9
        )
    off = ~np.eye(OUT, dtype=bool)
    direct_mass = np.sum(reference_entk[:, :, off] ** 2) / np.sum(reference_entk**2)
    assert (sums.entk - sums.diagonal_blocks) / sums.entk == pytest.approx(direct_mass, rel=1e-9)
    assert sums.finite
    # The errors are not all alike (the test would not see a kernel mixed up with another).
    errors = [sums.relative_error(name) for name in kernels]
    assert len({round(e, 6) for e in errors}) == len(errors)


def test_metrics_row_uses_the_sums(fc_problem):
    """`kernel_metrics`'s errors are those of the direct computation; ‖Θ − Θ∞ ⊗ I‖ is relative to Θ∞ ⊗ I."""
    entk_fn, pntk_fn, params, x, reference_entk = fc_problem
    theta_inf = reference.kernel_from_entk(reference_entk, "pntk") * 1.3  # a stand-in Θ∞, off by 30%
    entk, pntk, sums = metrics.kernels_by_blocks(entk_fn, pntk_fn, x, params, block=2, theta_inf=theta_inf)
    labels = np.arange(N) % 10
    row = metrics.kernel_metrics(entk, pntk, sums, theta_inf, labels[:4], labels[4:], 4, OUT, 1e-2)
    assert row["err_pntk"] == pytest.approx(reference.kronecker_error(reference_entk, pntk), rel=1e-9)
    inf_kron = np.kron(theta_inf, np.eye(OUT))
    matrix = reference.entk_as_matrix(reference_entk)
    direct = np.linalg.norm(matrix - inf_kron) / np.linalg.norm(inf_kron)
    assert row["err_entk_inf"] == pytest.approx(direct, rel=1e-9)
    assert row["err_pntk_inf"] == pytest.approx(0.3 / 1.3, rel=1e-9)
    assert set(row) == set(metrics.EXPECTED_SLOPES)


def test_kernel_evaluations_never_see_more_than_two_blocks(fc_problem):
    """Memory is bounded by the block: no evaluation gets more than `block` inputs on either side."""
    entk_fn, pntk_fn, params, x, _ = fc_problem
    seen = []

    def recording(fn):
        def wrapped(x1, x2, p):
            seen.append((len(x1), None if x2 is None else len(x2)))
            return fn(x1, x2, p)

        return wrapped

    metrics.kernels_by_blocks(recording(entk_fn), recording(pntk_fn), x, params, block=3)
    assert seen and all(a <= 3 and (b is None or b <= 3) for a, b in seen)
    # Upper-triangle blocks only: 3 row blocks give 3 diagonal and 3 off-diagonal evaluations per kernel.
    assert len(seen) == 2 * 6


def test_non_finite_blocks_are_flagged():
    sums = metrics.FrobeniusSums()
    entk = np.ones((2, 2, 3, 3))
    sums.add(entk, {"pntk": np.ones((2, 2))})
    assert sums.finite
    entk[0, 1, 2, 2] = np.nan
    sums.add(entk, {"pntk": np.ones((2, 2))})
    assert not sums.finite

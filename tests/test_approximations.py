"""The approximations of `nt_pntk.approximations` against their definitions from the full eNTK.

The reference eNTK is J(x1) J(x2)ᵀ from ``jax.jacobian`` in float64 (`reference.full_entk_jacobian`),
independent of NT, which computes the approximations (and is the full eNTK itself for ``'entk'``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from reference import RTOL, assert_close, full_entk_jacobian, kernel, kernel_from_entk, problem

from nt_pntk import approximations
from nt_pntk._src.kernels import approximations as by_name  # the deprecated lookups by name

O = 4  # noqa: E741  (the number of outputs, as in the paper)
M = 3  # projection directions
SEED = 7  # projection seed
LOGIT = 2  # single_logit's k


def entk_blocks(p, x2=None) -> np.ndarray:
    """The full eNTK of problem `p` from `jax.jacobian`, as float64 (N1, N2, O, O) blocks Θ_oo'(x_a, x_b)."""
    return full_entk_jacobian(p.f, p.x1, x2, p.params).transpose(0, 2, 1, 3)


def projection_definition(e: np.ndarray, m: int, seed: int) -> np.ndarray:
    """(1/m) Σ_j w_jᵀ Θ w_j with the directions the kernel uses."""
    w = approximations.projection_directions(m, e.shape[-1], seed=seed)
    return kernel_from_entk(e, "projection", directions=w)


# (name, options, the definition as a function of the (N1, N2, O, O) eNTK).
DEFINITIONS = [
    ("entk", {}, lambda e: e),
    ("pntk", {}, lambda e: kernel_from_entk(e, "pntk")),
    ("trace", {}, lambda e: kernel_from_entk(e, "trace")),
    ("single_logit", {}, lambda e: kernel_from_entk(e, "single_logit")),  # the default logit, 0
    ("single_logit", {"logit": LOGIT}, lambda e: kernel_from_entk(e, "single_logit", logit=LOGIT)),
    ("single_logit", {"logit": -1}, lambda e: kernel_from_entk(e, "single_logit", logit=-1)),
    ("projection", {"m": M, "seed": SEED}, lambda e: projection_definition(e, M, SEED)),
]


@pytest.mark.parametrize(
    ("name", "options", "definition"),
    DEFINITIONS,
    ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o, _ in DEFINITIONS],
)
@pytest.mark.usefixtures("float64")  # to 1e-10: a wrong entry or layout cannot hide in round-off
def test_matches_its_definition_from_the_full_entk(name, options, definition):
    p = problem("fc", out=O)
    kernel_fn = by_name.approximation_fn(name, p.f, vmap_axes=0, **options)
    assert_close(kernel(kernel_fn, p.x1, p.x2, p.params), definition(entk_blocks(p, p.x2)))


@pytest.mark.parametrize("name", ["single_logit", "projection"])
def test_single_axis_kernels_keep_other_axes(name):
    # An (N, T, O) output with the time axis T kept diagonal: one kernel per t.
    p = problem("seq", out=O)
    options = {"logit": LOGIT} if name == "single_logit" else {"m": M, "seed": SEED}
    kernel_fn = by_name.approximation_fn(name, p.f, diagonal_axes=(1,), **options)
    full = full_entk_jacobian(p.f, p.x1, p.x2, p.params)  # (N1, T, O, N2, T, O)
    e = np.einsum("atobtp->abtop", full)  # (N1, N2, T, O, O): the diagonal in t
    if name == "single_logit":
        expected = e[..., LOGIT, LOGIT]
    else:
        w = approximations.projection_directions(M, O, seed=SEED)
        expected = np.einsum("jo,abtop,jp->abt", w, e, w) / M
    assert_close(kernel(kernel_fn, p.x1, p.x2, p.params), expected)


def test_projection_is_unbiased_for_the_trace():
    # For w ~ N(0, I_O/O) and an O×O block A: E[wᵀAw] = tr(A)/O, Var[wᵀAw] = 2 tr(A_s²)/O², with
    # A_s = (A + Aᵀ)/2. The mean of m draws is within Z standard deviations sqrt(2 tr(A_s²)/m)/O of
    # tr(A)/O but with probability ~ 6e-7 per entry (normal tail at Z = 5; m is large enough for the
    # central limit theorem). The draws are seeded, so this is deterministic.
    m, z = 4000, 5.0
    p = problem("fc", out=O)
    e = entk_blocks(p, p.x2)
    kernel_fn = by_name.approximation_fn("projection", p.f, vmap_axes=0, m=m, seed=SEED)
    projected = np.asarray(kernel(kernel_fn, p.x1, p.x2, p.params), np.float64)
    trace = kernel_from_entk(e, "trace")
    symmetric = (e + e.swapaxes(2, 3)) / 2
    std = np.sqrt(2 * np.einsum("abop,abpo->ab", symmetric, symmetric) / m) / O
    assert np.all(np.abs(projected - trace) <= z * std)
    # The band is informative: narrower than the gap between the trace and a single direction's kernel.
    one = projection_definition(e, 1, SEED)
    assert np.max(z * std) < np.max(np.abs(one - trace))


def _wide_intermediates(jaxpr, size: int) -> list[tuple[int, ...]]:
    """Shapes of the values in `jaxpr` (and its sub-jaxprs) with two or more axes of `size`."""
    found = []
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if sum(d == size for d in shape) >= 2:
                found.append(tuple(shape))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _wide_intermediates(inner, size)
    return found


@pytest.mark.parametrize(
    ("name", "options", "builds_oxo"),
    [
        ("entk", {}, True),  # the control: the eNTK has O×O blocks
        ("pntk", {}, False),
        ("single_logit", {}, False),
        ("projection", {"m": M}, False),
    ],
)
def test_no_o_by_o_intermediates(name, options, builds_oxo):
    # O chosen unlike every other size in the problem (N1=3, N2=2, m=3, width 8, 36 input pixels),
    # so an array with two axes of size O is an O×O block (of the eNTK or of O Jacobian rows per output).
    out = 7
    p = problem("fc", out=out)
    kernel_fn = by_name.approximation_fn(name, p.f, vmap_axes=0, **options)
    jaxpr = jax.make_jaxpr(kernel_fn)(p.x1, p.x2, p.params).jaxpr
    assert bool(_wide_intermediates(jaxpr, out)) == builds_oxo


def test_jacobian_rows():
    rows = {n: by_name.jacobian_rows(n, O) for n in by_name.APPROXIMATION_NAMES}
    assert rows == {"entk": O, "pntk": 1, "trace": O, "single_logit": 1, "projection": 1}
    assert by_name.jacobian_rows("projection", O, m=M) == M


def test_projection_directions_are_seeded_and_scaled():
    w = approximations.projection_directions(M, O, seed=SEED)
    np.testing.assert_array_equal(w, approximations.projection_directions(M, O, seed=SEED))
    assert not np.array_equal(w, approximations.projection_directions(M, O, seed=SEED + 1))
    expected = np.random.default_rng(SEED).standard_normal((M, O)) / np.sqrt(O)
    np.testing.assert_array_equal(w, expected)


def test_relative_error_matches_the_kronecker_product():
    rng = np.random.default_rng(0)
    n1, n2 = 3, 2
    e = rng.standard_normal((n1, n2, O, O))
    k = rng.standard_normal((n1, n2))
    # np.kron(K, I) has (example, output) rows, as the (N1, N2, O, O) -> (N1·O, N2·O) matrix of e.
    e_matrix = e.transpose(0, 2, 1, 3).reshape(n1 * O, n2 * O)
    expected = np.linalg.norm(e_matrix - np.kron(k, np.eye(O))) / np.linalg.norm(e_matrix)
    tol = RTOL[np.dtype("float64")]
    np.testing.assert_allclose(approximations.relative_error(e, k), expected, rtol=tol)
    assert approximations.relative_error(e, e) == 0.0


# --- Bad arguments. ---


def test_unknown_name_lists_the_names():
    names = r"\('entk', 'pntk', 'trace', 'single_logit', 'projection'\); got 'ntk'"
    with pytest.raises(ValueError, match=rf"`name` must be one of {names}"):
        by_name.approximation_fn("ntk", problem("fc").f)


@pytest.mark.parametrize(
    ("name", "options", "error", "match"),
    [
        ("projection", {"m": 0}, ValueError, r"`m` must be an int >= 1; got m=0\."),
        ("projection", {"m": -2}, ValueError, r"`m` must be an int >= 1; got m=-2\."),
        ("projection", {"m": 1.5}, TypeError, r"`m` must be an int; got 1\.5 of type float\."),
        ("projection", {"m": True}, TypeError, r"`m` must be an int; got True of type bool\."),
        ("projection", {"seed": -1}, ValueError, r"`seed` must be an int in \[0, 2\*\*32\).*seed=-1\."),
        ("projection", {"seed": 0.0}, TypeError, r"`seed` must be an int; got 0\.0 of type float\."),
        ("single_logit", {"logit": "0"}, TypeError, r"`logit` must be an int; got '0' of type str\."),
        ("pntk", {"m": 2}, TypeError, r"approximation 'pntk' takes no options; got \['m'\]"),
        ("projection", {"logit": 1}, TypeError, r"'projection' takes only \['m', 'seed'\]; got \['logit'\]"),
    ],
)
def test_bad_options(name, options, error, match):
    with pytest.raises(error, match=match):
        by_name.approximation_fn(name, problem("fc").f, **options)


@pytest.mark.parametrize("name", ["single_logit", "projection"])
@pytest.mark.parametrize("trace_axes", [(), (1, 2)])
def test_single_axis_kernels_need_one_trace_axis(name, trace_axes):
    with pytest.raises(ValueError, match=r"`trace_axes` must name exactly one output axis, the logit axis"):
        by_name.approximation_fn(name, problem("seq").f, trace_axes=trace_axes)


@pytest.mark.parametrize("logit", [O, -O - 1])
def test_logit_out_of_range(logit):
    p = problem("fc", out=O)
    kernel_fn = by_name.approximation_fn("single_logit", p.f, logit=logit)
    with pytest.raises(ValueError, match=rf"use 0 <= logit < {O} .*; got logit={logit}"):
        jax.eval_shape(kernel_fn, p.x1, p.x2, p.params)


@pytest.mark.parametrize("name", ["trace", "entk", "single_logit", "projection"])
def test_trace_axis_out_of_range(name):
    p = problem("fc", out=O)
    kernel_fn = by_name.approximation_fn(name, p.f, trace_axes=(2,))
    with pytest.raises(ValueError, match=r"`trace_axes` has axis 2, out of range .* rank 2"):
        jax.eval_shape(kernel_fn, p.x1, p.x2, p.params)


def test_mismatched_inputs():
    p = problem("fc", out=O)
    kernel_fn = by_name.approximation_fn("projection", p.f, m=M)
    with pytest.raises(ValueError, match=r"`x1` and `x2` must agree in every axis but the batch axis"):
        kernel_fn(p.x1, p.x2[:, :-1], p.params)


@pytest.mark.parametrize(
    ("entk_shape", "kernel_shape", "match"),
    [
        ((3, 2, O), (3, 2), r"`entk` must be an \(N1, N2, O, O\) eNTK"),
        ((3, 2, O, O), (2, 3), r"`kernel` must have shape \(3, 2\) \(used as K ⊗ I_O\)"),
    ],
)
def test_relative_error_shapes(entk_shape, kernel_shape, match):
    with pytest.raises(ValueError, match=match):
        approximations.relative_error(np.ones(entk_shape), np.ones(kernel_shape))


# --- Gram features: what `kernel_matrix` reuses across tiles. ---

GRAM_APPROXIMATIONS = [
    (approximations.PNTK(), "pntk", {}),
    (approximations.Trace(), "trace", {}),
    (approximations.SingleLogit(LOGIT), "single_logit", {"logit": LOGIT}),
    (approximations.Projection(m=M, seed=SEED), "projection", {"m": M, "seed": SEED}),
]


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(
    ("approximation", "name", "options"),
    GRAM_APPROXIMATIONS,
    ids=[repr(a) for a, _, _ in GRAM_APPROXIMATIONS],
)
def test_gram_features_give_the_definition(approximation, name, options):
    """Σ_l F_l(x1) F_l(x2)ᵀ is the approximation's kernel, from `jacobian_rows(O)` rows of P numbers each."""
    p = problem("fc", out=O)
    features_fn = jax.jit(approximation.kernel_fn(p.f, vmap_axes=0).features_fn())
    f1, f2 = features_fn(p.x1, p.params), features_fn(p.x2, p.params)
    gram = sum(np.asarray(a, np.float64) @ np.asarray(b, np.float64).T for a, b in zip(f1, f2, strict=True))
    definition = dict((n, d) for n, o, d in DEFINITIONS if n == name and o == options)[name]
    assert_close(gram, definition(entk_blocks(p, p.x2)))
    parameters = sum(np.size(leaf) for leaf in jax.tree.leaves(p.params))
    assert sum(a.shape[1] for a in f1) == approximation.jacobian_rows(O) * parameters
    assert all(a.shape[0] == len(p.x1) for a in f1)

"""Wrong arguments fail early, with the argument's name and a fix in the message."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from reference import assert_close, full_entk_jacobian, kernel, pntk_from_full, problem

import nt_pntk
from nt_pntk.experiments import data

FACTORIES = [nt_pntk.empirical_pntk_fn, nt_pntk.empirical_kernel_fn]
# `empirical_pntk_fn`'s kernel, and each `get` of `empirical_kernel_fn`.
KINDS = ["pntk_fn", *nt_pntk.KERNEL_NAMES]


def compute(kind, p, x2, **options):
    if kind == "pntk_fn":
        return nt_pntk.empirical_pntk_fn(p.f, **options)(p.x1, x2, p.params)
    return nt_pntk.empirical_kernel_fn(p.f, **options)(p.x1, x2, kind, p.params)


# An int or a name that is not an implementation is a wrong value; a bool, float or None a wrong type.
@pytest.mark.parametrize(
    ("implementation", "error"),
    [
        (7, ValueError),
        (-1, ValueError),
        ("fast", ValueError),
        (True, TypeError),
        (1.0, TypeError),
        (None, TypeError),
    ],
    ids=repr,
)
@pytest.mark.parametrize("factory", FACTORIES)
def test_unknown_implementation(factory, implementation, error):
    message = (
        r"`implementation` must be one of NtkImplementation\.AUTO \(0\), .*; "
        rf"got {re.escape(repr(implementation))}\. JACOBIAN_CONTRACTION \(1\) is the default"
    )
    with pytest.raises(error, match=message):
        factory(problem("fc").f, implementation=implementation)


def test_numpy_ints_are_accepted():
    p = problem("fc")
    numpy_args = nt_pntk.empirical_pntk_fn(p.f, trace_axes=np.int64(-1), implementation=np.int64(1))
    expected = pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x2, p.params), (-1,))
    assert_close(kernel(numpy_args, p.x1, p.x2, p.params), expected)


# For the fc network's (N, O) output, of rank 2.
BAD_AXES = [
    (dict(trace_axes=(2,)), r"`trace_axes` has axis 2, out of range .* rank 2"),
    (dict(trace_axes=(-3,)), r"`trace_axes` has axis -3, out of range .* rank 2"),
    (dict(diagonal_axes=(2,)), r"`diagonal_axes` has axis 2, out of range .* rank 2"),
    (dict(trace_axes=(-1, 1)), r"`trace_axes` names an axis twice"),
    (dict(trace_axes=(), diagonal_axes=(0, -2)), r"`diagonal_axes` names an axis twice"),
    (dict(trace_axes=(-1,), diagonal_axes=(1,)), r"`trace_axes` \(-1,\) and `diagonal_axes` \(1,\) overlap"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("axes", "message"), [pytest.param(*case, id=str(case[0])) for case in BAD_AXES])
def test_bad_axes(axes, message, kind):
    with pytest.raises(ValueError, match=message):
        compute(kind, problem("fc"), None, **axes)


# Ignored for the implementations that reach NT 0.6.5's own deprecated calls (see test_pntk.py).
@pytest.mark.filterwarnings("ignore:size requires ndarray:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:linear_util.wrap_init is missing a DebugInfo:DeprecationWarning")
@pytest.mark.parametrize("implementation", range(4))
def test_bad_axes_every_implementation(implementation):
    with pytest.raises(ValueError, match="`trace_axes` names an axis twice"):
        compute("pntk_fn", problem("fc"), None, trace_axes=(1, -1), implementation=implementation)


NON_INT_AXES = [
    dict(trace_axes=(1.5,)),
    dict(trace_axes="-1"),
    dict(trace_axes=None),
    dict(trace_axes=(True,)),
    dict(diagonal_axes=(0.0,)),
]


@pytest.mark.parametrize("axes", NON_INT_AXES, ids=str)
@pytest.mark.parametrize("factory", [*FACTORIES, nt_pntk.summed_logits_fn])
def test_non_int_axes(factory, axes):
    name = next(iter(axes))
    with pytest.raises(TypeError, match=f"`{name}` must be an int or a tuple of ints"):
        factory(problem("fc").f, **axes)


@pytest.mark.parametrize("kind", KINDS)
def test_x2_other_example_shape(kind):
    p = problem("fc")
    x2 = p.x2[:, :-1]  # 5×6 images instead of 6×6
    with pytest.raises(ValueError, match=r"`x1` and `x2` must agree in every axis but the batch axis 0"):
        compute(kind, p, x2)


@pytest.mark.parametrize("kind", KINDS)
def test_x2_other_structure(kind):
    p = problem("fc")
    with pytest.raises(ValueError, match=r"`x1` and `x2` must have the same structure"):
        compute(kind, p, {"x": p.x2})


@pytest.mark.parametrize("kind", KINDS)
def test_diagonal_axis_of_different_sizes(kind):
    """diagonal_axes=(0,) pairs example i of x1 with example i of x2: NT itself fails obscurely here."""
    p = problem("fc")
    assert len(p.x1) != len(p.x2)
    with pytest.raises(ValueError, match=r"`diagonal_axes` has output axis 0, where f\(x1\) and f\(x2\)"):
        compute(kind, p, p.x2, trace_axes=(-1,), diagonal_axes=(0,))


@pytest.mark.parametrize("get", ["ntkk", "NTK", ("ntk", "foo"), (), ("ntk", "ntk"), 5])
def test_unknown_get(get):
    p = problem("fc")
    with pytest.raises(ValueError, match=r"`get` must be one of \('nngp', 'ntk', 'pntk'\)"):
        nt_pntk.empirical_kernel_fn(p.f)(p.x1, None, get, p.params)


def test_errors_under_jit():
    p = problem("fc")
    pntk_fn = jax.jit(nt_pntk.empirical_pntk_fn(p.f, trace_axes=(-1, 1)))
    with pytest.raises(ValueError, match="`trace_axes` names an axis twice"):
        pntk_fn(p.x1, None, p.params)


# --- `centred_one_hot`: labels outside [0, classes) no longer index from the end. ---


def test_one_hot_is_centred():
    expected = np.array([[-0.25, -0.25, 0.75, -0.25], [0.75, -0.25, -0.25, -0.25]], np.float32)
    np.testing.assert_array_equal(data.centred_one_hot(np.array([2, 0]), 4), expected)
    # Whole-number floats (labels read from a float file) are the same labels.
    np.testing.assert_array_equal(data.centred_one_hot(np.array([2.0, 0.0]), 4), expected)


@pytest.mark.parametrize(
    ("labels", "classes", "message"),
    [
        ([-1], 10, r"`labels` must be in \[0, 10\) for classes=10; got -1 \(1 label outside, of 1\)"),
        ([3, 10, 12], 10, r"`labels` must be in \[0, 10\) for classes=10; got 10 \(2 labels outside, of 3\)"),
        ([0, 1.5], 3, r"`labels` must be integer classes in \[0, 3\); got (np\.float64\()?1\.5"),
        ([0, np.nan], 3, r"`labels` must be integer classes in \[0, 3\); got (np\.float64\()?nan"),
        (["a", "b"], 3, r"`labels` must be integer classes in \[0, 3\); got (np\.str_\()?'a'"),
        ([True, False], 3, r"`labels` must be integer classes in \[0, 3\); got (np\.)?True"),
    ],
)
def test_one_hot_bad_labels(labels, classes, message):
    with pytest.raises(ValueError, match=message):
        data.centred_one_hot(np.array(labels), classes)


@pytest.mark.parametrize(
    ("classes", "error", "message"),
    [
        (0, ValueError, r"`classes` must be an int >= 1; got classes=0\."),
        (-3, ValueError, r"`classes` must be an int >= 1; got classes=-3\."),
        (2.0, TypeError, r"`classes` must be an int; got 2\.0 of type float\."),
        (True, TypeError, r"`classes` must be an int; got True of type bool\."),
    ],
    ids=repr,
)
def test_one_hot_bad_classes(classes, error, message):
    with pytest.raises(error, match=message):
        data.centred_one_hot(np.array([0]), classes)

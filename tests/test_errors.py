"""Wrong arguments fail early, with the argument's name and a fix in the message."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from reference import assert_close, full_entk_jacobian, kernel, pntk_from_full, problem

import nt_pntk
from nt_pntk._src.kernels.pntk import KERNEL_NAMES
from nt_pntk.experiments import data

FACTORIES = [nt_pntk.empirical_pntk_fn, nt_pntk.empirical_kernel_fn]
# `empirical_pntk_fn`'s kernel, and each `get` of `empirical_kernel_fn`.
KINDS = ["pntk_fn", *KERNEL_NAMES]


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


# --- The zoo's builders check every size; one seed rule; a network without parameters. ---


@pytest.mark.parametrize(
    ("name", "arguments", "error", "message"),
    [
        # `--depth -1` used to build the depth-0 network (range(-1) is empty): a silently other network.
        (
            "fc",
            {"depth": -1},
            ValueError,
            "`depth` must be an int in [1, 1,000] (hidden layers); got depth=-1.",
        ),
        (
            "cnn",
            {"depth": 0},
            ValueError,
            "`depth` must be an int in [1, 1,000] (convolution layers); got depth=0.",
        ),
        # 100,000 layers took a minute to build and would never compile: refused before building.
        ("fc", {"depth": 100_000}, ValueError, "got depth=100000."),
        ("fc", {"depth": 2.0}, TypeError, "`depth` must be an int; got 2.0 of type float."),
        ("fc", {"width": 0}, ValueError, "`width` must be an int in [1, 2,147,483,647]"),
        ("fc", {"width": 10**10}, ValueError, "got width=10000000000."),
        ("cnn", {"outputs": 0}, ValueError, "`outputs` must be an int in [1, 2,147,483,647]"),
        ("cnn", {"readout_width": 0}, ValueError, "`readout_width` must be an int in [1, 2,147,483,647]"),
        ("wide_resnet", {"groups": 0}, ValueError, "`groups` must be an int in [1, 1,000]"),
        (
            "wide_resnet",
            {"blocks_per_group": -3},
            ValueError,
            "`blocks_per_group` must be an int in [1, 1,000]",
        ),
        ("wide_resnet", {"blocks_per_group": 40, "groups": 30}, ValueError, "40 * 30 = 1,200"),
        # Channels double per group: 8 * 2**39 would overflow the sizes of XLA's arrays.
        ("wide_resnet", {"groups": 40}, ValueError, "`groups`=40 makes a layer 4,398,046,511,104 channels"),
        ("resnet", {"depth": 7}, ValueError, "`depth` must be one of [10, 18, 34, 50, 101, 152]; got 7."),
        (
            "resnet",
            {"width": 2**27, "depth": 50},
            ValueError,
            "`width`=134217728 makes a layer 4,294,967,296",
        ),
        ("fc", {"groups": 2}, TypeError, "`groups` is not an option of the 'fc' builder"),
    ],
)
def test_zoo_builders_check_every_size(name, arguments, error, message):
    from nt_pntk.experiments import models

    arguments = {"width": 8, **arguments}
    with pytest.raises(error) as raised:
        models.get_model(name, **arguments)
    assert message in str(raised.value)
    if "not an option" not in message:  # the builder itself checks: called directly, the same error
        with pytest.raises(error) as direct:
            models.MODELS[name](**arguments)
        assert str(direct.value) == str(raised.value)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("fc", {"depth": 2, "readout_width": 5}),
        ("cnn", {"depth": 1}),
        ("wide_resnet", {}),
        ("resnet", {"depth": 50}),
    ],
)
def test_parameter_bytes_are_those_init_allocates(name, options):
    from nt_pntk.experiments import models

    model = models.get_model(name, width=4, outputs=3, **options)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    allocated = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(params))
    assert models.parameter_bytes(model.init_fn, (-1, 8, 8, 1)) == allocated > 0


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            -1,
            ValueError,
            "`seed` must be an int in [0, 2**32) (a seed of JAX's and NumPy's random generators",
        ),
        # JAX without x64 keeps the low 32 bits: PRNGKey(2**32 + 1) is PRNGKey(1).
        (2**32 + 1, ValueError, "got seed=4294967297."),
        (2**70, ValueError, f"got seed={2**70}."),
        (True, TypeError, "`seed` must be an int; got True"),
        (1.5, TypeError, "`seed` must be an int; got 1.5"),
    ],
)
def test_one_seed_rule_everywhere(value, error, message):
    from nt_pntk._src import checks
    from nt_pntk.approximations import Projection, projection_directions

    for use in (
        lambda: checks.seed("seed", value),
        lambda: data.digits_split(4, 2, seed=value),
        lambda: projection_directions(2, 3, seed=value),
        lambda: Projection(m=2, seed=value),
    ):
        with pytest.raises(error) as raised:
            use()
        assert message in str(raised.value)
    assert checks.seed("seed", 0) == 0 and checks.seed("seed", np.uint32(2**32 - 1)) == 2**32 - 1


def test_parameters_without_arrays_are_named():
    from nt_pntk.tiled import kernel_matrix

    fn = nt_pntk.empirical_pntk_fn(lambda params, x: jax.numpy.tanh(x), vmap_axes=0)
    x = np.ones((3, 2), np.float32)
    # It used to be NT's "Too few leaves for PyTreeDef" or NumPy's "at least one array or dtype is required".
    for params in ({}, [(), ()], None):
        with pytest.raises(
            ValueError, match=r"^`params` must hold at least one array; got .*, which holds none"
        ):
            fn(x, None, params)
        with pytest.raises(
            ValueError, match=r"^`params` must hold at least one array; got .*, which holds none"
        ):
            kernel_matrix(fn, x, None, params, progress=False)

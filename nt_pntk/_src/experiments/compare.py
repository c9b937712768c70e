"""The N×N approximations of the eNTK side by side: the measurements of ``nt-pntk compare``.

For a network at initialization (a zoo model, or the user's ``MODULE:FUNCTION``)
on N = n_train + n_test digits images, each approximation K of
`nt_pntk.approximations` is computed on all N inputs and compared with the full
eNTK Θ (N, N, O, O): relative error of K ⊗ I_O, kernel regression, spectra, time,
compile time, XLA's temp bytes and (optionally) the peak RSS of a fresh process
computing that kernel alone. `nt_pntk.cli.compare` parses the options, calls
`Setup.create` and `compare`, and prints the table.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nt_pntk._src import checks, deprecations, measure, numerics
from nt_pntk._src.experiments import fresh_process
from nt_pntk._src.user_code import load_user_function, user_code_error

APPROXIMATIONS = ("pntk", "trace", "single_logit", "projection")
ZOO_WIDTHS = {"fc": 64, "cnn": 32}  # default width of the zoo models
DIGITS = 1797
MIB = 2.0**20
COLUMNS = (
    "approximation",
    "jac_rows",
    "rel_err",
    "test_acc",
    "pred_gap",
    "err_lmax",
    "err_cond",
    "err_topk",
    "time_s",
    "runs",
    "compile_s",
    "temp_mib",
    "rss_mib",
)


def _same(name: str) -> str:
    return name


@dataclasses.dataclass(frozen=True)
class Setup:
    """What `compare` measures: the model, data, kernels and their options (JSON-able)."""

    model: str
    width: int | None
    outputs: int
    n_train: int
    n_test: int
    specs: tuple[tuple[str, dict[str, int]], ...] = ()  # (approximation, options), the eNTK first
    ridge: float = 1e-3
    top_k: int = 1
    implementation: int = 1
    vmap_axes: int | None = 0
    repeats: int = 3
    time_budget: float = 10.0
    seed: int = 0

    @classmethod
    def create(
        cls,
        *,
        model: str = "fc",
        width: int | None = None,
        outputs: int = 10,
        n_train: int = 200,
        n_test: int = 100,
        approximations: Sequence[str] = APPROXIMATIONS,
        m: Sequence[int] | None = None,
        logit: int = 0,
        ridge: float = 1e-3,
        top_k: int | None = None,
        implementation: int = 1,
        vmap: bool = True,
        repeats: int = 3,
        time_budget: float = 10.0,
        seed: int = 0,
        names: Callable[[str], str] = _same,
    ) -> Setup:
        """A checked `Setup`, with the defaults filled in: a zoo model's width, ``m`` = 1 and O,
        ``top_k`` = 2·O (at most n_train·O).

        Args:
          names: the name each argument has for the caller, e.g. ``--n-train`` for ``n_train`` (the
            command line's), used in the errors.

        Raises:
          UsageError: an argument out of range (a `UsageTypeError` for one of the wrong type); the
            zoo's own checks of its sizes.
        """
        checks.positive_int(names("repeats"), repeats)
        checks.positive(names("time_budget"), time_budget)
        checks.seed(names("seed"), seed)
        checks.positive_int(names("outputs"), outputs)
        if width is not None:
            checks.positive_int(names("width"), width)
        checks.positive_int(names("n_train"), n_train)
        checks.positive_int(names("n_test"), n_test)
        checks.int_between(
            f"{names('n_train')} + {names('n_test')}", n_train + n_test, 2, DIGITS, "the digits"
        )
        for directions in m or []:
            checks.positive_int(names("m"), directions)
        checks.int_between(
            names("logit"),
            logit,
            -outputs,
            outputs - 1,
            f"an index of the O={outputs} logits, negative from the end",
        )
        checks.non_negative(names("ridge"), ridge)
        if top_k is not None:
            checks.count(
                names("top_k"), top_k, n_train * outputs, "eigenvalues of the training eNTK, n_train·O"
            )
        if ":" not in model and model not in ZOO_WIDTHS:
            raise checks.UsageError(
                f"{names('model')} must be one of {sorted(ZOO_WIDTHS)} or MODULE:FUNCTION; got {model!r}"
            )
        if ":" not in model:  # the zoo's builder checks its sizes (stax layers only: cheap)
            from nt_pntk._src.experiments import models

            width = width or ZOO_WIDTHS[model]
            models.get_model(model, width=width, outputs=outputs)
        specs: list[tuple[str, dict[str, int]]] = [("entk", {})]
        for name in dict.fromkeys(approximations):  # in order, once each
            if name == "projection":
                specs += [("projection", {"m": k, "seed": seed}) for k in dict.fromkeys(m or [1, outputs])]
            elif name == "single_logit":
                specs.append(("single_logit", {"logit": logit}))
            else:
                specs.append((name, {}))
        return cls(
            model=model,
            width=width,
            outputs=outputs,
            n_train=n_train,
            n_test=n_test,
            specs=tuple(specs),
            ridge=ridge,
            top_k=min(top_k or 2 * outputs, n_train * outputs),
            implementation=implementation,
            vmap_axes=0 if vmap else None,
            repeats=repeats,
            time_budget=time_budget,
            seed=seed,
        )

    def describe(self) -> str:
        width = "" if self.width is None else f", width {self.width}"
        return (
            f"eNTK approximations: model {self.model}{width}, O={self.outputs}, digits "
            f"n_train={self.n_train}, n_test={self.n_test}, at init (seed {self.seed}); "
            f"ridge {self.ridge:g} × mean diagonal; top-k={self.top_k}; implementation "
            f"{self.implementation}; time: median of up to {self.repeats} runs "
            f"({self.time_budget:g} s budget each)."
        )


def label(name: str, options: dict[str, int]) -> str:
    """A row label such as ``'projection (m=10)'``."""
    shown = {k: v for k, v in options.items() if k != "seed"}
    return name if not shown else f"{name} ({', '.join(f'{k}={v}' for k, v in shown.items())})"


def load_model(model: str, width: int | None, outputs: int) -> tuple[Any, Any]:
    """``(init_fn, apply_fn)`` of a zoo model or of ``MODULE:FUNCTION``, called as
    ``FUNCTION(outputs=O)`` (with ``width=W`` when `width` is given)."""
    from nt_pntk._src.experiments import models

    if ":" not in model:
        m = models.get_model(model, width=width, outputs=outputs)
        return m.init_fn, m.apply_fn
    function = load_user_function(model, "--model")
    options = {} if width is None else {"width": width}
    arguments = {_outputs_keyword(function, model, width is not None): outputs, **options}
    try:
        built = function(**arguments)
    except Exception as e:  # the user's builder failed
        call = ", ".join(f"{k}={v}" for k, v in arguments.items())
        raise user_code_error(f"--model {model}: calling {model.partition(':')[2]}({call})", e) from e
    if hasattr(built, "init_fn") and hasattr(built, "apply_fn"):
        return built.init_fn, built.apply_fn
    if isinstance(built, (tuple, list)) and len(built) >= 2 and all(map(callable, built[:2])):
        return built[0], built[1]
    raise checks.UsageError(
        f"--model {model!r} returned {type(built).__name__}; it must return "
        "(init_fn, apply_fn, ...) as stax.serial does, or an object with init_fn and apply_fn."
    )


def _outputs_keyword(function: Any, model: str, width: bool = False) -> str:
    """``'outputs'``, or ``'out'`` (the older name, with a warning) for a FUNCTION that takes only that.

    Raises:
      UsageError: FUNCTION takes neither (nor ``**kwargs``), or no ``width`` when `width` is passed.
    """
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read: the current name
        return "outputs"
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    keywords = {
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    name = model.partition(":")[2]
    if not takes_any and not keywords & set(deprecations.keyword_names("compare", "outputs")):
        raise checks.UsageError(
            f"--model {model}: {name}{inspect.signature(function)} must take the number of outputs as "
            "a keyword parameter `outputs` (it is called as FUNCTION(outputs=O), with width=W when "
            "--width is given)"
        )
    if width and not takes_any and "width" not in keywords:
        raise checks.UsageError(
            f"--model {model}: {name}{inspect.signature(function)} takes no `width`, but --width was "
            "given; add a `width` parameter, or leave --width out"
        )
    # `outputs`, or a former name (`out`) that FUNCTION takes instead, with a warning line.
    return deprecations.callback_keyword("compare", "outputs", parameters, f"--model {model}")


def _inputs(setup: Setup) -> tuple[Any, ...]:
    """``(apply_fn, params, x_all, labels_train, labels_test)``: the same in every process."""
    import jax
    import jax.numpy as jnp

    from nt_pntk._src.experiments import data

    x_train, y_train, x_test, y_test = data.digits_split(setup.n_train, setup.n_test, seed=setup.seed)
    x_all = jnp.asarray(np.concatenate([x_train, x_test]))
    init_fn, apply_fn = load_model(setup.model, setup.width, setup.outputs)
    # One compiled init instead of one dispatch (and compile) per layer's random draw.
    params = jax.jit(lambda key: init_fn(key, x_all.shape)[1])(jax.random.PRNGKey(setup.seed))
    return apply_fn, params, x_all, y_train, y_test


def measure_kernel(setup: Setup, name: str, options: dict[str, int], apply_fn, params, x) -> dict[str, Any]:
    """Compiles and times approximation ``name`` on ``x`` (x2 = x1); returns its value and costs."""
    from nt_pntk._src.kernels import approximations

    kernel_fn = approximations.approximation_fn(
        name,
        apply_fn,
        vmap_axes=setup.vmap_axes,
        implementation=setup.implementation,
        **options,
    )
    compiled, compile_s = measure.compile_timed(lambda x1, p: kernel_fn(x1, None, p), x, params)
    timing, value = measure.time_calls(
        compiled, x, params, repeats=setup.repeats, time_budget=setup.time_budget, compile_s=compile_s
    )
    temp = measure.temp_bytes(compiled)
    return dict(
        value=np.asarray(value, np.float64),
        time_s=timing.median_s,
        runs=timing.runs,
        compile_s=timing.compile_s,
        temp_mib=math.nan if temp is None else temp / MIB,
    )


def compare(setup: Setup, *, rss: bool = False) -> list[dict[str, Any]]:
    """One row per kernel of ``setup.specs`` (the eNTK first), with the columns of `COLUMNS`."""
    from nt_pntk._src.experiments import data
    from nt_pntk._src.kernels import approximations, regression, spectra

    apply_fn, params, x_all, labels_train, labels_test = _inputs(setup)
    n, outputs = setup.n_train, setup.outputs
    targets = data.centred_one_hot(labels_train % outputs, outputs)
    rows, reference = [], None
    for name, options in setup.specs:
        result = measure_kernel(setup, name, options, apply_fn, params, x_all)
        k = result.pop("value")
        with checks.computed_values():  # a kernel refused (NaN entries) is a failure, not a usage error
            f = regression.predict(k[:n, :n], targets, k[n:, :n], ridge=setup.ridge)
            if reference is None:  # the eNTK
                reference = dict(entk=k, f=f, spectrum=spectra.spectrum(k[:n, :n]))
            errors = spectra.spectral_errors(reference["spectrum"], k[:n, :n], top_k=setup.top_k)
        rows.append(
            dict(
                approximation=label(name, options),
                jac_rows=approximations.jacobian_rows(name, outputs, **options),
                rel_err=numerics.entk_relative_error(reference["entk"], k),
                test_acc=float(np.mean(np.argmax(f, axis=1) == labels_test % outputs)),
                pred_gap=float(np.linalg.norm(f - reference["f"]) / np.linalg.norm(reference["f"])),
                err_lmax=errors.lambda_max,
                err_cond=errors.condition_number,
                err_topk=float(np.max(errors.top_k)),
                **result,
                rss_mib=peak_rss_in_subprocess(setup, name, options) if rss else math.nan,
            )
        )
    return rows


def peak_rss_in_subprocess(setup: Setup, name: str, options: dict[str, int]) -> float:
    """The peak RSS increase (MiB) of a fresh process computing kernel ``name`` once; NaN if it fails."""
    spec = {"setup": {**dataclasses.asdict(setup), "specs": ()}, "name": name, "options": options}
    try:
        result = fresh_process.run(f"{__name__}:_peak_rss_worker", spec, search_cwd=True)
    except fresh_process.WorkerFailed as e:
        print(f"  peak RSS of {label(name, options)} not measured (exit {e.returncode}): {e.last_line}")
        return math.nan
    return float(result["rss_mib"])


def _peak_rss_worker(spec: dict[str, Any]) -> dict[str, float]:
    """Computes one kernel (compile, warm-up, one timed call) in this fresh process; its peak RSS increase."""
    import jax

    setup = Setup(**{**spec["setup"], "specs": (), "repeats": 1})
    apply_fn, params, x_all, _, _ = _inputs(setup)
    jax.block_until_ready((x_all, params))
    baseline = measure.peak_rss_bytes()
    measure_kernel(setup, spec["name"], spec["options"], apply_fn, params, x_all)
    return {"rss_mib": (measure.peak_rss_bytes() - baseline) / MIB}

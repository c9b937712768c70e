"""The N×N approximations of the eNTK side by side: error, kernel regression, spectra and cost.

For a network at initialization (a zoo model, ``--model fc|cnn``, or your own,
``--model MODULE:FUNCTION``) on N = n_train + n_test digits images and O
outputs, each approximation K of ``nt_pntk.approximations`` (pntk, trace,
single_logit, projection with each ``--m``) is computed on all N inputs and
compared with the full eNTK Θ (N, N, O, O), the reference (first row):

* ``rel_err``: ``||Θ - K ⊗ I_O||_F / ||Θ||_F`` on all N inputs;
* ``test_acc``: test accuracy of kernel regression with K ⊗ I_O on centered
  one-hot targets of the labels mod O (ridge relative to the mean diagonal,
  ``nt_pntk.regression.predict``), and ``pred_gap``,
  ``||f_K - f_Θ|| / ||f_Θ||``, the gap to the eNTK's own predictions;
* ``err_lmax``, ``err_cond``, ``err_topk``: relative errors of λ_max, of the
  condition number and (the largest over) the top-k eigenvalues of K ⊗ I_O
  against Θ's, on the training inputs (``nt_pntk.spectra``);
* ``time_s``: median wall time of the jitted kernel (``block_until_ready``)
  over ``runs`` calls after a warm-up (``--repeats``, fewer when the warm-up
  shows they would exceed ``--time-budget``); ``compile_s``: trace, lower and
  compile; ``temp_mib``: XLA's temp bytes (``jit(...).lower(...).compile().memory_analysis()``); with
  ``--rss``, ``rss_mib``: the peak RSS increase of a fresh process computing
  that kernel alone, over its baseline after imports, data and parameters
  (all measured by `nt_pntk._src.measure`).

``MODULE:FUNCTION`` is imported (the current directory is searched first) and
called as ``FUNCTION(outputs=O)``, or ``FUNCTION(outputs=O, width=W)`` when
``--width`` is given (a FUNCTION that takes ``out`` instead of ``outputs``, the
older name, still works, with a warning); it returns ``(init_fn, apply_fn, ...)``
as ``stax.serial`` does (or an object with ``init_fn`` and ``apply_fn``), for NHWC
inputs (N, 8, 8, 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nt_pntk._src import checks as _checks
from nt_pntk._src import deprecations, measure, numerics
from nt_pntk.cli import (
    UsageError,
    add_timing_arguments,
    check,
    check_timing_arguments,
    load_user_function,
    save_csv,
    user_code_error,
    zoo_model,
)

APPROXIMATIONS = ("pntk", "trace", "single_logit", "projection")
ZOO_WIDTHS = {"fc": 64, "cnn": 32}  # default --width of the zoo models
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="fc",
        help="zoo model 'fc' or 'cnn' (3 hidden layers), or MODULE:FUNCTION returning "
        "(init_fn, apply_fn, ...) (default: fc)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"hidden units / channels (default: {ZOO_WIDTHS} for the zoo; not passed to FUNCTION)",
    )
    parser.add_argument("--outputs", type=int, default=10, help="number of outputs O (default: 10)")
    deprecations.add_option_alias(parser, "compare", "--out", type=int)
    parser.add_argument("--n-train", type=int, default=200, help="training images (default: 200)")
    parser.add_argument("--n-test", type=int, default=100, help="test images (default: 100)")
    parser.add_argument(
        "--approximations",
        nargs="+",
        default=list(APPROXIMATIONS),
        choices=APPROXIMATIONS,
        help="N×N approximations to compare with the full eNTK (default: all)",
    )
    parser.add_argument(
        "--m", type=int, nargs="+", default=None, help="projection: numbers of directions (default: 1 and O)"
    )
    parser.add_argument("--logit", type=int, default=0, help="single_logit: the logit k (default: 0)")
    parser.add_argument(
        "--ridge", type=float, default=1e-3, help="ridge, relative to the mean diagonal (default: 1e-3)"
    )
    parser.add_argument("--top-k", type=int, default=None, help="eigenvalues compared (default: 2·O)")
    parser.add_argument(
        "--implementation",
        type=int,
        default=1,
        choices=(0, 1, 2, 3),
        help="nt.NtkImplementation value (default: 1, JACOBIAN_CONTRACTION)",
    )
    parser.add_argument(
        "--no-vmap",
        action="store_true",
        help="do not pass vmap_axes=0 (for a model that mixes examples, e.g. batch norm)",
    )
    add_timing_arguments(parser, time_budget=10.0)
    parser.add_argument(
        "--rss", action="store_true", help="also measure each kernel's peak RSS in a fresh process (slower)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, parameters, projections")
    parser.add_argument("--csv", type=Path, default=None, help="also save the table as this CSV file")


def run(args: argparse.Namespace) -> int:
    """Prints the comparison table (and saves it with ``--csv``)."""
    import pandas as pd

    _validate(args)
    start = time.perf_counter()
    setup = Setup.from_args(args)
    print(setup.describe(), flush=True)
    table = pd.DataFrame(compare(setup, rss=args.rss)).reindex(columns=list(COLUMNS))
    if not args.rss:
        table = table.drop(columns="rss_mib")
    print(format_table(table))
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s")
    if args.csv is not None:
        save_csv(table, args.csv, "the table")
    return 0


def _validate(args: argparse.Namespace) -> None:
    check_timing_arguments(args)
    check(_checks.seed, "--seed", args.seed)
    check(_checks.positive_int, "--outputs", args.outputs)
    if args.width is not None:
        check(_checks.positive_int, "--width", args.width)
    m = args.m or []
    checks = [
        (args.n_train >= 1, f"--n-train must be at least 1; got {args.n_train}"),
        (args.n_test >= 1, f"--n-test must be at least 1; got {args.n_test}"),
        (
            args.n_train + args.n_test <= 1797,
            f"--n-train + --n-test must be at most 1797 (the digits); got {args.n_train + args.n_test}",
        ),
        (all(v >= 1 for v in m), f"--m must be at least 1; got {m}"),
        (
            -args.outputs <= args.logit < args.outputs,
            f"--logit must be in [-O, O) = [{-args.outputs}, {args.outputs}); got {args.logit}",
        ),
        (math.isfinite(args.ridge) and args.ridge >= 0, f"--ridge must be >= 0; got {args.ridge}"),
        (args.top_k is None or args.top_k >= 1, f"--top-k must be at least 1; got {args.top_k}"),
        (
            args.top_k is None or args.top_k <= args.n_train * args.outputs,
            f"--top-k must be at most n_train·O = {args.n_train * args.outputs}; got {args.top_k}",
        ),
        (
            ":" in args.model or args.model in ZOO_WIDTHS,
            f"--model must be one of {sorted(ZOO_WIDTHS)} or MODULE:FUNCTION; got {args.model!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if ":" not in args.model:  # the zoo's builder checks its sizes (stax layers only: cheap)
        zoo_model(args.model, width=args.width or ZOO_WIDTHS[args.model], outputs=args.outputs)


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
    def from_args(cls, args: argparse.Namespace) -> Setup:
        width = args.width if args.width is not None or ":" in args.model else ZOO_WIDTHS[args.model]
        specs = [("entk", {})]
        for name in dict.fromkeys(args.approximations):  # in order, once each
            if name == "projection":
                ms = dict.fromkeys(args.m or [1, args.outputs])
                specs += [("projection", {"m": m, "seed": args.seed}) for m in ms]
            elif name == "single_logit":
                specs.append(("single_logit", {"logit": args.logit}))
            else:
                specs.append((name, {}))
        return cls(
            model=args.model,
            width=width,
            outputs=args.outputs,
            n_train=args.n_train,
            n_test=args.n_test,
            specs=tuple(specs),
            ridge=args.ridge,
            top_k=min(args.top_k or 2 * args.outputs, args.n_train * args.outputs),
            implementation=args.implementation,
            vmap_axes=None if args.no_vmap else 0,
            repeats=args.repeats,
            time_budget=args.time_budget,
            seed=args.seed,
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
    """``(init_fn, apply_fn)`` of a zoo model or of ``MODULE:FUNCTION`` (see the module docstring)."""
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
    raise UsageError(
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
        raise UsageError(
            f"--model {model}: {name}{inspect.signature(function)} must take the number of outputs as "
            "a keyword parameter `outputs` (it is called as FUNCTION(outputs=O), with width=W when "
            "--width is given)"
        )
    if width and not takes_any and "width" not in keywords:
        raise UsageError(
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


def format_table(table: Any) -> str:
    """The table as text, with a legend."""
    formatters = {
        "rel_err": "{:.4f}".format,
        "test_acc": "{:.3f}".format,
        "pred_gap": "{:.4f}".format,
        "err_lmax": "{:.4f}".format,
        "err_cond": "{:.4f}".format,
        "err_topk": "{:.4f}".format,
        "time_s": "{:.4g}".format,
        "compile_s": "{:.2f}".format,
        "temp_mib": "{:.1f}".format,
        "rss_mib": "{:.0f}".format,
    }
    legend = (
        "rel_err = ||eNTK - K⊗I||/||eNTK||; test_acc, pred_gap = ||f_K - f_eNTK||/||f_eNTK||: kernel "
        "regression;\nerr_lmax, err_cond, err_topk (max over top-k): relative spectral errors on the "
        "training kernel;\njac_rows: Jacobian rows per input; time_s: median; temp_mib: XLA temp bytes"
        + ("; rss_mib: peak RSS increase in a fresh process." if "rss_mib" in table.columns else ".")
    )
    return "\n" + table.to_string(index=False, formatters=formatters, na_rep="-") + "\n\n" + legend


# --- Peak RSS: one kernel in a fresh process. ---


def peak_rss_in_subprocess(setup: Setup, name: str, options: dict[str, int]) -> float:
    """The peak RSS increase (MiB) of a fresh process computing kernel ``name`` once; NaN if it fails."""
    fields = {**dataclasses.asdict(setup), "specs": ()}
    spec = json.dumps({"setup": fields, "name": name, "options": options, "cwd": os.getcwd()})
    proc = subprocess.run(
        [sys.executable, "-m", "nt_pntk.cli.compare", "--worker", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        print(f"  peak RSS of {label(name, options)} not measured (exit {proc.returncode}): {tail[0][:200]}")
        return math.nan
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["rss_mib"])


def _worker(spec: dict[str, Any]) -> dict[str, float]:
    """Computes one kernel (compile, warm-up, one timed call) in this fresh process; its peak RSS increase."""
    import jax

    if spec["cwd"] not in sys.path:
        sys.path.insert(0, spec["cwd"])
    setup = Setup(**{**spec["setup"], "specs": (), "repeats": 1})
    apply_fn, params, x_all, _, _ = _inputs(setup)
    jax.block_until_ready((x_all, params))
    baseline = measure.peak_rss_bytes()
    measure_kernel(setup, spec["name"], spec["options"], apply_fn, params, x_all)
    return {"rss_mib": (measure.peak_rss_bytes() - baseline) / MIB}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m nt_pntk.cli.compare")
    parser.add_argument("--worker", required=True, help="JSON spec of one kernel")
    print(json.dumps(_worker(json.loads(parser.parse_args().worker))))

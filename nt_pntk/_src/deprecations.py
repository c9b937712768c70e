"""The one home of deprecated names: each old name that still works, what replaces it, and when it goes.

`DEPRECATIONS` is the table (as optax keeps one); everything else here serves it:

* a module or a module attribute (``nt_pntk.models``, ``nt_pntk.tiled.format_bytes``): the public
  module's ``__getattr__`` is `module_getattr` of its name, which warns (a `DeprecationWarning`)
  and gives the replacement; a deprecated module file calls `warn_module` when imported;
* a keyword argument (``kernel_matrix(out=...)``): the function calls `renamed`;
* a command-line option or option value (``nt-pntk compare --out``, ``--kernel ntk``):
  `add_option_alias` and `option_value`, which print one warning line on stderr, as does
  `warn_script` for ``python -m nt_pntk.figure1`` and `callback_keyword` for a user's function
  that takes the old keyword.

Each entry records the release that deprecated it and the one that removes it: a name deprecated
in 0.X.0 keeps working through 0.(X+1).0 and is removed in 0.(X+2).0. ``CHANGELOG.md`` lists the
entries release by release (`changelog_table` writes those tables; ``tests/test_public_api.py``
checks that the CHANGELOG holds them).

This module imports neither JAX nor NT (``import nt_pntk`` and the command line's parsers use it);
the replacements are imported when an old name is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

from nt_pntk._src import checks

Kind = Literal["module", "attribute", "argument", "option", "value", "script", "keyword", "data"]

#: The section of ``CHANGELOG.md`` whose release has no number yet.
UNRELEASED = "Unreleased"


@dataclasses.dataclass(frozen=True)
class Deprecation:
    """One deprecated name.

    Attributes:
      kind: what is deprecated: a ``module``, a module ``attribute``, a function's keyword
        ``argument``, a command-line ``option``, an option's ``value``, a ``script`` run with
        ``python -m``, a ``keyword`` that the command line passes to a user's function, or
        ``data``: a former name read from a file (a configuration's key, a results column).
      where: the module (``nt_pntk.tiled``), the function (``kernel_matrix``) or the command
        (``nt-pntk compare``) that has the old name; empty for a module.
      old: the old name (``format_bytes``, ``out``, ``--out``, ``ntk``).
      new: the replacement as the warning words it (``use {new}``).
      target: for a module or an attribute, ``"module:attribute"`` (or ``"module"``) of the object
        the old name gives.
      since: the release that deprecated it (`UNRELEASED` while it has no number).
      removed_in: the release that removes it.
      changelog: the CHANGELOG's row, ``(deprecated, use instead)``.
    """

    kind: Kind
    where: str
    old: str
    new: str
    since: str
    removed_in: str
    changelog: tuple[str, str]
    target: str = ""

    @property
    def name(self) -> str:
        """The old name in full: ``nt_pntk.tiled.format_bytes``, ``kernel_matrix(out=)``, ``--out``."""
        if self.kind == "module":
            return self.old
        if self.kind == "attribute":
            return f"{self.where}.{self.old}"
        if self.kind == "argument":
            return f"{self.where}({self.old}=)"
        return f"{self.where} {self.old}"

    def message(self) -> str:
        """The `DeprecationWarning`'s text (modules, attributes and arguments)."""
        if self.kind == "argument":
            return (
                f"{self.where}(): `{self.old}` is deprecated (removed in {self.removed_in}); "
                f"use `{self.new}`."
            )
        return f"{self.name} is deprecated (removed in {self.removed_in}); use {self.new}."

    def warn(self, stacklevel: int = 2) -> None:
        """Warns that the name is deprecated: `stacklevel` counts from the caller of `warn`."""
        warnings.warn(self.message(), DeprecationWarning, stacklevel=stacklevel + 1)

    def resolve(self) -> Any:
        """The object the old name gives (a module or an attribute's replacement)."""
        module, _, attribute = self.target.partition(":")
        value = importlib.import_module(module)
        return getattr(value, attribute) if attribute else value


def _entries() -> list[Deprecation]:
    entries: list[Deprecation] = []

    def add(kind: Kind, where: str, old: str, new: str, changelog: tuple[str, str], **kwargs: Any) -> None:
        since = kwargs.pop("since", "0.2.0")
        removed_in = kwargs.pop("removed_in", {"0.2.0": "0.4.0", UNRELEASED: "0.5.0"}[since])
        entries.append(Deprecation(kind, where, old, new, since, removed_in, changelog, **kwargs))

    # --- 0.2.0: the experiments moved under nt_pntk.experiments; one vocabulary (outputs, output). ---
    for name in ("models", "data"):
        new = f"nt_pntk.experiments.{name}"
        add("module", "", f"nt_pntk.{name}", new, (f"`nt_pntk.{name}`", f"`{new}`"), target=new)
    add(
        "attribute",
        "nt_pntk.experiments.data",
        "one_hot",
        "nt_pntk.experiments.data.centred_one_hot",
        ("`data.one_hot`", "`data.centred_one_hot` (it always returned centred targets)"),
        target="nt_pntk._src.experiments.data:centred_one_hot",
    )
    for function in ("get_model", "projection_directions", "jacobian_rows"):
        add("argument", function, "out", "outputs", (f"`{function}(out=)`", f"`{function}(outputs=)`"))
    for function in ("kernel_matrix", "run_sweep", "write_report"):
        add("argument", function, "out", "output", (f"`{function}(out=)`", f"`{function}(output=)`"))
    add(
        "attribute",
        "nt_pntk.tiled",
        "with_jacobian_features",
        "nt_pntk.approximations.Trace().kernel_fn(apply_fn, ...), or "
        "nt_pntk.approximations.PNTK().kernel_fn(apply_fn, ...) for pseudo=True",
        (
            "`nt_pntk.tiled.with_jacobian_features(ntk_fn, f, ...)`",
            "`Trace().kernel_fn(f, ...)` (`PNTK()` for `pseudo=True`)",
        ),
        target="nt_pntk._src.legacy:with_jacobian_features",
    )
    add(
        "attribute",
        "nt_pntk.tiled",
        "jacobian_features_fn",
        "EmpiricalKernelFn.features_fn()",
        ("`nt_pntk.tiled.jacobian_features_fn`", "`EmpiricalKernelFn.features_fn()`"),
        target="nt_pntk._src.legacy:jacobian_features_fn",
    )
    add(
        "script",
        "python -m",
        "nt_pntk.figure1",
        "nt-pntk figure1",
        ("`python -m nt_pntk.figure1`", "`nt-pntk figure1`"),
    )
    for command, old, new in (
        ("compare", "--out", "--outputs"),
        ("kernel", "--out-dim", "--outputs"),
        ("demo", "--outs", "--outputs"),
        ("figure1", "--outs", "--outputs"),
        ("validate", "--out", "--output"),
        ("figure1", "--out", "--output"),
        ("demo", "--out", "--csv"),
    ):
        add("option", f"nt-pntk {command}", old, new, (f"`nt-pntk {command} {old}`", f"`{new}`"))
    add(
        "value",
        "nt-pntk kernel --kernel",
        "ntk",
        "trace",
        ("`nt-pntk kernel --kernel ntk`", "`--kernel trace`"),
    )
    add(
        "keyword",
        "nt-pntk compare",
        "out",
        "outputs",
        ("a `compare --model MODULE:FUNCTION` taking `out=`", "a FUNCTION taking `outputs=`"),
    )

    # --- Unreleased: one documented way to each kernel function; helpers private. ---
    def moved(module: str, name: str, new: str, target: str, use: str = "") -> None:
        add(
            "attribute",
            module,
            name,
            new,
            (f"`{module}.{name}`", use or f"`{new}`"),
            target=target,
            since=UNRELEASED,
        )

    kernels = "nt_pntk._src.kernels.approximations"
    classes = ("PNTK", "Trace", "SingleLogit", "Projection", "FullENTK", "Approximation", "EmpiricalKernelFn")
    for name in classes:
        moved("nt_pntk", name, f"nt_pntk.approximations.{name}", f"{kernels}:{name}")
    moved(
        "nt_pntk",
        "projection_directions",
        "nt_pntk.approximations.projection_directions",
        f"{kernels}:projection_directions",
    )
    by_name = "an approximation's class: PNTK(), Trace(), SingleLogit(k), Projection(m, seed), FullENTK()"
    for module in ("nt_pntk", "nt_pntk.approximations"):
        moved(
            module,
            "approximation_fn",
            "nt_pntk.approximations.PNTK().kernel_fn(f, ...) (or Trace(), SingleLogit(k), "
            "Projection(m, seed), FullENTK())",
            f"{kernels}:approximation_fn",
            "`PNTK().kernel_fn(f, ...)`, or `Trace()`, `SingleLogit(k)`, `Projection(m, seed)`, `FullENTK()`",
        )
        moved(module, "APPROXIMATION_NAMES", by_name, f"{kernels}:APPROXIMATION_NAMES", "the classes")
    moved("nt_pntk", "KERNEL_NAMES", "('nngp', 'ntk', 'pntk')", "nt_pntk._src.kernels.pntk:KERNEL_NAMES")
    moved(
        "nt_pntk.approximations",
        "approximation",
        "an approximation's class: PNTK(), Trace(), SingleLogit(k), Projection(m, seed), FullENTK()",
        f"{kernels}:approximation",
        "`PNTK()`, `Trace()`, `SingleLogit(k)`, `Projection(m, seed)`, `FullENTK()`",
    )
    moved("nt_pntk.approximations", "APPROXIMATIONS", by_name, f"{kernels}:APPROXIMATIONS", "the classes")
    moved("nt_pntk.approximations", "ApproximationName", "str", f"{kernels}:ApproximationName", "`str`")
    moved(
        "nt_pntk.approximations",
        "jacobian_rows",
        "Approximation.jacobian_rows(outputs), e.g. Trace().jacobian_rows(10)",
        f"{kernels}:jacobian_rows",
        "`Approximation.jacobian_rows(outputs)`",
    )
    for kernel in ("pntk", "trace", "single_logit", "projection", "entk"):
        name = f"empirical_{kernel}_fn"
        moved("nt_pntk.approximations", name, f"nt_pntk.{name}", f"nt_pntk:{name}")
    moved(
        "nt_pntk.tiled",
        "NotAGramKernel",
        "nt_pntk.approximations.NotAGramKernel",
        "nt_pntk._src.kernels.features:NotAGramKernel",
    )
    for name in ("format_bytes", "parse_bytes"):
        moved(
            "nt_pntk.tiled",
            name,
            "a size in bytes (kernel_matrix's memory_budget takes '2GiB' itself)",
            f"nt_pntk._src.{'checks' if name == 'parse_bytes' else 'tiled.planning'}:{name}",
            "a size in bytes (`memory_budget` takes `'2GiB'` itself)",
        )
    for name in ("Choice", "Estimate"):
        moved(
            "nt_pntk.tiled",
            name,
            f"the fields of nt_pntk.tiled.KernelMatrixPlan (plan.{name.lower()}...)",
            f"nt_pntk._src.tiled.routes:{name}",
            "`KernelMatrixPlan`'s fields",
        )
    # Former names for O read from files: a validation configuration, a results directory, a table.
    unreleased = {"since": UNRELEASED}
    add(
        "data",
        "validation configuration",
        "outs",
        "`outputs`",
        ("the `[[sweep]]` key `outs` of a validation configuration", "`outputs`"),
        **unreleased,
    )
    add(
        "data",
        "validation output",
        "out",
        "the current names (`outputs`); the files are left as they are",
        (
            "an output directory of 0.2.0 (the column `out` in its cells, `outs` in its `config.json`), "
            "resumed",
            "— (it resumes, its files left as they are)",
        ),
        **unreleased,
    )
    add(
        "data",
        "validation table",
        "out",
        "the column `outputs`",
        (
            "a `results.csv`/`slopes.csv` table with the column `out`, passed to `fit_slopes`, "
            "`output_scaling`, `write_report`",
            "the column `outputs`",
        ),
        **unreleased,
    )
    return entries


#: Every deprecated name, oldest release first.
DEPRECATIONS: tuple[Deprecation, ...] = tuple(_entries())


def _one(kind: Kind, where: str, old: str) -> Deprecation:
    for entry in DEPRECATIONS:
        if entry.kind == kind and entry.where == where and entry.old == old:
            return entry
    raise LookupError(f"no {kind} {where} {old} in nt_pntk._src.deprecations.DEPRECATIONS")


# --- Modules and module attributes --------------------------------------------------------------


def attributes(module: str) -> dict[str, Deprecation]:
    """The deprecated attributes of `module` (and its deprecated submodules), by name."""
    found = {e.old: e for e in DEPRECATIONS if e.kind == "attribute" and e.where == module}
    prefix = f"{module}."
    for e in DEPRECATIONS:
        if e.kind == "module" and e.old.startswith(prefix) and "." not in e.old[len(prefix) :]:
            found[e.old[len(prefix) :]] = e
    return found


def module_getattr(module: str) -> Callable[..., Any]:
    """The module ``__getattr__`` of `module`: its deprecated names, each with a warning at the line
    that uses it, else an `AttributeError` worded as Python's.

    A module whose own ``__getattr__`` serves other names first passes ``stacklevel=3``.
    """
    table = attributes(module)

    def __getattr__(name: str, stacklevel: int = 2) -> Any:
        entry = table.get(name)
        if entry is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if entry.kind == "module":  # the module warns when it is first imported (`warn_module`)
            return importlib.import_module(entry.old)
        entry.warn(stacklevel=stacklevel)
        return entry.resolve()

    return __getattr__


def warn_module(name: str) -> None:
    """Called by a deprecated module when it is imported: warns there (as Python's own do)."""
    _one("module", "", name).warn(stacklevel=2)


def alias_module_getattr(name: str) -> Callable[[str], Any]:
    """``__getattr__`` of the deprecated module `name`: the deprecated names of its replacement
    (``nt_pntk.data.one_hot`` is ``nt_pntk.experiments.data.one_hot``), with their warning."""
    replacement = module_getattr(_one("module", "", name).target)

    def __getattr__(attribute: str) -> Any:
        try:
            return replacement(attribute, stacklevel=3)
        except AttributeError:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}") from None

    return __getattr__


# --- Keyword arguments ---------------------------------------------------------------------------


def renamed(
    function: str,
    old: str,
    old_value: Any,
    new: str,
    new_value: Any,
    *,
    default: Any = None,
    required: bool = False,
) -> Any:
    """The value of `function`'s keyword argument renamed from `old` to `new`.

    Passing `old` warns (`DeprecationWarning` naming `new`, at the caller of `function`);
    passing both is a `checks.UsageTypeError` (a `TypeError`). `new_value` is None when not
    passed; then `default`, or a `checks.UsageTypeError` when `required`.
    """
    entry = _one("argument", function, old)
    assert entry.new == new, (entry, new)
    if old_value is not None:
        if new_value is not None:
            raise checks.UsageTypeError(
                f"{function}() got both `{new}` and its deprecated name `{old}`; pass `{new}` only."
            )
        entry.warn(stacklevel=3)
        return old_value
    if new_value is None:
        if required:
            raise checks.UsageTypeError(f"{function}() is missing the argument `{new}`.")
        return default
    return new_value


# --- The command line: one warning line on stderr ------------------------------------------------


def warn_line(prog: str, what: str, fix: str) -> None:
    """One line on stderr: ``<prog>: warning: <what>; <fix>``.

    The command line's form of a deprecation warning: a `DeprecationWarning` raised in a
    library module is hidden by Python's default filters.
    """
    print(f"{prog}: warning: {what}; {fix}", file=sys.stderr)


class _OptionAlias(argparse.Action):
    """A hidden old name of an option: stores into the new option's `dest` after one line on stderr."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_line(parser.prog, f"{option_string} is deprecated", f"use {self.new}")
        setattr(namespace, self.dest, values)


def add_option_alias(parser: Any, command: str, old: str, **kwargs: Any) -> None:
    """Adds `old`, a deprecated name of an option of ``nt-pntk <command>``, hidden from ``--help``.

    `kwargs` are those of the new option that parse its value (``type``, ``nargs``,
    ``choices``, ``metavar``); using `old` stores into the new option's destination and
    prints one warning line naming it.
    """
    new = _one("option", f"nt-pntk {command}", old).new
    parser.add_argument(
        old,
        dest=new.lstrip("-").replace("-", "_"),
        action=_OptionAlias,
        new=new,
        default=argparse.SUPPRESS,  # the new option's default stands
        help=argparse.SUPPRESS,
        **kwargs,
    )


def option_value(command: str, option: str) -> Callable[[str], str]:
    """An argparse ``type`` for `option` of ``nt-pntk <command>``: a deprecated value becomes its
    successor, with a warning line; any other value is returned as it is."""
    where = f"nt-pntk {command} {option}"
    table = {e.old: e.new for e in DEPRECATIONS if e.kind == "value" and e.where == where}

    def value(text: str) -> str:
        if text in table:
            new = table[text]
            warn_line(f"nt-pntk {command}", f"{option} {text} is deprecated", f"use {option} {new}")
            return new
        return text

    value.__name__ = option.lstrip("-").replace("-", "_")  # argparse names it in its errors
    return value


def warn_script(module: str) -> None:
    """The warning line of ``python -m <module>``, a deprecated way to run a subcommand."""
    entry = _one("script", "python -m", module)
    warn_line(entry.new, f"python -m {module} is deprecated", f"use {entry.new}")


def keyword_names(command: str, new: str) -> tuple[str, ...]:
    """`new` and its deprecated names, as ``nt-pntk <command>`` may pass them to a user's function."""
    where = f"nt-pntk {command}"
    return (new, *(e.old for e in DEPRECATIONS if e.kind == "keyword" and e.where == where and e.new == new))


def callback_keyword(command: str, new: str, parameters: Iterable[str], what: str) -> str:
    """The keyword ``nt-pntk <command>`` passes to a user's function with these `parameters`: `new`,
    or a deprecated name the function takes instead (with a warning line that starts with `what`)."""
    parameters = set(parameters)
    for old in keyword_names(command, new)[1:]:
        if new not in parameters and old in parameters:
            warn_line(
                f"nt-pntk {command}",
                f"{what}: calling FUNCTION({old}=O) is deprecated",
                f"name its parameter `{new}`",
            )
            return old
    return new


# --- The CHANGELOG -------------------------------------------------------------------------------


def changelog_table(since: str) -> str:
    """The markdown table of the names deprecated in release `since`, as ``CHANGELOG.md`` lists them."""
    rows = ["| deprecated | use instead | removed in |", "|---|---|---|"]
    for e in DEPRECATIONS:
        if e.since == since:
            rows.append(f"| {e.changelog[0]} | {e.changelog[1]} | {e.removed_in} |")
    return "\n".join(rows)


def releases() -> list[str]:
    """The releases that deprecated something, in the table's order."""
    return list(dict.fromkeys(e.since for e in DEPRECATIONS))


def warn_data(where: str, old: str, what: str, *, stacklevel: int = 2) -> None:
    """Warns that a former name read from a file (`what` describes where it was found) is
    deprecated: the ``data`` entry (`where`, `old`) gives the release that removes it and the fix.
    `stacklevel` counts from the caller of `warn_data`."""
    entry = _one("data", where, old)
    warnings.warn(
        f"{what} is deprecated (removed in {entry.removed_in}); use {entry.new}.",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )

"""The `nt-pntk` command: one subcommand per job, each defined in its own module."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import os
import sys
import traceback
from typing import Any

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nt_pntk.cli.demo", "eNTK vs pNTK on a stax CNN: time, peak memory, error"),
    "validate": ("nt_pntk.cli.validate", "width sweeps that test the paper's convergence claims"),
    "kernel": ("nt_pntk.cli.kernel", "a zoo model's pNTK on a dataset, tiled, to disk, resumable"),
    "compare": ("nt_pntk.cli.compare", "the N×N approximations of the eNTK side by side"),
    "bench-report": ("nt_pntk.cli.bench_report", "fitted scaling exponents from asv results"),
    "figure1": (
        "nt_pntk.cli.figure1",
        "the paper's Figure 1: eNTK vs pNTK time for a pair over ResNet depths",
    ),
}

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
TRACEBACK_ENV = "NT_PNTK_TRACEBACK"
INTERRUPTED = "interrupted; finished work is kept on disk, run the same command again to resume"

EPILOG = f"""\
Errors: a bad argument or configuration prints one line and exits with 2; a failure
(a file that cannot be read or written, a full disk, a failed computation) prints one
line and exits with 1; Ctrl-C exits with 130, keeping finished work (rerun to resume).
Set {TRACEBACK_ENV}=1 to see the full Python traceback of these errors too."""


class UsageError(ValueError):
    """A bad argument or configuration: one line on stderr and exit code 2 (like argparse's errors)."""

    exit_code = EXIT_USAGE


class UserCodeError(RuntimeError):
    """The user's own code (a module, a network builder, an ``init_fn``) raised: one line naming
    it and its exception, and exit code 1 (a failure, not a usage error)."""

    exit_code = EXIT_FAILURE


def user_code_error(what: str, error: BaseException) -> UserCodeError:
    """`UserCodeError` for `what` (e.g. "importing module 'nets'") having raised `error`.

    The line names the exception and where it was raised (the user's file and line).
    """
    where = ""
    if isinstance(error, SyntaxError) and error.filename:
        where = f" ({error.filename}, line {error.lineno})"
    elif error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f" ({frame.filename}, line {frame.lineno})"
    text = error.msg if isinstance(error, SyntaxError) else str(error)  # str() repeats the place
    message = text.strip().splitlines()[0] if text and text.strip() else ""
    return UserCodeError(f"{what} failed with {type(error).__name__}: {message}{where}")


def check(function: Any, option: str, value: Any, *args: Any) -> Any:
    """`function(option, value, *args)`, a check of `nt_pntk._src.checks`, its error a `UsageError`.

    The library's check speaks, under the option's name: the command line has no limits of its own.
    """
    try:
        return function(option, value, *args)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def zoo_model(name: str, **arguments: Any) -> Any:
    """`models.get_model(name, **arguments)`; what the zoo's builder refuses is a `UsageError`."""
    from nt_pntk._src.experiments import models

    try:
        return models.get_model(name, **arguments)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def load_user_function(spec: str, option: str) -> Any:
    """The function named by ``MODULE:FUNCTION`` in `option` (the current folder is searched first).

    Raises:
      UsageError: `spec` is not MODULE:FUNCTION, the module is not found, or it has no such function.
      UserCodeError: importing the module raised (its code failed: a SyntaxError, an error it raised).
    """
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise UsageError(f"{option} must be MODULE:FUNCTION, e.g. mymodels:build; got {spec!r}")
    # The console script's sys.path lacks the current folder that `python -m` would have.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UsageError(
                f"cannot import module {module_name!r} named in {option} {spec!r}: {e}; put it in the "
                "current folder or on PYTHONPATH"
            ) from e
        raise user_code_error(f"importing module {module_name!r} named in {option} {spec!r}", e) from e
    except Exception as e:  # the module's own code: a SyntaxError, an error raised at import
        raise user_code_error(f"importing module {module_name!r} named in {option} {spec!r}", e) from e
    function = getattr(module, function_name, None)
    if not callable(function):
        what = "has no attribute" if function is None else "has a non-callable"
        raise UsageError(
            f"module {module_name!r} ({getattr(module, '__file__', '?')}) {what} {function_name!r} named in "
            f"{option} {spec!r}"
        )
    return function


#: The distributions whose versions `--version` reports beside nt-pntk's (read from their metadata:
#: importing JAX to ask would take seconds).
VERSIONED_DEPENDENCIES = ("jax", "jaxlib", "neural-tangents")


def installed_version(distribution: str) -> str:
    """The installed version of `distribution` from its metadata (no import), or ``'not installed'``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def version_text() -> str:
    """``nt-pntk <version>`` and the installed versions of JAX, jaxlib and neural-tangents."""
    from nt_pntk._version import __version__

    dependencies = ", ".join(f"{name} {installed_version(name)}" for name in VERSIONED_DEPENDENCIES)
    return f"nt-pntk {__version__}\n{dependencies}"


class _VersionAction(argparse.Action):
    """``--version``: prints `version_text` and exits (the metadata is read only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def add_timing_arguments(parser: argparse.ArgumentParser, *, time_budget: float) -> None:
    """``--repeats`` and ``--time-budget``, as every timing subcommand takes them (`measure.time_calls`)."""
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls after one warm-up call; the median is reported (default: 3)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=time_budget,
        help="seconds of timed calls per measurement: fewer than --repeats (at least 1) when the warm-up "
        f"call shows they would take longer (default: {time_budget:g})",
    )


def check_timing_arguments(args: argparse.Namespace) -> None:
    """A `UsageError` for a ``--repeats`` below 1 or a ``--time-budget`` that is not a positive number."""
    if args.repeats < 1:
        raise UsageError(f"`--repeats` must be an integer >= 1; got {args.repeats}.")
    if not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise UsageError(f"`--time-budget` must be a finite number of seconds > 0; got {args.time_budget}.")


def save_csv(table: Any, path: Any, what: str) -> None:
    """Writes a subcommand's table to ``--csv`` (its folder made), and says so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print(f"Saved {what} to {path}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (JAX start-up is slow)."""
    # No abbreviations: `--output` (a path) must never be taken for a prefix of `--outputs` (O).
    parser = argparse.ArgumentParser(
        prog="nt-pntk",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print nt-pntk's version and those of jax, jaxlib and neural-tangents, and exit",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, epilog=EPILOG, allow_abbrev=False
        )
        if name == command:
            module = importlib.import_module(module_name)
            sub.description = module.__doc__
            module.add_arguments(sub)
            # The epilog is pre-wrapped: keep its lines whatever formatter the module chose.
            if sub.formatter_class is argparse.HelpFormatter:
                sub.formatter_class = argparse.RawDescriptionHelpFormatter
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; expected errors become one line on stderr and an exit code (see `EPILOG`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The subcommand is the first argument that is not an option (only -h/--help/--version come before it).
    command = next((a for a in argv if not a.startswith("-")), None)
    command = command if command in SUBCOMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return args._run(args)
    except KeyboardInterrupt:
        _show_traceback_if_asked()
        print(f"nt-pntk {args.command}: {INTERRUPTED}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = _exit_code(e)
        if code is None:  # a bug: Python's own traceback
            raise
        _show_traceback_if_asked()
        print(f"nt-pntk {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return code


def _exit_code(error: BaseException) -> int | None:
    """The exit code of an expected error, None for anything else (a bug)."""
    code = getattr(error, "exit_code", None)
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        return code
    if isinstance(error, (ValueError, OSError)):
        return EXIT_FAILURE
    return None


def _one_line(error: BaseException) -> str:
    """The error's message on one line; an OSError's names the path and the OS's reason."""
    if isinstance(error, OSError) and error.strerror:
        paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
        message = f"{paths}: {error.strerror}" if paths else error.strerror
    else:
        message = str(error) or type(error).__name__
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _show_traceback_if_asked() -> None:
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())

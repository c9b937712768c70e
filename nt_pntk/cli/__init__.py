"""The `nt-pntk` command: one subcommand per job, each defined in its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Any

# One type for every usage error (exit code 2): the library's checks raise it, with the option's name.
from nt_pntk._src.checks import UsageError  # noqa: F401 (the subcommands')
from nt_pntk._src.user_code import (  # noqa: F401 (the subcommands' helpers)
    UserCodeError,
    load_user_function,
    user_code_error,
)

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


def option_name(argument: str) -> str:
    """The option of a library argument, e.g. ``--n-train`` for ``n_train``: what the library's checks
    name in their errors when the command line passes its arguments on."""
    return "--" + argument.replace("_", "-")


def version_text() -> str:
    """``nt-pntk <version>`` and the installed versions of JAX, jaxlib and neural-tangents."""
    from nt_pntk._src import measure
    from nt_pntk._version import __version__

    dependencies = ", ".join(
        f"{name} {measure.installed_version(name)}" for name in measure.VERSIONED_DEPENDENCIES
    )
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
    """The exit code of an expected error, None for anything else (a bug).

    An error's own ``exit_code`` first: 2 for a `UsageError` (the library's checks raise it), 1 for a
    `UserCodeError`; then 1 for any other ValueError or OSError (a failure, e.g. JAX's).
    """
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

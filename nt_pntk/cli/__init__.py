"""The `nt-pntk` command: one subcommand per job, each defined in its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (JAX start-up is slow)."""
    parser = argparse.ArgumentParser(
        prog="nt-pntk",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
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
    # The subcommand is the first argument that is not an option (only -h/--help come before it).
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

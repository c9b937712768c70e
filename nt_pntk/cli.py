"""The `nt-pntk` command: one subcommand per job, each defined in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with `add_arguments(parser)` and `run(args) -> int`, one-line help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nt_pntk._demo", "eNTK vs pNTK on a stax CNN: time, peak memory, error"),
    "validate": ("nt_pntk._validate", "width sweeps that test the paper's convergence claims"),
    "kernel": ("nt_pntk._kernel_cmd", "a zoo model's pNTK on a dataset, tiled, to disk, resumable"),
    "compare": ("nt_pntk._compare", "the N×N approximations of the eNTK side by side"),
    "bench-report": ("nt_pntk._bench_report", "fitted scaling exponents from asv results"),
    "figure1": ("nt_pntk.figure1", "the paper's Figure 1: eNTK vs pNTK time for a pair over ResNet depths"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (JAX start-up is slow)."""
    parser = argparse.ArgumentParser(prog="nt-pntk", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            sub.description = module.__doc__
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())

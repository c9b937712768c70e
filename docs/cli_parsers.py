"""The `nt-pntk` parser with every subcommand's options, for the CLI reference (sphinx-argparse).

`nt_pntk.cli.build_parser` fills in only the subcommand being run (each imports its own
module); the reference needs them all, so each subcommand's parser is taken from the
parser built for it. The pages are thus generated from the parsers the command runs.
"""

from __future__ import annotations

import argparse

from nt_pntk.cli import EPILOG, SUBCOMMANDS, build_parser


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


def parser() -> argparse.ArgumentParser:
    """``nt-pntk``'s parser with every subcommand's options (the shared errors' epilog left to the page)."""
    whole = build_parser()
    for name in SUBCOMMANDS:
        sub = _subcommands(build_parser(name)).choices[name]
        if sub.epilog == EPILOG:
            sub.epilog = None
        _subcommands(whole).choices[name] = sub
    return whole

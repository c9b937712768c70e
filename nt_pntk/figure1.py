"""Deprecated: ``python -m nt_pntk.figure1`` is ``nt-pntk figure1`` (removed in the next release)."""

import sys

if __name__ == "__main__":
    from nt_pntk.cli import main, warn_deprecated

    # One line on stderr, as for the command line's renamed options (a DeprecationWarning from
    # a library module is hidden by Python's default filters).
    warn_deprecated("nt-pntk figure1", "python -m nt_pntk.figure1 is deprecated", "use nt-pntk figure1")
    sys.exit(main(["figure1", *sys.argv[1:]]))

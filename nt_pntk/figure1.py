"""Deprecated: ``python -m nt_pntk.figure1`` is ``nt-pntk figure1`` (removed in the next release)."""

import sys

if __name__ == "__main__":
    from nt_pntk._src import checks
    from nt_pntk.cli import main

    checks.deprecated("python -m nt_pntk.figure1", "nt-pntk figure1", stacklevel=1)
    sys.exit(main(["figure1", *sys.argv[1:]]))

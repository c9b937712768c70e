"""Deprecated: ``python -m nt_pntk.figure1`` is ``nt-pntk figure1`` (see `nt_pntk._src.deprecations`)."""

import sys

if __name__ == "__main__":
    from nt_pntk._src import deprecations
    from nt_pntk.cli import main

    deprecations.warn_script("nt_pntk.figure1")
    sys.exit(main(["figure1", *sys.argv[1:]]))

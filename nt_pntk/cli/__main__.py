"""``python -m nt_pntk.cli ...`` is ``nt-pntk ...``."""

import sys

from nt_pntk.cli import main

sys.exit(main())

"""`python -m dkl4dstem.cli` (as `python -m dkl4dstem` and the `dkl4dstem` command)."""
import sys

from dkl4dstem.cli import main

sys.exit(main())

import sys

from dkl4dstem.cli import main

sys.exit(main())

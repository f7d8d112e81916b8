"""`python -m pgmux` runs the command line."""

import sys

from pgmux.cli.main import main

sys.exit(main())

"""`python -m sbc` is the same as the `sbc` command."""

import sys

from sbc.cli import main

sys.exit(main())

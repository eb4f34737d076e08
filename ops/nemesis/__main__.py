"""``python -m ops.nemesis``: see ``ops.nemesis.cli``."""

import sys

from ops.nemesis.cli import main

sys.exit(main())

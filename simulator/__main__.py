"""``python -m simulator``: run the provider simulator (see :mod:`simulator.server`)."""

import sys

from simulator.server import main

sys.exit(main())

"""`python -m headend.sim`: the head-end simulator (same options as `jodo hes-sim`)."""

import sys

from headend.sim.cli import main

sys.exit(main())

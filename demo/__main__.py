"""``python -m demo`` is ``edge-demo`` (and ``edge-agent demo``)."""

import sys

from demo.cli import main

sys.exit(main())

"""``python -m demo`` is ``edge-demo`` (and what ``edge-agent demo`` execs)."""

import sys

from demo.cli import main

sys.exit(main())

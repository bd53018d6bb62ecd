"""``python -m bench [--quick] [--only B2,B5] [--long] [--write]``: see bench/run_all.py."""

import sys

from bench.run_all import main

sys.exit(main())

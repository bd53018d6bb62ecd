"""``python -m aggregator`` runs its CLI."""

import sys

from aggregator.cli import main

sys.exit(main())

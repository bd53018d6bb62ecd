"""``python -m aggregator`` runs its CLI."""

import sys

from aggregator.cli import main

if __name__ == "__main__":  # a spawned worker process (audit --jobs) imports this module again
    sys.exit(main())

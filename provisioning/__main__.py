"""``python -m provisioning`` runs its CLI."""

import sys

from provisioning.cli import main

sys.exit(main())

"""``python -m alphaswarm_client`` runs the CLI."""

import sys

from alphaswarm_client.cli import main

sys.exit(main())

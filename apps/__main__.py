"""`python -m apps` runs the `harness` command line."""

import sys

from apps.cli import main

sys.exit(main())

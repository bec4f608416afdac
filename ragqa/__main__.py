"""``python -m ragqa``: the command line."""

import sys

from ragqa.apps.cli import main

sys.exit(main())

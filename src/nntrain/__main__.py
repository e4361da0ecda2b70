"""``python -m nntrain``: see ``nntrain.cli``."""

import sys

from .cli import main

sys.exit(main())

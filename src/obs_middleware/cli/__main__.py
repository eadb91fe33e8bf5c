"""``python -m obs_middleware.cli``: the same as the ``obs`` command."""

import sys

from . import main

sys.exit(main())

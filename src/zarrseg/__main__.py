"""``python -m zarrseg``: the same as the ``zarrseg`` console script (used by workflow rules)."""

import sys

from .cli import main

sys.exit(main())

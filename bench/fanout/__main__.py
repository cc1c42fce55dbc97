"""``python -m bench.fanout [--quick] [--json PATH]``."""

import os

from . import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()

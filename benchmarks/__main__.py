"""``python -m benchmarks``: the kubegate benchmark harness (see benchmarks/harness.py)."""

import sys

from benchmarks.harness import main

sys.exit(main())

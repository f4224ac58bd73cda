"""Reliability tests share the e2e harness (tests/e2e/harness.py) and its fixtures."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))

from harness import _no_latest_hub, hub, make_node  # noqa: E402,F401

"""Fixtures for node <-> hub tests: the harness on the path, a hub per test."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import _no_latest_hub, hub, make_node  # noqa: E402,F401

"""Runs first on an ESP32 after every reset: keep it tiny; main.py starts the node.

Nothing here may fail: a broken boot.py locks the board out of its REPL.
"""

import gc

gc.collect()

"""The simulation the firmware runs on under the MicroPython unix port.

board.py is the simulated Board (board/__init__.py imports it everywhere
but on an ESP32), parts.py the simulated sensor parts at register level,
world.py the seeded park they measure, partition.py the app partitions and
the bootloader of a full-image update (esp32.Partition). Only the unix-port
bundle (`smartpark firmware build --board unix`) carries this package; the
ESP32 bundle leaves it out.

Importing the package is the simulated board's reset (a process is one
boot): once a full-image update has written otadata.json, the bootloader's
choice of app partition (partition.boot()) runs first, as an ESP32's does.
"""

import os

try:
    os.stat("otadata.json")
except OSError:
    pass
else:
    from sim import partition as _partition
    _partition.boot()

"""The simulation the firmware runs on under the MicroPython unix port.

board.py is the simulated Board (board/__init__.py imports it everywhere
but on an ESP32), parts.py the simulated sensor parts at register level,
world.py the seeded park they measure. Only the unix-port bundle
(`smartpark firmware build --board unix`) carries this package; the ESP32
bundle leaves it out.
"""

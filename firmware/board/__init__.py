"""The board layer: the one place that chooses real hardware or the simulation.

`Board` is board.esp32.Board on an ESP32 and sim.board.Board (simulated
buses and parts, seeded signals; the sim/ package) everywhere else. Nothing
else in the firmware looks at sys.platform. The simulation is imported only
in the branch that is not an ESP32, so an ESP32 never looks for it: its
bundle (`smartpark firmware build`, board esp32) does not carry sim/.

A Board offers: bus(sensor_cfg) -> the object a driver takes; rtc_ms(); ntp_ms(host);
rtc_memory() / rtc_memory_write(b); reset_cause(); unique_id();
network_up(cfg) -> bool; rssi(); watchdog(ms) -> object with feed();
deepsleep(ms) (does not return); background() -> coroutines to run
(simulated sensor activity); heap_free().

`partition()` is the class of the app partitions a full-image update writes
(otaimage.py): esp32.Partition, or off an ESP32 its simulation
(sim/partition.py), imported only when it is called.
"""

import sys

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

if sys.platform == "esp32":
    from board.esp32 import Board  # noqa: F401
else:
    from sim.board import Board  # noqa: F401


def partition():
    """esp32.Partition on an ESP32, else sim.partition.Partition (the unix port)."""
    if sys.platform == "esp32":
        from esp32 import Partition
    else:
        from sim.partition import Partition
    return Partition

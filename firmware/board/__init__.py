"""The board layer: the one place that chooses real hardware or the simulation.

`Board` is board.esp32.Board on an ESP32 and board.unix.Board (simulated
buses and parts, seeded signals) everywhere else. Nothing else in the
firmware looks at sys.platform.

A Board offers: bus(sensor_cfg) -> the object a driver takes; rtc_ms(); ntp_ms(host);
rtc_memory() / rtc_memory_write(b); reset_cause(); unique_id();
network_up(cfg) -> bool; rssi(); watchdog(ms) -> object with feed();
deepsleep(ms) (does not return); background() -> coroutines to run
(simulated sensor activity); heap_free().
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
    from board.unix import Board  # noqa: F401

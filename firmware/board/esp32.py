"""ESP32 board: machine.I2C/UART/Pin/ADC, onewire, network.WLAN, RTC memory, WDT, deep sleep.

Pins and bus numbers come from config.json ("bus": "i2c0" with pins sda/scl,
"uart2" with rx/tx, "ow" with data, pin drivers with "in" or trig/echo,
"adc" with "adc"). Buses are made once and shared between the sensors on them.
This file is only imported on an ESP32 (board/__init__.py); it is
type-checked on the host against micropython-esp32-stubs.
"""

import time

import machine
import network

_RTC = machine.RTC()
# seconds to add to time.time() to get Unix time (ports with a 2000 epoch)
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


class Board:
    name = "esp32"

    def __init__(self, sim=None):
        self._buses = {}
        self._wlan = None
        self._counted = False
        self.pin_woke = machine.wake_reason() == machine.EXT0_WAKE   # an edge of the wake input

    def now(self):
        return time.time() + _EPOCH_OFFSET

    def rtc_ms(self):
        return time.time_ns() // 1000000 + _EPOCH_OFFSET * 1000

    def rtc_memory(self):
        return _RTC.memory()

    def rtc_memory_write(self, data):
        _RTC.memory(data)

    def reset_cause(self):
        return machine.reset_cause()

    def unique_id(self):
        return "".join("%02x" % b for b in machine.unique_id())

    def network_up(self, wifi):
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
        if not self._wlan.isconnected() and wifi and self._wlan.status() != network.STAT_CONNECTING:
            self._wlan.connect(wifi["ssid"], wifi.get("password", ""))
        return self._wlan.isconnected()

    def ntp_ms(self, host):
        """Unix ms from an NTP server, or None. The RTC is not set: clock.py keeps
        a correction instead, so the RTC never jumps under stored readings."""
        try:
            import ntptime
            if host:
                ntptime.host = host
            return (ntptime.time() + _EPOCH_OFFSET) * 1000
        except (OSError, OverflowError, IndexError):
            return None

    def rssi(self):
        try:
            return self._wlan.status("rssi") if self._wlan else None
        except (OSError, ValueError):
            return None

    def heap_free(self):
        import gc
        return gc.mem_free()

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def deepsleep(self, ms, wake=None):
        """Sleep ms; wake=(GPIO, level): also wake on that RTC GPIO (ext0), to count an edge.
        A level still held (a closed S0 contact, a PIR's hold time) would wake the chip at
        once: wait up to 0.5 s for it to pass."""
        if wake is not None:
            import esp32
            pin = machine.Pin(wake[0], machine.Pin.IN)
            t0 = time.ticks_ms()
            while pin.value() == wake[1] and time.ticks_diff(time.ticks_ms(), t0) < 500:
                time.sleep_ms(1)
            esp32.wake_on_ext0(pin, esp32.WAKEUP_ANY_HIGH if wake[1] else esp32.WAKEUP_ALL_LOW)
        machine.deepsleep(ms)

    def sleep_events(self, driver, place):
        """1 for the wake input's edge that woke the chip (ext0), once per boot."""
        if self._counted or not self.pin_woke:
            return 0
        self._counted = True
        return 1

    def reset(self):
        machine.reset()

    def bus(self, sensor, place=0):
        drv = sensor["driver"]
        pins = sensor.get("pins", {})
        name = sensor.get("bus", "")
        if drv in ("bme280", "bmp280", "sht4x", "scd4x", "bh1750"):
            b = self._buses.get(name)
            if b is None:
                b = machine.I2C(int(name[3:] or 0), scl=machine.Pin(pins["scl"]),
                                sda=machine.Pin(pins["sda"]), freq=100000)
                self._buses[name] = b
            return b
        if drv == "pms5003":
            return machine.UART(int(name[4:] or 2), baudrate=9600, rx=pins["rx"], tx=pins["tx"])
        if drv == "ds18b20":
            b = self._buses.get(name)
            if b is None:
                import onewire
                b = onewire.OneWire(machine.Pin(pins["data"]))
                self._buses[name] = b
            return b
        if drv in ("pir", "pulse"):
            if drv == "pulse":   # S0 / reed contacts switch to ground
                return machine.Pin(pins["in"], machine.Pin.IN, machine.Pin.PULL_UP)
            return machine.Pin(pins["in"], machine.Pin.IN)
        if drv == "hcsr04":
            return (machine.Pin(pins["trig"], machine.Pin.OUT), machine.Pin(pins["echo"], machine.Pin.IN),
                    machine.time_pulse_us)
        if drv == "adc":
            return machine.ADC(machine.Pin(pins["adc"]), atten=machine.ADC.ATTN_11DB)
        raise ValueError("no bus for driver " + drv)

    def background(self):
        return ()

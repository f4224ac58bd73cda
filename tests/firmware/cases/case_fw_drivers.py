"""Drivers against simulated parts that answer at register level (CPython and MicroPython).

Expected values are worked from the datasheets' own examples, not from the
drivers: BMP280 section 3.12 (t_fine 128422, 25.08 degC, 100653.27 Pa),
SCD4x read_measurement example (0x01F4 0x33 / 0x6667 0xA2 / 0x5EB9 0x3C ->
500 ppm, 25 degC, 37 %RH), Sensirion CRC(0xBEEF) = 0x92, BH1750's 0x8390 ->
28067 lx, DS18B20 Table 1 (0x0191 = +25.0625, 0xFF5E = -10.125, 0xFC90 = -55),
Maxim AN27's ROM CRC example (02 1C B8 01 00 00 00 -> A2), HC-SR04 "us / 58 = cm".
"""

from drivers import E_BUS, E_CHIP, E_CRC, E_NOT_READY, E_RANGE, OK, load, sensirion_crc8
from drivers.ds18b20 import crc8_maxim
from sim import parts as sp


def approx(a, b, tol):
    assert a is not None, "no value"
    assert abs(a - b) <= tol, "%r != %r (+-%r)" % (a, b, tol)


def _bme(chip_id=0x58):
    bus = sp.SimI2C()
    part = sp.SimBME280(chip_id=chip_id)
    bus.devices[0x76] = part
    return bus, part, load("bmp280")(bus, {"address": 0x76})


def test_bmp280_datasheet_example():
    bus, part, d = _bme(0x58)
    assert d.status == OK and not d.humidity
    part.raw = (519888, 415148, 0)
    d.start()
    assert d.measure()
    tf, t = d.compensate_t(519888)
    assert tf == 128422
    assert t == 2508
    # datasheet: 100653.27 Pa (double formula); the 64-bit integer formula has
    # 1/256 Pa resolution and lands within a few hundredths of it
    approx(part._p(415148, part._t(519888)), 100653.27, 0.005)
    approx(d.compensate_p(415148, tf) / 256, 100653.27, 0.03)
    approx(d.temperature(), 25.08, 1e-9)
    approx(d.pressure(), 100653.27, 0.03)
    assert d.relative_humidity() is None


def test_bme280_humidity_matches_double_formula():
    bus, part, d = _bme(0x60)
    assert d.humidity
    part.raw = (519888, 415148, 30000)
    d.start()
    assert d.measure()
    # the datasheet's double-precision formula (section 8.1), computed by the part model
    expect = part._h(30000, part._t(519888))
    approx(d.relative_humidity(), expect, 0.01)


def test_bme280_sim_roundtrip():
    bus = sp.SimI2C()
    bus.devices[0x77] = sp.SimBME280(lambda: (21.37, 98765.0, 44.4))
    d = load("bme280")(bus, {"address": 0x77})
    d.start()
    assert d.measure()
    approx(d.value(0), 21.37, 0.02)
    approx(d.value(1), 98765.0, 2.0)
    approx(d.value(2), 44.4, 0.1)


def test_bme280_missing_and_wrong_chip():
    bus = sp.SimI2C()
    d = load("bme280")(bus, {"address": 0x76})
    assert d.status == E_BUS
    d.start()
    assert not d.measure() and d.value(0) is None
    bus.devices[0x76] = sp.SimBME280(chip_id=0x55)
    d = load("bme280")(bus, {"address": 0x76})
    assert d.status == E_CHIP
    assert not d.measure()


def test_bme280_bus_fault_sets_flag_then_recovers():
    bus, part, d = _bme(0x60)
    part.raw = (519888, 415148, 30000)
    bus.fault_rate = 1.0
    d.start()
    assert not d.measure()
    assert d.status == E_BUS and d.temperature() is None
    bus.fault_rate = 0.0
    d.start()
    assert d.measure() and d.status == OK


def test_sensirion_crc_examples():
    assert sensirion_crc8(b"\xbe\xef") == 0x92
    assert sensirion_crc8(b"\x01\xf4") == 0x33
    assert sensirion_crc8(b"\x66\x67") == 0xA2
    assert sensirion_crc8(b"\x5e\xb9") == 0x3C


def test_sht4x():
    bus = sp.SimI2C()
    part = sp.SimSHT4x()
    bus.devices[0x44] = part
    d = load("sht4x")(bus, {})
    part.raw = (0x6666, 0x8000)
    assert d.start() > 0
    assert d.measure()
    approx(d.temperature(), -45 + 175 * 0x6666 / 65535, 1e-9)   # 24.999 degC
    approx(d.relative_humidity(), -6 + 125 * 0x8000 / 65535, 1e-9)
    part.raw = (0x6666, 0xFFFF)
    d.start()
    d.measure()
    assert d.relative_humidity() == 100.0   # cropped (section 4.6)
    part.corrupt = True
    d.start()
    assert not d.measure() and d.status == E_CRC and d.temperature() is None


def test_scd4x_datasheet_example():
    bus = sp.SimI2C()
    part = sp.SimSCD4x()
    bus.devices[0x62] = part
    d = load("scd4x")(bus, {})
    part.raw = (0x01F4, 0x6667, 0x5EB9)
    d.start()
    assert d.measure(), d.status
    assert d.co2() == 500
    approx(d.value(1), 25.0, 0.01)
    approx(d.value(2), 37.0, 0.01)


def test_scd4x_not_ready():
    bus = sp.SimI2C()
    t = [100.0]
    part = sp.SimSCD4x(lambda: (800, 22.0, 40.0), clock=lambda: t[0])
    bus.devices[0x62] = part
    d = load("scd4x")(bus, {})
    d.start()
    assert not d.measure() and d.status == E_NOT_READY   # datasheet 3.5.1: first sample after 5 s
    t[0] += 5.0
    d.start()
    assert d.measure()
    approx(d.co2(), 800, 0)
    t[0] += 2.0
    d.start()
    assert not d.measure() and d.status == E_NOT_READY and d.co2() is None
    t[0] += 3.5
    d.start()
    assert d.measure()


def test_scd4x_single_shot():
    bus = sp.SimI2C()
    t = [100.0]
    part = sp.SimSCD4x(lambda: (650, 21.0, 45.0), clock=lambda: t[0])
    bus.devices[0x62] = part
    d = load("scd4x")(bus, {"single_shot": True})
    assert d.start() == 5000                   # datasheet 3.10.1: max. 5000 ms
    t[0] += 1.0
    assert not d.measure() and d.status == E_NOT_READY and d.co2() is None
    assert d.start() == 5000
    t[0] += 5.0
    assert d.measure(), d.status
    approx(d.co2(), 650, 0)
    approx(d.value(1), 21.0, 0.01)
    assert not part._periodic                  # never left measuring between wake-ups
    t[0] += 5.0                                # no new shot asked for: nothing to read
    assert not d.measure() and d.status == E_NOT_READY


def test_scd4x_single_shot_stops_a_part_left_in_periodic_mode():
    bus = sp.SimI2C()
    t = [0.0]
    part = sp.SimSCD4x(lambda: (900, 20.0, 50.0), clock=lambda: t[0], periodic=True)
    bus.devices[0x62] = part
    d = load("scd4x")(bus, {"single_shot": True})
    assert d.start() == 0 and d.status == E_BUS    # NACKed: the part is measuring
    assert not d.measure() and d.status == E_BUS
    assert d.start() == 500 and not part._periodic    # stop_periodic (3.5.3): 500 ms
    assert not d.measure() and d.status == E_NOT_READY
    assert d.start() == 5000                           # then the shot
    t[0] += 5.0
    assert d.measure() and d.co2() == 900


def test_bh1750_datasheet_example():
    bus = sp.SimI2C()
    part = sp.SimBH1750()
    bus.devices[0x23] = part
    d = load("bh1750")(bus, {})
    part.raw = 0x8390
    d.start()
    assert d.measure()
    approx(d.lux(), 28066.67, 0.01)


def test_pms5003_frame_and_checksum():
    u = sp.SimUART()
    d = load("pms5003")(u, {"warmup_ms": 0, "sleep": False})
    assert not d.measure() and d.status == E_NOT_READY   # not woken yet
    assert d.start() == 0 and u.wakes == 1
    assert not d.measure() and d.status == E_NOT_READY   # no frame yet
    good = sp.pms5003_frame((5, 9, 12), (4, 8, 11))
    # frame layout per Appendix I: 0x42 0x4d, length 28, check = sum of first 30 bytes
    assert good[0:4] == b"\x42\x4d\x00\x1c" and len(good) == 32
    s = 0
    for b in good[0:30]:
        s += b
    assert (good[30] << 8) | good[31] == s
    u.feed(b"\x00\x13\x42" + good[5:] + good)   # garbage and a torn frame first
    assert d.measure()
    assert (d.value(0), d.value(1), d.value(2)) == (4, 8, 11)
    bad = bytearray(sp.pms5003_frame((1, 2, 3), (1, 2, 3)))
    bad[12] ^= 0x40
    u.feed(bytes(bad))
    assert not d.measure() and d.status == E_CRC and d.pm25() is None


def test_ds18b20_table1_and_crc():
    assert crc8_maxim(b"\x02\x1c\xb8\x01\x00\x00\x00") == 0xA2   # Maxim AN27 example
    ow = sp.SimOneWire()
    part = sp.SimDS18B20()
    ow.devices.append(part)
    d = load("ds18b20")(ow, {})
    for raw, expect in ((0x0191, 25.0625), (0xFF5E, -10.125), (0xFC90, -55.0), (0x07D0, 125.0),
                        (0x0008, 0.5), (0xFFF8, -0.5)):
        part.forced = raw
        assert d.start() == 750
        assert d.measure(), d.status
        assert d.temperature() == expect, (hex(raw), d.temperature())
    # Match ROM with the part's own ROM code
    rom = "".join("%02x" % b for b in part.rom)
    d2 = load("ds18b20")(ow, {"rom": rom})
    d2.start()
    assert d2.measure() and d2.temperature() == -0.5
    d3 = load("ds18b20")(ow, {"rom": "28ffffffffffff00"})
    d3.start()
    assert not d3.measure() and d3.status == E_CRC   # nobody answers: bus reads all ones


def test_ds18b20_absent():
    d = load("ds18b20")(sp.SimOneWire(), {})
    d.start()
    assert not d.measure() and d.status == E_BUS


def test_pir_counts_events_per_interval():
    pin = sp.SimPin()
    d = load("pir")(pin, {})
    pin.fire(3)
    assert d.measure() and d.value(0) == 3 and d.value(1) is True
    assert d.measure() and d.value(0) == 0 and d.value(1) is False
    pin.value(1)
    assert d.measure() and d.value(0) == 0 and d.value(1) is True


def test_pulse_sum_and_debounce():
    pin = sp.SimPin()
    d = load("pulse")(pin, {"per_pulse": 0.001, "unit": "m3", "start": 1000, "debounce_ms": 0})
    assert d.FIELDS[0] == ("total", "m3", "s")
    pin.fire(5)
    assert d.measure()
    approx(d.value(0), 1.005, 1e-9)
    d2 = load("pulse")(sp.SimPin(), {"debounce_ms": 1000})
    d2._pin.fire(4)    # four edges within the same millisecond: contact bounce, one pulse
    assert d2.total() == 0 or d2.total() == 1


def test_hcsr04_distance_and_occupancy():
    dist = [0.5]
    r = sp.SimRanger(lambda: dist[0])
    d = load("hcsr04")((r.trig, r.echo, r.time_pulse_us), {"occupied_below_m": 1.0})
    assert d.measure()
    approx(d.value(0), 0.5, 0.001)
    assert d.value(1) is True
    # manual: 58 us per cm  ->  2.00 m is ~11600 us of echo
    dist[0] = 2.0
    assert d.measure()
    approx(d.value(0) * 100, 11661 / 58.0, 1.5)
    assert d.value(1) is False
    dist[0] = None
    assert d.measure() and d.status == E_RANGE and d.value(0) is None and d.value(1) is False


def test_adc_battery_and_soil():
    a = sp.SimADC()
    a.raw_uv = 1850000
    d = load("adc")(a, {"kind": "battery", "divider": 2.0})
    assert d.FIELDS[0][0] == "vbat"
    assert d.measure()
    approx(d.value(0), 3.70, 1e-9)
    s = load("adc")(a, {"kind": "soil", "dry_uv": 2200000, "wet_uv": 1000000})
    a.raw_uv = 1600000
    assert s.measure()
    approx(s.value(0), 50.0, 1e-9)
    a.raw_uv = 2500000
    s.measure()
    assert s.value(0) == 0.0


def test_pms5003_sleeps_between_readings_and_waits_its_warm_up():
    import time

    from drivers import wait_ms
    u = sp.SimUART(lambda: (10, 20, 30), clock=time.time, warmup_s=0.3)
    u.write(u.SLEEP)                       # as the node left it before a deep sleep
    d = load("pms5003")(u, {"warmup_ms": 300})
    wait = d.start()
    assert u.wakes == 1 and not u.asleep
    assert 2700 < wait <= 2800, wait      # warm-up + the longest gap between frames
    assert not d.measure() and d.status == E_NOT_READY   # too early: the fan has not settled
    wait_ms(wait)
    assert d.measure(), d.status
    assert u.unsettled >= 1               # the part did send frames during its warm-up...
    assert (d.value(0), d.value(1), d.value(2)) == (10, 20, 30)   # ...and none was taken
    assert u.asleep and u.sleeps == 2     # back to sleep after the reading
    assert d.start() > 2700               # the next reading waits a whole warm-up again

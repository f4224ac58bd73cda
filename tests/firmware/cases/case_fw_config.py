"""config.json validation: every fault is reported with the key at fault (both interpreters).

The rules are protocol/configschema.py's; test_shared_configs runs its one list of good and
bad configs (tests/protocol/cases/case_configschema.py) through the firmware's own
config.validate, which the hub and `smartpark flash` agree with too.
"""

import sys

import config
import drivers
from smartpark.protocol import configschema


def _shared_cases():
    try:
        import case_configschema
    except ImportError:  # beside tests/firmware/cases: tests/protocol/cases
        here = __file__.replace("\\", "/").rsplit("/", 1)[0]
        sys.path.append(here + "/../../protocol/cases")
        import case_configschema
    return case_configschema


def _base(**kw):
    c = {"node": "n1", "hub": "10.0.0.2:5683",
         "sensors": [{"name": "air", "driver": "bme280", "bus": "i2c0", "pins": {"sda": 21, "scl": 22},
                      "params": {"address": 0x76}, "interval": 10}]}
    c.update(kw)
    return c


def _key(raw):
    try:
        config.validate(raw)
    except config.ConfigError as e:
        assert e.key in str(e)
        return e.key
    raise AssertionError("accepted %r" % (raw,))


def test_valid_and_defaults():
    c = config.validate(_base())
    assert c["report_interval"] == 30 and c["outbox_size"] == 2000 and c["deep_sleep"] == "off"
    assert c["coap"] == {"ack_timeout": 2.0, "ack_random_factor": 1.5, "max_retransmit": 4}
    assert c["sensors"][0]["params"]["address"] == 0x76
    assert config.parse_hub("auto") is None
    assert config.parse_hub("hub.local") == ("hub.local", 5683)
    assert config.parse_hub("[fd00::1]:6000") == ("fd00::1", 6000)
    assert config.parse_hub("fd00::1") == ("fd00::1", 5683)


def test_faults_name_their_key():
    cases = [
        ({"hub": "x"}, None),
        ([], "(top)"),
        ({"node": "bad id!"}, "node"),
        ({"nodee": 1}, "nodee"),
        ({"hub": "h:99999"}, "hub"),
        ({"hub": "[::1"}, "hub"),
        ({"report_interval": 0}, "report_interval"),
        ({"report_interval": True}, "report_interval"),
        ({"outbox_size": 5}, "outbox_size"),
        ({"deep_sleep": "sometimes"}, "deep_sleep"),
        ({"wifi": {"ssid": ""}}, "wifi.ssid"),
        ({"wifi": {"ssid": "park", "password": 5}}, "wifi.password"),
        ({"coap": {"ack_timeout": 0}}, "coap.ack_timeout"),
        ({"coap": {"max_retransmit": 11}}, "coap.max_retransmit"),
        ({"coap": {"nstart": 2}}, "coap.nstart"),
        ({"watchdog_ms": 100}, "watchdog_ms"),
        ({"sensors": {}}, "sensors"),
    ]
    for over, key in cases:
        raw = _base(**over) if isinstance(over, dict) else over
        if key is None:
            config.validate(raw)
            continue
        assert _key(raw) == key, (over, _key(raw))
    del_node = _base()
    del del_node["node"]
    assert _key(del_node) == "node"


def test_sensor_faults_name_their_key():
    def s(**kw):
        d = {"name": "air", "driver": "bme280", "pins": {"sda": 21, "scl": 22}}
        d.update(kw)
        return _base(sensors=[{"name": "ok", "driver": "sht4x"}, d])
    assert _key(s(driver="bme681")) == "sensors[1].driver"
    assert _key(s(name="")) == "sensors[1].name"
    assert _key(s(name="ok")) == "sensors[1].name"            # duplicate
    assert _key(s(name="health")) == "sensors[1].name"        # reserved for health readings
    assert _key(s(pins={"sda": 49})) == "sensors[1].pins.sda"
    assert _key(s(pins={"mosi": 3})) == "sensors[1].pins.mosi"
    assert _key(s(bus="uart1")) == "sensors[1].bus"
    assert _key(s(params={"address": 0x80})) == "sensors[1].params.address"
    assert _key(s(interval=0)) == "sensors[1].interval"
    assert _key(s(colour="red")) == "sensors[1].colour"
    assert _key(_base(sensors=[{"name": "t", "driver": "ds18b20", "bus": "ow",
                                "params": {"rom": "28zz"}}])) == "sensors[0].params.rom"
    assert _key(_base(sensors=[{"name": "b", "driver": "adc", "bus": "adc",
                                "params": {"kind": "wind"}}])) == "sensors[0].params.kind"
    assert _key(_base(sensors=[{"name": "m", "driver": "pulse", "bus": "pin",
                                "params": {"per_pulse": -1}}])) == "sensors[0].params.per_pulse"
    assert _key(_base(sensors=[{"name": "c", "driver": "scd4x", "bus": "i2c0",
                                "params": {"single_shot": 1}}])) == "sensors[0].params.single_shot"


def test_load_and_atomic_save():
    import os
    for n in ("config.json", "config.json.tmp"):
        try:
            os.remove(n)
        except OSError:
            pass
    cfg, err = config.load()
    assert cfg is None and err.key == "(file)"
    with open("config.json", "w") as f:
        f.write('{"node": "n1", ')
    cfg, err = config.load()
    assert err.key == "(file)" and "JSON" in err.why
    config.save(_base(report_interval=5))
    cfg, err = config.load()
    assert err is None and cfg["report_interval"] == 5
    config.save({"node": "n1", "hub": 7})
    raw, err = config.load()
    assert err.key == "hub" and raw["node"] == "n1"


def test_names_must_be_senml_names():
    assert _key(_base(node="_n1")) == "node"
    assert _key(_base(sensors=[{"name": "-x", "driver": "sht4x"}])) == "sensors[0].name"
    config.validate(_base(node="9n", sensors=[{"name": "0x", "driver": "sht4x"}]))


def test_shared_configs():
    cases = _shared_cases()
    for doc in cases.GOOD:
        config.validate(cases.full(doc))
    for doc, key in cases.BAD:
        assert _key(cases.full(doc)) == key, (doc, key)
    for doc, key in cases.BAD_FILES:
        assert _key(doc) == key, (doc, key)


def test_the_schema_is_the_firmwares():
    assert config.ConfigError is configschema.ConfigError and config.parse_hub is configschema.parse_hub
    assert config.valid_ident is configschema.valid_ident
    for raw in (_base(), _base(report_interval=5, sensors=[]), {"node": "n1"}):
        assert config.validate(raw) == configschema.validate(raw)
        assert config.validate(raw, True) == configschema.validate(raw, True)


def test_the_schema_leaves_the_heap_after_a_validation():
    config.validate(_base())
    try:
        config.validate(_base(report_interval=-1))
    except config.ConfigError as e:
        assert e.key == "report_interval"
    else:
        raise AssertionError("a negative interval was accepted")
    # MicroPython: the ~20 KB schema is unloaded again (compat.unload); CPython keeps it
    loaded = "smartpark.protocol.configschema" in sys.modules
    assert loaded == (sys.implementation.name != "micropython")
    # every driver the schema allows has code here, and every driver here is in the schema
    assert sorted(drivers.MODULES) == sorted(configschema.DRIVERS)

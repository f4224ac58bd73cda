"""protocol/configschema.py, the node-config schema (both interpreters), and the one list of
good and bad node configs that every checker must agree on.

GOOD and BAD are overlays: the node checks dict(doc, node="n1"), the hub the
overlay itself (hub/rules.py config_error), `smartpark flash` make_config
with the overlay as --set. The same lists run through the firmware's
config.validate under micropython (tests/firmware/cases/case_fw_config.py),
the hub (tests/hub/test_input_rules.py) and tools/nodeconfig.py
(tests/tools/test_nodeconfig.py). Each BAD entry names the key at fault.
"""

from smartpark.protocol import configschema as schema


def _s(**kw):
    d = {"name": "air", "driver": "bme280", "bus": "i2c0", "pins": {"sda": 21, "scl": 22}}
    d.update(kw)
    return {"sensors": [d]}


PARK_SENSORS = [
    {"name": "air", "driver": "bme280", "bus": "i2c0", "pins": {"sda": 21, "scl": 22},
     "params": {"address": 118}},
    {"name": "co2", "driver": "scd4x", "bus": "i2c0", "pins": {"sda": 21, "scl": 22},
     "interval": 30, "params": {"single_shot": True}},
    {"name": "pm", "driver": "pms5003", "bus": "uart2", "pins": {"rx": 16, "tx": 17}},
    {"name": "bay1", "driver": "hcsr04", "bus": "pin", "pins": {"trig": 5, "echo": 18},
     "params": {"occupied_below_m": 1.0}},
    {"name": "meter", "driver": "pulse", "bus": "pin", "pins": {"in": 27},
     "params": {"per_pulse": 3600, "unit": "J"}},
    {"name": "soil", "driver": "adc", "pins": {"adc": 34}, "params": {"kind": "soil"}},
    {"name": "ground", "driver": "ds18b20", "bus": "ow", "pins": {"data": 4},
     "params": {"rom": "28ff4a1b2c3d4e5f"}},
    {"name": "9lux", "driver": "bh1750"},
    {"name": "door", "driver": "pir", "interval": None},
]

GOOD = [
    {},
    {"report_interval": 30},
    {"report_interval": 1.5, "health_every": 5, "deep_sleep": "between_reports"},
    {"coap": {"ack_timeout": 1.0, "max_retransmit": 3}, "lifetime": 600, "watchdog_ms": 0},
    {"coap": None, "wifi": None, "sim": None},
    {"sensors": [{"name": "temp", "driver": "sht4x", "bus": "i2c0",
                  "pins": {"sda": 21, "scl": 22}}]},
    {"sensors": PARK_SENSORS},
    {"sensors": []},
    {"hub": "auto"},
    {"hub": "10.0.0.2:5683"},
    {"hub": "hub.local"},
    {"hub": "[fd00::1]:6000"},
    {"hub": "[fd00::1]"},
    {"hub": "fd00::1"},
    {"hub_mdns": "hub.local", "hub_port": 5684, "batch_max": 200, "outbox_size": 16},
    {"wifi": {"ssid": "park-iot", "password": "s3cret-pass"}},
    {"wifi": {"ssid": "open"}},
    {"ntp": "pool.ntp.org", "ledger": True},
    {"ntp": True, "ledger": False},
    {"watchdog_ms": 5000, "config_version": 4294967295},
    {"sim": {"seed": 3, "indoor": True}},
]

BAD = [
    ({"report_interval": 0}, "report_interval"),
    ({"report_interval": 86401}, "report_interval"),
    ({"report_interval": "30"}, "report_interval"),
    ({"report_interval": True}, "report_interval"),
    ({"report_interval": None}, "report_interval"),
    ({"batch_max": 1.5}, "batch_max"),
    ({"lifetime": 5}, "lifetime"),
    ({"outbox_size": 5}, "outbox_size"),
    ({"config_version": -1}, "config_version"),
    ({"hub_port": 0}, "hub_port"),
    ({"health_every": 1001}, "health_every"),
    ({"watchdog_ms": 100}, "watchdog_ms"),
    ({"watchdog_ms": 600001}, "watchdog_ms"),
    ({"deep_sleep": "sometimes"}, "deep_sleep"),
    ({"hub": "h:99999"}, "hub"),
    ({"hub": "h:+80"}, "hub"),
    ({"hub": "h:"}, "hub"),
    ({"hub": ":80"}, "hub"),
    ({"hub": "[::1"}, "hub"),
    ({"hub": "[::1]x"}, "hub"),
    ({"hub": ""}, "hub"),
    ({"hub": "a b"}, "hub"),
    ({"hub": 7}, "hub"),
    ({"hub_mdns": 5}, "hub_mdns"),
    ({"ntp": 5}, "ntp"),
    ({"ledger": 1}, "ledger"),
    ({"sim": []}, "sim"),
    ({"led": False}, "led"),
    ({"nodee": 1}, "nodee"),
    ({"coap": {"max_retransmit": 11}}, "coap.max_retransmit"),
    ({"coap": {"ack_timeout": 0}}, "coap.ack_timeout"),
    ({"coap": {"ack_random_factor": 0.5}}, "coap.ack_random_factor"),
    ({"coap": {"nope": 1}}, "coap.nope"),
    ({"coap": 5}, "coap"),
    ({"wifi": {"ssid": ""}}, "wifi.ssid"),
    ({"wifi": {"password": "s3cret-pass"}}, "wifi.ssid"),
    ({"wifi": {"ssid": "x" * 33}}, "wifi.ssid"),
    ({"wifi": {"ssid": "park", "password": 5}}, "wifi.password"),
    ({"wifi": {"ssid": "park", "bssid": "aa:bb"}}, "wifi.bssid"),
    ({"wifi": "park"}, "wifi"),
    ({"sensors": {}}, "sensors"),
    ({"sensors": [{"name": "s%d" % i, "driver": "pir"} for i in range(33)]}, "sensors"),
    ({"sensors": [1]}, "sensors[0]"),
    ({"sensors": [{"name": "a", "driver": "pir"}, {"name": "a", "driver": "pir"}]},
     "sensors[1].name"),
    (_s(name="health"), "sensors[0].name"),
    (_s(name=""), "sensors[0].name"),
    (_s(name="bad name"), "sensors[0].name"),
    (_s(name="-x"), "sensors[0].name"),
    (_s(name="t\u00e9"), "sensors[0].name"),
    (_s(name="x" * 25), "sensors[0].name"),
    ({"sensors": [{"driver": "pir"}]}, "sensors[0].name"),
    (_s(driver="bme681"), "sensors[0].driver"),
    ({"sensors": [{"name": "a"}]}, "sensors[0].driver"),
    (_s(bus="uart1"), "sensors[0].bus"),
    (_s(bus=0), "sensors[0].bus"),
    (_s(pins={"sda": 99}), "sensors[0].pins.sda"),
    (_s(pins={"sda": -1}), "sensors[0].pins.sda"),
    (_s(pins={"sda": True}), "sensors[0].pins.sda"),
    (_s(pins={"mosi": 3}), "sensors[0].pins.mosi"),
    ({"sensors": [{"name": "d", "driver": "pir", "pins": {"sda": 3}}]}, "sensors[0].pins.sda"),
    (_s(pins=[21, 22]), "sensors[0].pins"),
    (_s(params=[]), "sensors[0].params"),
    (_s(params={"address": 0x80}), "sensors[0].params.address"),
    (_s(params={"address": None}), "sensors[0].params.address"),
    (_s(interval=0), "sensors[0].interval"),
    (_s(interval="10"), "sensors[0].interval"),
    (_s(colour="red"), "sensors[0].colour"),
    ({"sensors": [{"name": "t", "driver": "ds18b20", "bus": "ow", "params": {"rom": "28zz"}}]},
     "sensors[0].params.rom"),
    ({"sensors": [{"name": "b", "driver": "adc", "params": {"kind": "wind"}}]},
     "sensors[0].params.kind"),
    ({"sensors": [{"name": "m", "driver": "pulse", "params": {"per_pulse": -1}}]},
     "sensors[0].params.per_pulse"),
    ({"sensors": [{"name": "c", "driver": "scd4x", "params": {"single_shot": 1}}]},
     "sensors[0].params.single_shot"),
]

# only a whole config.json can have these faults (the hub checks overlays, without "node")
BAD_FILES = [
    ([], "(top)"),
    ("{}", "(top)"),
    ({"report_interval": 5}, "node"),
    ({"node": "bad id!"}, "node"),
    ({"node": "_n1"}, "node"),
    ({"node": "x" * 33}, "node"),
    ({"node": 7}, "node"),
]


def full(doc):
    c = {"node": "n1"}
    c.update(doc)
    return c


def fault(fn, arg):
    """The key ConfigError names (checking that its message names it too), or None."""
    try:
        fn(arg)
    except schema.ConfigError as e:
        assert e.key in str(e) and str(e) == "config key %s: %s" % (e.key, e.why), str(e)
        return e.key
    return None


def test_good_configs():
    for doc in GOOD:
        assert fault(schema.validate, full(doc)) is None, doc
        assert fault(lambda d: schema.validate(d, partial=True), doc) is None, doc


def test_bad_configs_name_their_key():
    for doc, key in BAD:
        got = fault(schema.validate, full(doc))
        assert got == key, (doc, key, got)
        got = fault(lambda d: schema.validate(d, partial=True), doc)
        assert got == key, (doc, key, got)


def test_bad_files_name_their_key():
    for doc, key in BAD_FILES:
        got = fault(schema.validate, doc)
        assert got == key, (doc, key, got)


def test_defaults_filled_in():
    c = schema.validate({"node": "n1", "sensors": [{"name": "t", "driver": "sht4x"},
                                                   {"name": "o", "driver": "ds18b20"}]})
    want = {"hub": "auto", "hub_mdns": "smartpark-hub.local", "hub_port": 5683,
            "report_interval": 30, "wifi": None, "deep_sleep": "off", "outbox_size": 2000,
            "config_version": 0, "lifetime": 3600, "health_every": 1, "batch_max": 40,
            "ntp": False, "watchdog_ms": 60000, "ledger": False, "sim": None, "node": "n1",
            "coap": {"ack_timeout": 2.0, "ack_random_factor": 1.5, "max_retransmit": 4},
            "battery": {"low_v": 0, "interval_factor": 4},
            "ota": {"blocks_per_wake": 64, "min_battery": 3.4, "flash_margin": 65536,
                    "trial_boots": 3, "retries": 3}}
    sensors = c.pop("sensors")
    assert c == want, c
    assert sensors[0] == {"name": "t", "driver": "sht4x", "bus": "i2c0", "pins": {},
                          "params": {}}, sensors[0]
    assert sensors[1]["bus"] == "onewire" and "interval" not in sensors[1]
    w = schema.validate(full({"wifi": {"ssid": "park"}, "coap": {"max_retransmit": 2}}))
    assert w["wifi"] == {"ssid": "park", "password": ""}
    assert w["coap"] == {"ack_timeout": 2.0, "ack_random_factor": 1.5, "max_retransmit": 2}
    # a partial check fills in nothing
    assert schema.validate({"report_interval": 5}, partial=True) == {"report_interval": 5}


def test_validate_does_not_touch_its_input():
    raw = full({"sensors": [{"name": "t", "driver": "sht4x", "pins": {"sda": 1}}]})
    c = schema.validate(raw)
    c["sensors"][0]["pins"]["scl"] = 2
    c["sensors"][0]["params"]["x"] = 1
    assert raw["sensors"][0] == {"name": "t", "driver": "sht4x", "pins": {"sda": 1}}
    again = schema.validate(full({"sensors": [{"name": "t", "driver": "sht4x"}]}))
    assert again["sensors"][0]["pins"] == {} and again["sensors"][0]["params"] == {}


def test_messages():
    def why(doc):
        try:
            schema.validate(full(doc))
        except schema.ConfigError as e:
            return str(e)
        raise AssertionError("accepted %r" % (doc,))
    assert why({"report_interval": 0}) == "config key report_interval: must be between 1 and 86400"
    assert why({"batch_max": 1.5}) == "config key batch_max: must be an integer"
    assert why({"watchdog_ms": 100}) == "config key watchdog_ms: must be 0 (off) or at least 5000"
    assert why({"deep_sleep": "x"}) == 'config key deep_sleep: must be "off" or "between_reports"'
    assert why({"coap": {"ack_timeout": 0}}) == \
        "config key coap.ack_timeout: must be between 0.01 and 60"
    assert why({"wifi": {"ssid": ""}}) == "config key wifi.ssid: must be a string of 1-32 characters"
    assert why({"wifi": {"ssid": "a", "password": 5}}) == \
        "config key wifi.password: must be a string of at most 64 characters"
    assert why({"led": 1}) == "config key led: unknown key"
    assert why({"hub": "[::1"}) == "config key hub: unclosed [ in IPv6 address"
    assert why(_s(pins={"sda": 99})) == "config key sensors[0].pins.sda: must be a GPIO number 0..48"
    assert why(_s(params={"address": 0x80})) == \
        "config key sensors[0].params.address: must be a 7-bit I2C address 0x08..0x77"
    assert why(_s(bus="uart1")) == "config key sensors[0].bus: driver bme280 needs a i2c bus"
    assert why(_s(driver="x")).startswith("config key sensors[0].driver: unknown driver 'x' (known: adc, ")
    try:
        schema.validate({"report_interval": 5})
        raise AssertionError("accepted a config without node")
    except schema.ConfigError as e:
        assert str(e) == "config key node: missing"


def test_parse_hub():
    assert schema.parse_hub("auto") is None
    assert schema.parse_hub("hub.local") == ("hub.local", 5683)
    assert schema.parse_hub("10.0.0.2:6000") == ("10.0.0.2", 6000)
    assert schema.parse_hub("[fd00::1]:6000") == ("fd00::1", 6000)
    assert schema.parse_hub("[fd00::1]") == ("fd00::1", 5683)
    assert schema.parse_hub("fd00::1") == ("fd00::1", 5683)
    assert schema.parse_hub("h:00080") == ("h", 80)
    for bad in ("h:65536", "h:0", "h:8_0", "h:\u0661", "[]:80", "[x]:", "h:123456"):
        assert fault(schema.parse_hub, bad) == "hub", bad


def test_idents_are_ascii():
    assert schema.valid_ident("park-n17") and schema.valid_ident("9n_x")
    assert schema.valid_ident("x" * 32) and not schema.valid_ident("x" * 33)
    assert schema.valid_ident("abc", 3) and not schema.valid_ident("abcd", 3)
    for bad in ("", "_n", "-n", "n/1", "n 1", "n.1", "\u00e9t\u00e9", "n\u0661", None, 5):
        assert not schema.valid_ident(bad), bad


def test_tables_are_well_formed():
    for table in (schema.KEYS, schema.COAP, schema.WIFI, schema.SENSOR, schema.PARAMS):
        names = [row[0] for row in table]
        assert len(names) == len(set(names)), names
        for row in table:
            assert len(row) == 5 and callable(row[1]), row
    for drv, kind in schema.DRIVERS.items():
        assert kind in schema.BUSES, drv
        assert schema.pin_names(drv)
    for drv in schema.OWN_PINS:
        assert drv in schema.DRIVERS

"""tools/nodeconfig.py: the config.json `smartpark flash` writes passes the node-config schema.

make_config() checks its result with protocol/configschema.py, so it agrees with the node
and the hub on the one list of good and bad configs (tests/protocol/cases/
case_configschema.py); check_config() asks the firmware itself under micropython.
"""

import json
import os
import sys

import pytest
from smartpark.tools import nodeconfig
from toolhelp import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "protocol", "cases"))
import case_configschema as shared  # noqa: E402


def _make(doc):
    return nodeconfig.make_config("n1", extra=dict(doc))


def test_make_config_agrees_on_the_shared_configs():
    for doc in shared.GOOD:
        cfg = _make(doc)
        # as given (hub "auto" when none is): the node fills in the defaults
        assert cfg == dict(shared.full({"hub": "auto"}), **doc), cfg
    for doc, key in shared.BAD:
        with pytest.raises(nodeconfig.ConfigError) as e:
            _make(doc)
        assert "config key %s: " % key in str(e.value), (doc, str(e.value))
        assert str(e.value).startswith("the firmware rejects this config: ")


def test_node_ids_follow_the_schema():
    for good in ("n1", "park-n17", "9n_x", "x" * 32):
        assert nodeconfig.check_node_id(good) == good
    for bad in ("_n1", "-n1", "bad/id", "x" * 33, "", "\u00e9t\u00e9"):
        with pytest.raises(nodeconfig.ConfigError) as e:
            nodeconfig.check_node_id(bad)
        assert "node id %r" % bad in str(e.value)


def test_sensors_file_drivers_are_the_schemas(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"name": "t", "driver": "sht4x"}]))
    assert nodeconfig.load_sensors(str(path)) == [{"name": "t", "driver": "sht4x"}]
    path.write_text(json.dumps([{"name": "t", "driver": "flux"}]))
    with pytest.raises(nodeconfig.ConfigError) as e:
        nodeconfig.load_sensors(str(path))
    assert "unknown driver 'flux' (known: adc, bh1750, " in str(e.value)


def test_default_port_is_the_schemas():
    assert nodeconfig.DEFAULT_COAP_PORT == 5683
    assert nodeconfig.parse_hub("hub.local") == ("hub.local", 5683)


@pytest.mark.micropython
def test_check_config_runs_the_firmware(micropython_bin):
    good = _make(shared.GOOD[6])  # every kind of sensor
    assert nodeconfig.check_config(good, micropython=micropython_bin) is good
    bad = dict(good, sensors=[{"name": "t", "driver": "sht4x", "pins": {"sda": 99}}])
    with pytest.raises(nodeconfig.ConfigError) as e:
        nodeconfig.check_config(bad, micropython=micropython_bin)
    assert str(e.value) == ("the firmware rejects this config: config key sensors[0].pins.sda: "
                            "must be a GPIO number 0..48")

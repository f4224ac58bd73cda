"""Deep sleep and event inputs: the schema refuses what the ESP32 cannot count while asleep."""

import pytest
from smartpark.protocol import configschema as S
from smartpark.protocol.errors import ConfigError


def _cfg(*pins, sleep="between_reports", driver="pulse"):
    return {"node": "n1", "deep_sleep": sleep,
            "sensors": [{"name": "m%d" % i, "driver": driver, "pins": {"in": p}}
                        for i, p in enumerate(pins)]}


def test_one_input_on_an_rtc_gpio_is_kept():
    assert S.validate(_cfg(27))["sensors"][0]["pins"] == {"in": 27}
    assert S.validate(_cfg(4, driver="pir"))
    assert S.validate(_cfg(5, 18, sleep="off"))   # awake: IRQs count on any pin


def test_a_pin_that_cannot_wake_the_chip_is_refused_with_why():
    with pytest.raises(ConfigError) as e:
        S.validate(_cfg(5))
    assert e.value.key == "sensors[0].pins.in"
    assert "wake the ESP32" in str(e.value) and "RTC GPIO" in str(e.value)


def test_a_second_wake_input_is_refused():
    with pytest.raises(ConfigError) as e:
        S.validate(_cfg(27, 33))
    assert e.value.key == "sensors[1]" and "only one pulse or pir input" in str(e.value)


def test_the_hubs_partial_overlay_is_checked_when_it_holds_both_keys():
    assert S.validate({"deep_sleep": "between_reports"}, partial=True)
    with pytest.raises(ConfigError):
        S.validate(_cfg(5), partial=True)

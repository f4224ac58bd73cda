"""Cases for protocol/errors.py (run under CPython and MicroPython)."""

from smartpark.protocol import errors


def test_offset_in_message():
    e = errors.CBORDecodeError("truncated", 7)
    assert e.offset == 7
    assert str(e) == "truncated (at byte 7)"
    assert isinstance(e, ValueError)


def test_family():
    for cls in (errors.LimitError, errors.CBORDecodeError, errors.SenMLError,
                errors.CoAPDecodeError, errors.LinkFormatError):
        try:
            raise cls("x")
        except errors.DecodeError as e:
            assert e.offset is None
            assert str(e) == "x"

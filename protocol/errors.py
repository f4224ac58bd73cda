"""One family of errors for every malformed input (shared by protocol/ and fast/).

Every decoder in smartpark ends malformed input in a DecodeError (a ValueError)
that carries the byte offset where decoding failed, when there is one, and a
short text saying what was wrong. Nothing else escapes a decoder: no stray
IndexError, KeyError, struct.error or RecursionError.

Runs on MicroPython and CPython alike.
"""


class DecodeError(ValueError):
    """Malformed input. `offset` is the byte offset of the fault, or None."""

    def __init__(self, msg, offset=None):
        if offset is not None:
            text = "%s (at byte %d)" % (msg, offset)
        else:
            text = msg
        super().__init__(text)
        self.msg = msg
        self.offset = offset

    def __str__(self):
        if self.offset is not None:
            return "%s (at byte %d)" % (self.msg, self.offset)
        return self.msg


class LimitError(DecodeError):
    """Input exceeds a configured limit (depth, items, bytes)."""


class CBORDecodeError(DecodeError):
    """Malformed CBOR (RFC 8949)."""


class SenMLError(DecodeError):
    """A pack that is well-formed CBOR/JSON but not valid SenML (RFC 8428)."""


class CoAPDecodeError(DecodeError):
    """A malformed CoAP message (RFC 7252)."""


class LinkFormatError(DecodeError):
    """Malformed CoRE link-format (RFC 6690)."""


class OscoreError(DecodeError):
    """An OSCORE message (RFC 8613) that cannot be verified or used.

    `code` is the CoAP response code the receiver answers with (section 8.2):
    0x82 (4.02 Bad Option) for a malformed OSCORE option, 0x81 (4.01
    Unauthorized) for an unknown key or a replay, 0x80 (4.00 Bad Request) when
    decryption or verification fails. `echo`, when set, is the Echo value
    (RFC 9175) the 4.01 response carries."""

    def __init__(self, msg, code=0x80, echo=None):
        super().__init__(msg)
        self.code = code
        self.echo = echo


class EncodeError(ValueError):
    """A value that the encoder cannot represent."""


class ConfigError(ValueError):
    """A node config that breaks the schema (protocol/configschema.py).

    `key` is the path of the fault ("sensors[2].pins.sda"), `why` what is wrong."""

    def __init__(self, key, why):
        super().__init__("config key %s: %s" % (key, why))
        self.key = key
        self.why = why

"""SenML (RFC 8428): decode packs, resolve records, encode small packs.

  decode(payload, fmt)      -> pack: a list of dicts keyed by the JSON labels
                               ("bn", "bt", ..., "n", "u", "v", ...); fmt is
                               "cbor" (integer labels, §6) or "json" (§5), or
                               the Content-Format number 112 / 110.
  resolve(pack, now=None)   -> resolved records (§4.6): dicts with "n", "t",
                               optional "u", exactly one of "v"/"vs"/"vb"/"vd"
                               (or none when the record carries only "s"),
                               optional "s" and "ut"; extension labels such as
                               "l" are carried through.
  encode(records, fmt="cbor", base_name=None) -> bytes: the reverse, choosing
                               bn (common prefix up to a '/'), bt (the first
                               time, others relative) and bu (the commonest
                               unit) to make the pack small.

"vd" is bytes in a decoded pack in both formats (a CBOR byte string, base64url
text in JSON). Every violation is a SenMLError (a DecodeError); malformed
CBOR/JSON underneath ends in a DecodeError as well. Encoding problems raise
EncodeError. Runs on MicroPython and CPython.
"""

import binascii
import json
import time

from . import cbor
from .errors import DecodeError, EncodeError, SenMLError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

CT_SENML_JSON = const(110)
CT_SENML_CBOR = const(112)

VERSION = const(10)  # the SenML version of RFC 8428; bver above it is refused
_REL_LIMIT = const(268435456)  # 2**28: smaller resolved times are relative to now
# Numbers stay within 64-bit ints (no bignums). Constants, so that checking a
# field allocates nothing on a node.
_INT_MAX = (1 << 64) - 1
_INT_MIN = -(1 << 64) + 1
_INF = float("inf")
_NINF = float("-inf")

# §6 Table 4: CBOR integer labels.
LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs",
          0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}
CODES = {}
for _k in LABELS:
    CODES[LABELS[_k]] = _k

_STR = ("bn", "bu", "n", "u", "vs")
_NUM = ("bt", "bv", "bs", "v", "s", "t", "ut")
_VALUES = ("v", "vs", "vb", "vd")
_BASE = ("bn", "bt", "bu", "bv", "bs", "bver")
_TIMES = ("bt", "t", "ut")

_NAME_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_NAME_REST = _NAME_FIRST + "-:./_"
_B64URL = _NAME_FIRST + "-_"
_NAME_SET = set(_NAME_REST)  # hashed lookups: valid_name runs for every record


def _is_num(x):
    # bool is excluded explicitly (an int subclass on CPython, not on MicroPython)
    return (type(x) is int or type(x) is float) and x is not True and x is not False


def _finite(x):
    return x == x and x != _INF and x != _NINF


def valid_name(name):
    """True when name follows §4.5.1: [A-Za-z0-9] then [A-Za-z0-9-:./_]*."""
    if not name or name[0] not in _NAME_FIRST:
        return False
    for c in name:
        if c not in _NAME_SET:
            return False
    return True


# ---------------------------------------------------------------- base64url

def _b64url_decode(text, i):
    body = text.rstrip("=")
    if len(text) - len(body) > 2 or len(body) % 4 == 1:
        raise SenMLError("%s: vd is not base64url" % _where(i))
    for c in body:
        if c not in _B64URL:
            raise SenMLError("%s: vd has a character outside base64url: %r" % (_where(i), c))
    std = body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4)
    try:
        return binascii.a2b_base64(std)
    except ValueError:
        raise SenMLError("%s: vd is not base64url" % _where(i)) from None


def _b64url_encode(raw):
    text = binascii.b2a_base64(raw).decode().strip()
    return text.replace("+", "-").replace("/", "_").rstrip("=")


# ---------------------------------------------------------------- decode

def _where(i):
    return "record %d" % i


def _check_field(label, val, i, is_json):  # noqa: C901 - one branch per SenML label
    """Return the field's value (vd converted to bytes) or raise SenMLError.

    i is the record index, formatted into the message only on error."""
    if label in _STR:
        if not isinstance(val, str):
            raise SenMLError("%s: %s must be a text string" % (_where(i), label))
    elif label in _NUM:
        if not _is_num(val):
            raise SenMLError("%s: %s must be a number" % (_where(i), label))
        if type(val) is int and not _INT_MIN <= val <= _INT_MAX:
            raise SenMLError("%s: %s is out of range" % (_where(i), label))
        if label in _TIMES and not _finite(val):
            raise SenMLError("%s: %s is not a finite time" % (_where(i), label))
    elif label == "vb":
        if val is not True and val is not False:
            raise SenMLError("%s: vb must be a boolean" % _where(i))
    elif label == "vd":
        if is_json:
            if not isinstance(val, str):
                raise SenMLError("%s: vd must be base64url text in SenML-JSON" % _where(i))
            return _b64url_decode(val, i)
        if not isinstance(val, bytes):
            raise SenMLError("%s: vd must be a byte string in SenML-CBOR" % _where(i))
    elif label == "bver":
        if type(val) is not int:
            raise SenMLError("%s: bver must be an integer" % _where(i))
        if val > VERSION:
            raise SenMLError("%s: SenML version %d is not supported (max %d)" % (_where(i), val, VERSION))
        if val < 1:
            raise SenMLError("%s: bad SenML version %d" % (_where(i), val))
    return val


def _record(raw, i, is_json):
    if not isinstance(raw, dict):
        raise SenMLError("%s is not a map/object" % _where(i))
    rec = {}
    nvalues = 0
    for key in raw:
        val = raw[key]
        if is_json:
            label = key
            known = key in CODES
        elif isinstance(key, int) and key is not True and key is not False:
            label = LABELS.get(key)
            if label is None:
                continue  # an unregistered integer label: ignore (§4.4 extensibility)
            known = True
        elif isinstance(key, str):
            if key in CODES:
                raise SenMLError("%s: label %r must be the integer %d in SenML-CBOR"
                                 % (_where(i), key, CODES[key]))
            label = key
            known = False
        else:
            raise SenMLError("%s: a label must be an integer or text" % _where(i))
        if not known:
            if label.endswith("_"):
                raise SenMLError("%s: must-understand label %r is not supported" % (_where(i), label))
            rec[label] = val  # extension (e.g. "l"), carried through
            continue
        if label in _VALUES:
            nvalues += 1
        rec[label] = _check_field(label, val, i, is_json)
    if nvalues > 1:
        raise SenMLError("%s has more than one value field" % _where(i))
    return rec


def decode(payload, fmt, max_bytes=cbor.MAX_BYTES):
    """Decode a SenML pack (bytes) in format "cbor"/112 or "json"/110."""
    if fmt == "cbor" or fmt == CT_SENML_CBOR:
        is_json = False
        pack = cbor.loads(payload, max_bytes=max_bytes)
    elif fmt == "json" or fmt == CT_SENML_JSON:
        is_json = True
        if len(payload) > max_bytes:
            raise SenMLError("pack of %d bytes exceeds max_bytes=%d" % (len(payload), max_bytes), 0)
        try:
            text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8")
        except UnicodeError:
            raise SenMLError("SenML-JSON is not UTF-8") from None
        try:
            pack = json.loads(text)
        except Exception as e:  # ValueError; RecursionError/MemoryError on deep nesting
            raise SenMLError("invalid JSON: %s" % e) from None
    else:
        raise ValueError("unknown SenML format %r (use 'cbor' or 'json')" % (fmt,))
    if not isinstance(pack, list):
        raise SenMLError("a SenML pack must be an array", 0)
    out = []
    for i in range(len(pack)):
        out.append(_record(pack[i], i, is_json))
    return out


# ---------------------------------------------------------------- resolve

def resolve(pack, now=None):  # noqa: C901 - RFC 8428 section 4.6 base-field rules in one pass
    """Resolved records (§4.6) of a decoded pack; now defaults to time.time().

    Base fields apply to their own record and every later one until changed.
    A record with only base fields yields nothing; any other record needs a
    value or a sum. Times below 2**28 after adding bt are relative to now.
    """
    if now is None:
        now = time.time()
    bn = ""
    bt = 0
    bu = None
    bv = None
    bs = None
    bver = None
    out = []
    for i in range(len(pack)):
        rec = pack[i]
        if "bver" in rec:
            if bver is not None and rec["bver"] != bver:
                raise SenMLError("%s: bver changes within the pack" % _where(i))
            bver = rec["bver"]
        if "bn" in rec:
            bn = rec["bn"]
        if "bt" in rec:
            bt = rec["bt"]
        if "bu" in rec:
            bu = rec["bu"]
        if "bv" in rec:
            bv = rec["bv"]
        if "bs" in rec:
            bs = rec["bs"]
        value = None
        for label in _VALUES:
            if label in rec:
                if value is not None:
                    raise SenMLError("%s has more than one value field" % _where(i))
                value = label
        if value is None and "s" not in rec:
            for label in rec:
                if label not in _BASE:
                    raise SenMLError("%s has neither a value nor a sum" % _where(i))
            continue  # base fields only
        name = bn + rec.get("n", "")
        if not valid_name(name):
            raise SenMLError("%s: invalid name %r" % (_where(i), name))
        t = bt + rec.get("t", 0)
        if t < _REL_LIMIT:
            t = now + t
        res = {"n": name, "t": t}
        u = rec.get("u", bu)
        if u is not None:
            res["u"] = u
        if value == "v":
            res["v"] = rec["v"] if bv is None else bv + rec["v"]
        elif value is not None:
            res[value] = rec[value]
        if "s" in rec:
            res["s"] = rec["s"] if bs is None else bs + rec["s"]
        for label in rec:
            if label not in _BASE and label not in res and label != "t":
                res[label] = rec[label]  # "ut" and extensions
        out.append(res)
    return out


# ---------------------------------------------------------------- encode

def _common_base(names):
    """Longest common prefix of names, cut after its last '/' ("" if none)."""
    first = names[0]
    k = len(first)
    for nm in names:
        j = 0
        m = min(k, len(nm))
        while j < m and nm[j] == first[j]:
            j += 1
        k = j
    cut = first.rfind("/", 0, k)
    return first[:cut + 1] if cut >= 0 else ""


def _check_record(rec, i):
    if not isinstance(rec, dict):
        raise EncodeError("record %d is not a dict" % i)
    name = rec.get("n")
    if not isinstance(name, str) or not valid_name(name):
        raise EncodeError("record %d: invalid name %r" % (i, name))
    nvalues = 0
    for label in rec:
        if label in _BASE:
            raise EncodeError("record %d: base field %r in a resolved record" % (i, label))
        if not isinstance(label, str) or label.endswith("_"):
            raise EncodeError("record %d: unsupported label %r" % (i, label))
        if label in _VALUES:
            nvalues += 1
        if label in CODES:
            try:
                _check_field(label, rec[label], i, False)
            except DecodeError as e:
                raise EncodeError(e.msg) from None
    if nvalues > 1 or (nvalues == 0 and "s" not in rec):
        raise EncodeError("record %d needs exactly one of v/vs/vb/vd (or a sum)" % i)


def _base_name(records, base_name):
    if base_name is not None:
        for r in records:
            if not r["n"].startswith(base_name):
                raise EncodeError("name %r does not start with base_name %r"
                                  % (r["n"], base_name))
        return base_name
    # The longest '/'-terminated prefix of the first name shared by all names.
    bn = records[0]["n"]
    cut = bn.rfind("/")
    while cut >= 0:
        bn = bn[:cut + 1]
        for r in records:
            if not r["n"].startswith(bn):
                break
        else:
            return bn
        cut = bn.rfind("/", 0, cut)
    return ""


def _base_time(records):
    bt = None
    for r in records:
        t = r.get("t")
        if t is None:
            return None  # a record without time means "now": no bt
        if bt is None:
            bt = t
        elif bt + (t - bt) != t:
            return None  # a relative time would not add back exactly
    return bt


def _base_unit(records):
    if len(records) < 2:
        return None
    counts = {}
    for r in records:
        u = r.get("u")
        if u is None:
            return None  # a record without unit would inherit bu
        counts[u] = counts.get(u, 0) + 1
    bu = None
    for u in counts:
        if counts[u] > 1 and (bu is None or counts[u] > counts[bu]):
            bu = u
    return bu


def encode(records, fmt="cbor", base_name=None):  # noqa: C901 - chooses bn, bt and bu, then writes the records, in one pass
    """Encode resolved-style records as a SenML pack (bytes).

    bn: base_name when given (every name must start with it), else the common
    prefix of all names up to and including its last '/'. bt: the first
    record's time when every record has one and the relative times add back
    exactly; records then carry t relative to it (0 omitted). bu: the
    commonest unit when every record has a unit and it saves bytes.
    Base fields go into the first record.
    """
    if fmt == "cbor" or fmt == CT_SENML_CBOR:
        is_json = False
    elif fmt == "json" or fmt == CT_SENML_JSON:
        is_json = True
    else:
        raise ValueError("unknown SenML format %r (use 'cbor' or 'json')" % (fmt,))
    for i in range(len(records)):
        _check_record(records[i], i)
    pack = []
    if records:
        bn = _base_name(records, base_name)
        bt = _base_time(records)
        bu = _base_unit(records)
    for i in range(len(records)):
        r = records[i]
        p = {}
        if i == 0:
            if bn:
                p[_key("bn", is_json)] = bn
            if bt:
                p[_key("bt", is_json)] = bt
            if bu is not None:
                p[_key("bu", is_json)] = bu
        for label in r:
            val = r[label]
            if label == "n":
                if len(val) == len(bn):
                    continue
                val = val[len(bn):]
            elif label == "t":
                if bt is not None:
                    val = val - bt
                if val == 0:
                    continue
            elif label == "u":
                if val == bu:
                    continue
            elif is_json:
                if label == "vd":
                    val = _b64url_encode(val)
                elif type(val) is float and not _finite(val):
                    raise EncodeError("SenML-JSON cannot carry %r (record %d, %s)" % (val, i, label))
            p[_key(label, is_json)] = val
        pack.append(p)
    if not is_json:
        return cbor.dumps(pack)
    try:
        return json.dumps(pack, separators=(",", ":")).encode("utf-8")
    except TypeError as e:
        raise EncodeError("cannot encode as JSON: %s" % e) from None


def _key(label, is_json):
    if is_json:
        return label
    return CODES.get(label, label)

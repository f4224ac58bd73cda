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
_INT_RANGE = 1 << 64  # integers in numeric fields stay within 64 bits (no bignums)

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


def _is_num(x):
    # bool is excluded explicitly (an int subclass on CPython, not on MicroPython)
    return (type(x) is int or type(x) is float) and x is not True and x is not False


def _finite(x):
    return x == x and x != float("inf") and x != float("-inf")


def valid_name(name):
    """True when name follows §4.5.1: [A-Za-z0-9] then [A-Za-z0-9-:./_]*."""
    if not name or name[0] not in _NAME_FIRST:
        return False
    for c in name:
        if c not in _NAME_REST:
            return False
    return True


# ---------------------------------------------------------------- base64url

def _b64url_decode(text, where):
    body = text.rstrip("=")
    if len(text) - len(body) > 2 or len(body) % 4 == 1:
        raise SenMLError("%s: vd is not base64url" % where)
    for c in body:
        if c not in _B64URL:
            raise SenMLError("%s: vd has a character outside base64url: %r" % (where, c))
    std = body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4)
    try:
        return binascii.a2b_base64(std)
    except ValueError:
        raise SenMLError("%s: vd is not base64url" % where) from None


def _b64url_encode(raw):
    text = binascii.b2a_base64(raw).decode().strip()
    return text.replace("+", "-").replace("/", "_").rstrip("=")


# ---------------------------------------------------------------- decode

def _check_field(label, val, where, is_json):
    """Return the field's value (vd converted to bytes) or raise SenMLError."""
    if label in _STR:
        if not isinstance(val, str):
            raise SenMLError("%s: %s must be a text string" % (where, label))
    elif label in _NUM:
        if not _is_num(val):
            raise SenMLError("%s: %s must be a number" % (where, label))
        if type(val) is int and not -_INT_RANGE < val < _INT_RANGE:
            raise SenMLError("%s: %s is out of range" % (where, label))
        if label in _TIMES and not _finite(val):
            raise SenMLError("%s: %s is not a finite time" % (where, label))
    elif label == "vb":
        if val is not True and val is not False:
            raise SenMLError("%s: vb must be a boolean" % where)
    elif label == "vd":
        if is_json:
            if not isinstance(val, str):
                raise SenMLError("%s: vd must be base64url text in SenML-JSON" % where)
            return _b64url_decode(val, where)
        if not isinstance(val, bytes):
            raise SenMLError("%s: vd must be a byte string in SenML-CBOR" % where)
    elif label == "bver":
        if type(val) is not int:
            raise SenMLError("%s: bver must be an integer" % where)
        if val > VERSION:
            raise SenMLError("%s: SenML version %d is not supported (max %d)" % (where, val, VERSION))
        if val < 1:
            raise SenMLError("%s: bad SenML version %d" % (where, val))
    return val


def _record(raw, i, is_json):
    where = "record %d" % i
    if not isinstance(raw, dict):
        raise SenMLError("%s is not a map/object" % where)
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
                                 % (where, key, CODES[key]))
            label = key
            known = False
        else:
            raise SenMLError("%s: a label must be an integer or text" % where)
        if not known:
            if label.endswith("_"):
                raise SenMLError("%s: must-understand label %r is not supported" % (where, label))
            rec[label] = val  # extension (e.g. "l"), carried through
            continue
        if label in _VALUES:
            nvalues += 1
        rec[label] = _check_field(label, val, where, is_json)
    if nvalues > 1:
        raise SenMLError("%s has more than one value field" % where)
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

def resolve(pack, now=None):
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
        where = "record %d" % i
        if "bver" in rec:
            if bver is not None and rec["bver"] != bver:
                raise SenMLError("%s: bver changes within the pack" % where)
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
                    raise SenMLError("%s has more than one value field" % where)
                value = label
        if value is None and "s" not in rec:
            for label in rec:
                if label not in _BASE:
                    raise SenMLError("%s has neither a value nor a sum" % where)
            continue  # base fields only
        name = bn + rec.get("n", "")
        if not valid_name(name):
            raise SenMLError("%s: invalid name %r" % (where, name))
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
    where = "record %d" % i
    if not isinstance(rec, dict):
        raise EncodeError("%s is not a dict" % where)
    name = rec.get("n")
    if not isinstance(name, str) or not valid_name(name):
        raise EncodeError("%s: invalid name %r" % (where, name))
    nvalues = 0
    for label in rec:
        if label in _BASE:
            raise EncodeError("%s: base field %r in a resolved record" % (where, label))
        if not isinstance(label, str) or label.endswith("_"):
            raise EncodeError("%s: unsupported label %r" % (where, label))
        if label in _VALUES:
            nvalues += 1
        val = rec[label]
        if label in CODES:
            try:
                _check_field(label, val, where, False)
            except DecodeError as e:
                raise EncodeError(e.msg) from None
    if nvalues > 1 or (nvalues == 0 and "s" not in rec):
        raise EncodeError("%s needs exactly one of v/vs/vb/vd (or a sum)" % where)


def encode(records, fmt="cbor", base_name=None):
    """Encode resolved-style records as a SenML pack (bytes).

    bn: base_name when given (every name must start with it), else the common
    prefix of all names up to and including its last '/'. bt: the first
    record's time when every record has one and the relative times add back
    exactly; records then carry t relative to it (0 omitted). bu: the
    commonest unit when every record has a unit and it saves bytes.
    """
    if fmt == "cbor" or fmt == CT_SENML_CBOR:
        is_json = False
    elif fmt == "json" or fmt == CT_SENML_JSON:
        is_json = True
    else:
        raise ValueError("unknown SenML format %r (use 'cbor' or 'json')" % (fmt,))
    for i in range(len(records)):
        _check_record(records[i], i)
    pack = [{} for _ in records]
    if not records:
        return _serialize(pack, is_json)
    names = [r["n"] for r in records]
    if base_name is None:
        bn = _common_base(names)
    else:
        bn = base_name
        for nm in names:
            if not nm.startswith(bn):
                raise EncodeError("name %r does not start with base_name %r" % (nm, bn))
    bt = None
    if all("t" in r for r in records):
        bt = records[0]["t"]
        for r in records:
            if bt + (r["t"] - bt) != r["t"]:
                bt = None  # a relative time would not add back exactly
                break
    bu = None
    if len(records) > 1 and all("u" in r for r in records):
        counts = {}
        for r in records:
            counts[r["u"]] = counts.get(r["u"], 0) + 1
        for u in counts:
            if counts[u] > 1 and (bu is None or counts[u] > counts[bu]):
                bu = u
    if bn:
        pack[0]["bn"] = bn
    if bt is not None and bt != 0:
        pack[0]["bt"] = bt
    if bu is not None:
        pack[0]["bu"] = bu
    for i in range(len(records)):
        r = records[i]
        p = pack[i]
        for label in r:
            val = r[label]
            if label == "n":
                if len(val) > len(bn):
                    p["n"] = val[len(bn):]
            elif label == "t":
                if bt is not None:
                    val = val - bt
                if val != 0:
                    p["t"] = val
            elif label == "u":
                if val != bu:
                    p["u"] = val
            else:
                p[label] = val
    return _serialize(pack, is_json)


def _serialize(pack, is_json):
    if not is_json:
        out = []
        for p in pack:
            m = {}
            for label in p:
                m[CODES.get(label, label)] = p[label]
            out.append(m)
        return cbor.dumps(out)
    for p in pack:
        for label in p:
            val = p[label]
            if label == "vd":
                p[label] = _b64url_encode(val)
            elif type(val) is float and not _finite(val):
                raise EncodeError("SenML-JSON cannot carry %r (%s)" % (val, label))
    try:
        text = json.dumps(pack, separators=(",", ":"))
    except TypeError as e:
        raise EncodeError("cannot encode as JSON: %s" % e) from None
    return text.encode("utf-8")

"""
The redo log's payloads: one change record as JSON.

A payload starting with ``[`` is plain JSON; one starting with ``T`` is
"tagged": single-key objects whose key begins with NUL carry the types
JSON cannot express (see ``_TAG_*``).  With orjson present it does the
walking and Python only steps in for what it cannot write exactly.
"""

import json
import math

from txxapi.values import DateTime, Int32

try:
    import orjson
except ImportError:  # pragma: no cover - exercised via the stdlib functions
    orjson = None

OPS = frozenset(("add", "mod", "del", "touch"))

# Tags for values plain JSON cannot carry exactly.
_TAG_DATETIME = "\0d"   # DateTime -> its text
_TAG_INT32 = "\0i"      # Int32 -> the number
_TAG_FLOAT = "\0f"      # nan / inf / -inf -> "nan", "inf", "-inf"
_TAG_BIGINT = "\0n"     # int outside [-2**63, 2**64) -> decimal text
_TAG_BADSTR = "\0u"     # str with lone surrogates -> hex of its utf-8
_TAG_MAP = "\0m"        # dict with keys that aren't plain str -> [[k, v]]

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1  # orjson accepts unsigned 64-bit as well


def _plain_str(s):
    """True if s survives a UTF-8 JSON round trip unchanged."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _to_tagged(v):
    """Turn a value into plain JSON data, tagging what JSON would lose."""
    t = type(v)
    if t is str:
        if _plain_str(v):
            return v
        return {_TAG_BADSTR: v.encode("utf-8", "surrogatepass").hex()}
    if t is bool or v is None:
        return v
    if t is int:
        if _INT_MIN <= v <= _INT_MAX:
            return v
        return {_TAG_BIGINT: str(v)}
    if t is float:
        if math.isfinite(v):
            return v
        return {_TAG_FLOAT: repr(v)}
    if t is dict:
        return _dict_to_tagged(v)
    if t is list or t is tuple:
        return [_to_tagged(x) for x in v]
    if t is DateTime:
        return {_TAG_DATETIME: str(v)}
    if t is Int32:
        return {_TAG_INT32: int(v)}
    # Subclasses we don't know degrade to their base type.
    if isinstance(v, str):
        return _to_tagged(str(v))
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return _to_tagged(int(v))
    if isinstance(v, float):
        return _to_tagged(float(v))
    if isinstance(v, dict):
        return _dict_to_tagged(v)
    if isinstance(v, (list, tuple)):
        return [_to_tagged(x) for x in v]
    raise TypeError("cannot log value of type %s" % (t.__name__,))


def _dict_to_tagged(d):
    for k in d:
        if type(k) is not str or k[:1] == "\0" or not _plain_str(k):
            return {_TAG_MAP: [[_to_tagged(k), _to_tagged(x)]
                               for k, x in d.items()]}
    return {k: _to_tagged(x) for k, x in d.items()}


def _untag_float(text):
    return float(text)


_UNTAG = {
    _TAG_DATETIME: DateTime,
    _TAG_INT32: Int32,
    _TAG_FLOAT: _untag_float,
    _TAG_BIGINT: int,
    _TAG_BADSTR: lambda h: bytes.fromhex(h).decode("utf-8", "surrogatepass"),
    _TAG_MAP: lambda pairs: {_from_tagged(k): _from_tagged(x)
                             for k, x in pairs},
}


_CONTAINERS = (dict, list)


def _from_tagged(v):
    t = type(v)
    if t is dict:
        if len(v) == 1:
            for k, x in v.items():
                if k[:1] == "\0":
                    return _UNTAG[k](x)
        # Only containers can hold tags: leave scalars alone (speed).
        return {k: _from_tagged(x) if type(x) in _CONTAINERS else x
                for k, x in v.items()}
    if t is list:
        return [_from_tagged(x) if type(x) in _CONTAINERS else x for x in v]
    return v


def _record_body(record):
    gen, op, table, ref, fields = record
    if fields is None:
        # A trailing null would push every "del" off the fast path.
        return (gen, op, table, ref)
    return (gen, op, table, ref, fields)


def encode_payload_stdlib(record):
    """Payload for one record using only the standard library."""
    text = json.dumps(_to_tagged(_record_body(record)),
                      separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return b"T" + text.encode("utf-8")


if orjson is not None:
    _OPT = orjson.OPT_PASSTHROUGH_SUBCLASS
    _TAG_MARK = b'{"\\u0000'

    def encode_payload_orjson(record):
        """Payload for one record; orjson does the walking.

        Fast path: orjson serialises the record natively and calls back only
        for DateTime/Int32 (subclasses are passed through), which become tag
        objects.  Anything else unusual (non-str keys, huge ints, lone
        surrogates, None/NaN - orjson writes NaN as null) makes us fall back
        to the Python walker, which is exact but slower.
        """
        body = _record_body(record)
        tags = 0

        def default(o):
            nonlocal tags
            t = type(o)
            if t is DateTime:
                tags += 1
                return {_TAG_DATETIME: str(o)}
            if t is Int32:
                tags += 1
                return {_TAG_INT32: int(o)}
            raise TypeError

        try:
            out = orjson.dumps(body, default=default, option=_OPT)
        except TypeError:
            return b"T" + orjson.dumps(_to_tagged(body))
        if b"null" in out:
            # Could be a NaN/inf turned into null: redo it exactly.
            return b"T" + orjson.dumps(_to_tagged(body))
        if not tags:
            return out
        # Each tag object starts with '{"\u0000'; so does any real dict whose
        # first key starts with NUL.  If the counts differ such a dict exists
        # and must be escaped by the walker.
        if out.count(_TAG_MARK) != tags:
            return b"T" + orjson.dumps(_to_tagged(body))
        return b"T" + out

    def _loads(data):
        return orjson.loads(data)

    encode_payload = encode_payload_orjson
else:  # pragma: no cover
    encode_payload_orjson = None
    encode_payload = encode_payload_stdlib

    def _loads(data):
        return json.loads(data)


def _decode_body(body):
    if len(body) == 5:
        return (body[0], body[1], body[2], body[3], body[4])
    if len(body) == 4:
        return (body[0], body[1], body[2], body[3], None)
    raise ValueError("bad record arity %d" % len(body))


def decode_payload(payload, loads=None):
    """Record tuple from a payload (bytes).  ``loads`` picks the JSON
    parser (default: orjson if present, else json.loads)."""
    loads = loads or _loads
    payload = bytes(payload)
    if payload[:1] == b"T":
        return _decode_body(_from_tagged(loads(payload[1:])))
    return _decode_body(loads(payload))


def peek_generation(payload):
    """Generation of a payload without decoding the whole record."""
    start = 2 if payload[:1] == b"T" else 1
    end = payload.index(b",", start)
    return int(payload[start:end])

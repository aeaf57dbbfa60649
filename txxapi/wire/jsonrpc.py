"""
JSON-RPC 1.0 and 2.0 as XAPI speaks them on POST /jsonrpc.

Pure functions, no Twisted.  orjson is used when importable (several times
faster than the json module on large results); the json module is the
fallback and is also used for the few values orjson refuses (integers
beyond 64 bits, strings holding lone surrogates).
"""

import binascii
import json
import re
from collections import namedtuple

from txxapi.wire.errors import MalformedRequest

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installation
    orjson = None

__all__ = [
    "JsonCall", "MalformedRequest", "decode_call", "encode_success",
    "encode_failure", "encode_early_failure", "MAX_DEPTH",
]

# Deepest array/object nesting accepted in a request; XenAPI values are a
# handful of levels deep, so anything close to this is an attack or a bug.
MAX_DEPTH = 64

JsonCall = namedtuple("JsonCall", "method params id version")
JsonCall.__doc__ = """A decoded call; version is 1 or 2, id is echoed back."""


# ---------------------------------------------------------------------------
# Decoding

if orjson is not None:
    _JSON_ERRORS = (orjson.JSONDecodeError, ValueError, RecursionError)

    def _loads(body):
        return orjson.loads(body)
else:  # pragma: no cover
    _JSON_ERRORS = (ValueError, RecursionError)

    def _loads(body):
        # Decode first so that invalid UTF-8 is refused rather than guessed.
        return json.loads(bytes(body).decode("utf-8"))


def _too_deep(value):
    """True if value nests arrays/objects more than MAX_DEPTH deep (the
    request object itself is level 1).  Breadth-first, so no recursion."""
    level = [value]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            return True
        below = []
        for v in level:
            below.extend(v.values() if type(v) is dict else v)
        level = [v for v in below if type(v) is dict or type(v) is list]
        depth += 1
    return False


def decode_call(body):
    """Parse a JSON-RPC request into a JsonCall or raise MalformedRequest."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    # Only bodies with that many brackets can possibly be too deep.
    check_depth = body.count(b"[") + body.count(b"{") > MAX_DEPTH
    try:
        request = _loads(body)
    except UnicodeError:
        raise MalformedRequest("body is not UTF-8") from None
    except _JSON_ERRORS as e:
        raise MalformedRequest("JSON: %s" % (e,)) from None
    if type(request) is not dict:
        raise MalformedRequest("request is not a JSON object")
    if check_depth and _too_deep(request):
        raise MalformedRequest("nesting deeper than %d" % MAX_DEPTH)

    if "jsonrpc" not in request:
        version = 1
    elif request["jsonrpc"] == "2.0":
        version = 2
    else:
        raise MalformedRequest("unsupported jsonrpc version %r"
                               % (request["jsonrpc"],))

    method = request.get("method")
    if type(method) is not str:
        raise MalformedRequest("method must be a string")

    params = request.get("params")
    if type(params) is list:
        pass
    elif version == 1:
        raise MalformedRequest("params must be an array")
    elif params is None:
        params = []
    elif type(params) is dict:
        params = [params]
    else:
        raise MalformedRequest("params must be an array or an object")

    # Notifications (no id) are not supported, as in XAPI.  bool is an int
    # subclass but not an acceptable id.
    call_id = request.get("id")
    if type(call_id) is not str and type(call_id) is not int:
        raise MalformedRequest("id must be a string or an integer")

    return JsonCall(method, params, call_id, version)


# ---------------------------------------------------------------------------
# Encoding

def _extra(v):
    """Values neither encoder writes natively."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return binascii.b2a_base64(bytes(v), newline=False).decode("ascii")
    if isinstance(v, (set, frozenset)):
        return list(v)
    raise TypeError("cannot encode %s as JSON" % (type(v).__name__,))


# The json module already writes map keys as XAPI does: True as "true",
# ints in decimal.
_stdlib_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_extra,
    check_circular=False).encode
_surrogates = re.compile("[\ud800-\udfff]")


def _stdlib_dumps(obj):
    text = _stdlib_encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be written as UTF-8.
        return _surrogates.sub("\ufffd", text).encode("utf-8")


if orjson is not None:
    _ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS

    def _dumps(obj):
        try:
            return orjson.dumps(obj, default=_extra,
                                option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            # Big ints, lone surrogates: slower but more forgiving.
            return _stdlib_dumps(obj)
else:  # pragma: no cover
    _dumps = _stdlib_dumps


def dumps(value):
    """Any value as JSON bytes, in the envelope's encoding."""
    return _dumps(value)


def encode_success(call, value):
    """The response to call carrying value, as bytes."""
    if call.version == 2:
        return _dumps({"jsonrpc": "2.0", "result": value, "id": call.id})
    return _dumps({"result": value, "error": None, "id": call.id})


def encode_success_encoded(call, result):
    """What encode_success writes, around a value already encoded (the
    same bytes: both encoders write compact JSON, members in order)."""
    if call.version == 2:
        return b'{"jsonrpc":"2.0","result":%s,"id":%s}' % (
            result, _dumps(call.id))
    return b'{"result":%s,"error":null,"id":%s}' % (result, _dumps(call.id))


def _error_strings(error_description):
    return [x if type(x) is str else
            ("true" if x else "false") if isinstance(x, bool) else str(x)
            for x in error_description]


def _v2_error(error_description, call_id):
    desc = _error_strings(error_description)
    return _dumps({"jsonrpc": "2.0",
                   "error": {"code": 1, "message": desc[0] if desc else "",
                             "data": desc[1:]},
                   "id": call_id})


def encode_failure(call, error_description):
    """The error response to call; error_description is [CODE, params...].
    """
    if call.version == 2:
        return _v2_error(error_description, call.id)
    return _dumps({"result": None, "error": _error_strings(error_description),
                   "id": call.id})


def encode_early_failure(error_description):
    """An error raised before the call could be decoded: XAPI answers these
    in the 2.0 form whatever the request's version, with id 0."""
    return _v2_error(error_description, 0)

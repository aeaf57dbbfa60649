"""
XAPI's dialect of XML-RPC: request decoding and response encoding.

Pure functions, no Twisted.  The decoder drives expat directly and builds
Python values as elements close, so no tree is ever materialised; DTDs are
refused outright, which also rules out entity expansion attacks and external
entities.  The encoder mirrors what xapi itself writes: strings and 64-bit
ints as bare text, no <string> tags, compact output.
"""

import binascii
import re
from xml.parsers import expat

from txxapi.values import DateTime, Int32, parse_datetime
from txxapi.wire.errors import MalformedRequest

__all__ = [
    "MalformedRequest", "decode_call", "decode_value", "decode_response",
    "encode_value", "encode_success", "encode_failure", "encode_bare",
    "encode_fault", "encode_call",
]

# Nesting bound on the element stack.  Each level of array or struct costs
# three elements (array/data/value, struct/member/value); XenAPI values are a
# handful deep, so this allows ~64 levels of value nesting and no more.
MAX_STACK = 200


# ---------------------------------------------------------------------------
# Decoding

_INT_TEXT = re.compile(r"[+-]?[0-9]+\Z").match
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _to_int(text):
    text = text.strip()
    # int() alone would also take "1_000" and non-ASCII digits.
    if not _INT_TEXT(text):
        raise ValueError("not an integer: %r" % (text,))
    n = int(text)
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError("integer out of 64-bit range")
    return n


def _to_bool(text):
    text = text.strip()
    if text == "1" or text == "true":
        return True
    if text == "0" or text == "false":
        return False
    raise ValueError("not a boolean: %r" % (text,))


def _to_float(text):
    text = text.strip()
    if "_" in text:
        raise ValueError("not a double: %r" % (text,))
    return float(text)


def _to_base64(text):
    return binascii.a2b_base64(text.encode("ascii"))


def _to_nil(text):
    if text.strip():
        raise ValueError("<nil/> with content")
    return None


def _to_string(text):
    return text


_SCALARS = {
    "string": _to_string,
    "i4": _to_int,
    "int": _to_int,
    "i8": _to_int,
    "boolean": _to_bool,
    "double": _to_float,
    "dateTime.iso8601": parse_datetime,
    "base64": _to_base64,
    "nil": _to_nil,
}

# Frame kinds.  A frame is a list [kind, payload, text_parts]; only the kinds
# in _TEXTUAL collect character data, elsewhere only whitespace is allowed.
_ROOT, _CALL, _NAME, _PARAMS, _PARAM, _VALUE, _SCALAR, _ARRAY, _DATA, \
    _STRUCT, _MEMBER, _MEMBER_NAME, _RESPONSE, _FAULT = range(14)
_TEXTUAL = frozenset((_NAME, _VALUE, _SCALAR, _MEMBER_NAME))

# What each frame kind may contain, element name -> child frame kind.
_CHILDREN = {
    _ROOT: {"methodCall": _CALL, "methodResponse": _RESPONSE},
    _CALL: {"methodName": _NAME, "params": _PARAMS},
    _RESPONSE: {"params": _PARAMS, "fault": _FAULT},
    _FAULT: {"value": _VALUE},
    _PARAMS: {"param": _PARAM},
    _PARAM: {"value": _VALUE},
    _VALUE: dict.fromkeys(_SCALARS, _SCALAR),
    _ARRAY: {"data": _DATA},
    _DATA: {"value": _VALUE},
    _STRUCT: {"member": _MEMBER},
    _MEMBER: {"name": _MEMBER_NAME, "value": _VALUE},
}
_CHILDREN[_VALUE].update(array=_ARRAY, struct=_STRUCT)
_VALUE_PARENTS = frozenset((_PARAM, _DATA, _MEMBER, _FAULT))

_UNSET = object()


class _CallBuilder:
    """expat handlers that assemble (method, params) as elements close."""

    def __init__(self):
        self.method = None
        self.params = None
        self.fault = _UNSET     # a methodResponse's <fault> value
        # The root frame's payload counts methodCall elements seen.
        self.stack = [[_ROOT, 0, None]]

    def start(self, tag, attrs):
        stack = self.stack
        parent = stack[-1]
        # The three commonest elements first, checked inline.
        if tag == "value" and parent[0] in _VALUE_PARENTS:
            if len(stack) >= MAX_STACK:
                raise MalformedRequest("nesting too deep")
            stack.append([_VALUE, _UNSET, []])
            return
        if tag == "member" and parent[0] == _STRUCT:
            stack.append([_MEMBER, [_UNSET, _UNSET], None])
            return
        if tag == "name" and parent[0] == _MEMBER:
            if parent[1][0] is not _UNSET:
                raise MalformedRequest("<member> with two <name>")
            stack.append([_MEMBER_NAME, None, []])
            return
        kind = _CHILDREN.get(parent[0], {}).get(tag)
        if kind is None or kind == _VALUE or kind == _MEMBER:
            raise MalformedRequest("unexpected <%s>" % (tag,))
        if len(stack) >= MAX_STACK:
            raise MalformedRequest("nesting too deep")
        if parent[0] == _VALUE:
            # A value holds at most one element, after optional whitespace.
            if parent[1] is not _UNSET or "".join(parent[2]).strip():
                raise MalformedRequest("<value> with mixed content")
            parent[1] = None  # claimed; the child fills it in on close
        if kind == _SCALAR:
            stack.append([_SCALAR, tag, []])
        elif kind == _ARRAY:
            stack.append([_ARRAY, None, None])
        elif kind == _DATA:
            if parent[1] is not None:
                raise MalformedRequest("<array> with two <data>")
            parent[1] = []
            stack.append([_DATA, parent[1], None])
        elif kind == _STRUCT:
            stack.append([_STRUCT, {}, None])
        elif kind == _NAME:
            if self.method is not None:
                raise MalformedRequest("two <methodName>")
            stack.append([_NAME, None, []])
        elif kind == _PARAMS:
            if self.params is not None:
                raise MalformedRequest("two <params>")
            if self.fault is not _UNSET:
                raise MalformedRequest("<params> beside a <fault>")
            self.params = []
            stack.append([_PARAMS, None, None])
        elif kind == _CALL or kind == _RESPONSE:
            if parent[1]:
                raise MalformedRequest("two documents")
            parent[1] = 1
            stack.append([kind, None, None])
        elif kind == _FAULT:
            if self.params is not None or self.fault is not _UNSET:
                raise MalformedRequest("<fault> beside another answer")
            stack.append([_FAULT, _UNSET, None])
        else:  # _PARAM
            stack.append([_PARAM, _UNSET, None])

    def end(self, tag):
        stack = self.stack
        frame = stack.pop()
        kind = frame[0]
        if kind == _VALUE:
            if frame[1] is _UNSET:
                value = "".join(frame[2])
            else:
                if frame[2] and "".join(frame[2]).strip():
                    raise MalformedRequest("<value> with mixed content")
                value = frame[1]
            parent = stack[-1]
            if parent[0] == _MEMBER:
                if parent[1][1] is not _UNSET:
                    raise MalformedRequest("<member> with two <value>")
                parent[1][1] = value
            elif parent[0] == _DATA:
                parent[1].append(value)
            else:  # _PARAM or _FAULT
                if parent[1] is not _UNSET:
                    raise MalformedRequest("<param> with two <value>")
                parent[1] = value
        elif kind == _MEMBER_NAME:
            stack[-1][1][0] = "".join(frame[2])
        elif kind == _MEMBER:
            name, value = frame[1]
            if name is _UNSET or value is _UNSET:
                raise MalformedRequest("<member> needs a <name> and a <value>")
            # Later duplicates win; the dispatcher sees a plain dict.
            stack[-1][1][name] = value
        elif kind == _SCALAR:
            try:
                stack[-1][1] = _SCALARS[frame[1]]("".join(frame[2]))
            except (ValueError, binascii.Error, UnicodeError) as e:
                raise MalformedRequest("bad <%s>: %s" % (frame[1], e))
        elif kind == _ARRAY:
            stack[-1][1] = frame[1] if frame[1] is not None else []
        elif kind == _STRUCT:
            stack[-1][1] = frame[1]
        elif kind == _NAME:
            self.method = "".join(frame[2]).strip()
        elif kind == _PARAM:
            if frame[1] is _UNSET:
                raise MalformedRequest("<param> without <value>")
            self.params.append(frame[1])
        elif kind == _FAULT:
            if frame[1] is _UNSET:
                raise MalformedRequest("<fault> without <value>")
            self.fault = frame[1]
        # _DATA, _PARAMS, _CALL, _RESPONSE: filled in place.

    def text(self, data):
        frame = self.stack[-1]
        if frame[0] in _TEXTUAL:
            frame[2].append(data)
        elif not data.isspace():
            raise MalformedRequest("stray text %r" % (data[:40],))


def _refuse_dtd(*args):
    raise MalformedRequest("DTDs are not accepted")


def _parse(builder, body):
    parser = expat.ParserCreate()
    # One text callback per run of text, and attributes (always ignored)
    # as a list, which is cheaper to build than a dict.
    parser.buffer_text = True
    parser.buffer_size = 65536
    parser.ordered_attributes = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    # Refusing at the DOCTYPE start means no declaration is ever processed.
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.ExternalEntityRefHandler = _refuse_dtd
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise MalformedRequest("XML: %s" % (e,)) from None
    except (LookupError, ValueError) as e:
        # A declared encoding expat leaves to Python: an unknown name is a
        # LookupError, a multi-byte one (UTF-7, UTF-32) a ValueError.
        raise MalformedRequest("XML: unreadable encoding: %s" % (e,)) \
            from None


# The shape of most calls, read without expat: a UTF-8 methodCall whose
# params are all strings (bare or in <string>), of text that needs no
# decoding (no entity, no CR to normalise, no character XML refuses, no
# "]]>"), whitespace only between elements.  What this matches, expat
# reads the same; anything else goes to expat, errors included.
SIMPLE_MAX = 65536
_WS = "[ \t\r\n]*"
_TEXT = "[^<>&\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*"
_SIMPLE_CALL = re.compile(
    "(?:<\\?xml version=(['\"])1\\.0\\1\\?>" + _WS + ")?<methodCall>" + _WS
    + "<methodName>(" + _TEXT + ")</methodName>" + _WS + "<params>((?:"
    + _WS + "<param>" + _WS + "<value>(?:<string>" + _TEXT + "</string>|"
    + _TEXT + ")</value>" + _WS + "</param>)*)" + _WS + "</params>" + _WS
    + "</methodCall>" + _WS + "\\Z").match
_SIMPLE_PARAM = re.compile(
    "<value>(?:<string>(" + _TEXT + ")</string>|(" + _TEXT + "))</value>"
).findall


def _simple_call(body):
    """(method, params) of a call of the simple shape, else None."""
    if len(body) > SIMPLE_MAX:
        return None   # not worth a second look before expat's
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else None
    except UnicodeDecodeError:
        return None
    found = _SIMPLE_CALL(text) if text is not None else None
    if found is None:
        return None
    method = found.group(2).strip()
    if not method:
        return None
    return method, [a or b for a, b in _SIMPLE_PARAM(found.group(3))]


def decode_call(body):
    """Parse a methodCall; return (method, params) or raise MalformedRequest.

    Bare-text values are strings even when they look like numbers: XAPI
    sends 64-bit ints that way, so the callee converts by declared type.
    """
    simple = _simple_call(body)
    if simple is not None:
        return simple
    return _decode_call(body)


def _decode_call(body):
    """decode_call through expat, for every shape."""
    builder = _CallBuilder()
    _parse(builder, body)
    if builder.method is None or builder.fault is not _UNSET:
        raise MalformedRequest("no <methodName>")
    if not builder.method:
        raise MalformedRequest("empty <methodName>")
    return builder.method, builder.params if builder.params is not None else []


def decode_value(body):
    """Parse a document whose root element is one <value> (an XVA's
    ova.xml); MalformedRequest if it is not one."""
    builder = _CallBuilder()
    # The document itself stands where a <param> would: it holds the one
    # value.
    builder.stack = [[_PARAM, _UNSET, None]]
    _parse(builder, body)
    value = builder.stack[0][1]
    if value is _UNSET:
        raise MalformedRequest("no <value>")
    return value


class Fault(Exception):
    """A methodResponse that answered a standard XML-RPC <fault>."""

    def __init__(self, code, text):
        Exception.__init__(self, code, text)
        self.code, self.text = code, text


def decode_response(body):
    """Parse a methodResponse (what another host answers): its one param,
    as decode_call reads values; a <fault> raises Fault, anything else
    MalformedRequest."""
    builder = _CallBuilder()
    _parse(builder, body)
    if builder.method is not None:
        raise MalformedRequest("a methodCall, not a methodResponse")
    if builder.fault is not _UNSET:
        fault = builder.fault if isinstance(builder.fault, dict) else {}
        raise Fault(fault.get("faultCode"), fault.get("faultString", ""))
    if not builder.params or len(builder.params) != 1:
        raise MalformedRequest("a methodResponse holds one <param>")
    return builder.params[0]


# ---------------------------------------------------------------------------
# Encoding
#
# Two encoders producing the same text.  _fast writes every string without
# looking at it and instead collects it in `strs`; each record-like struct
# (and the top level) then checks its collected strings in one pass over
# their join, and only if something there needs escaping is that struct
# rewritten by _careful, which escapes string by string.  Per-string checks
# cost more than everything else put together on large results.
#
# Output is gathered as many small pieces in one list and joined once;
# extending by a tuple of pieces measured faster than concatenating them.

# Anything that must not appear literally: markup characters, C0 controls
# other than TAB/LF/CR, and code points that cannot be written in XML 1.0
# UTF-8 (lone surrogates, U+FFFE/U+FFFF).
_needs_escape = re.compile(
    '[<>&"\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]').search

_ESCAPES = {ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;",
            ord('"'): "&quot;", 0xFFFE: None, 0xFFFF: None}
_ESCAPES.update((c, None) for c in range(0x20) if c not in (9, 10, 13))
_ESCAPES.update((c, "\ufffd") for c in range(0xD800, 0xE000))


def _plain(s):
    """True if s can be written verbatim (a sufficient test, not a
    necessary one).  Non-printable covers controls, surrogates, U+FFFE and
    U+FFFF, but also TAB/LF/CR, which are then merely looked at again."""
    return (s.isprintable() and "<" not in s and ">" not in s
            and "&" not in s and '"' not in s)


def _escape(s):
    if _plain(s) or _needs_escape(s) is None:
        return s
    return s.translate(_ESCAPES)


def _key(k):
    """A struct member name; non-string map keys are stringified."""
    if isinstance(k, str):
        return _escape(str.__str__(k))
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int):
        return "%d" % k
    raise TypeError("cannot encode %r as a struct key" % (k,))


_only_str = frozenset((str,)).issuperset
_name_value = "</name><value>".join
_MEMBER_SEP = "</value></member><member><name>"


def _fast(v, out, strs):
    # Exact type tests: cheap, and they cannot confuse the subclasses
    # (DateTime is a str; bool and Int32 are ints).
    t = type(v)
    if t is str:
        strs.append(v)
        out.extend(("<value>", v, "</value>"))
    elif t is list or t is tuple:
        _fast_list(v, out, strs)
    elif t is dict:
        _fast_dict(v, out, strs)
    else:
        _careful(v, out)


def _fast_list(v, out, strs):
    if v and _only_str(map(type, v)):
        # Sets of refs/enums/strings: one join.
        strs.extend(v)
        out.extend(("<value><array><data><value>", "</value><value>".join(v),
                    "</value></data></array></value>"))
    elif not v:
        out.append("<value><array><data></data></array></value>")
    else:
        out.append("<value><array><data>")
        for x in v:
            _fast(x, out, strs)
        out.append("</data></array></value>")


def _fast_dict(v, out, strs):
    if not v:
        out.append("<value><struct></struct></value>")
        return
    if _only_str(map(type, v.values())):
        # string -> string maps (other_config and friends): joined in C;
        # the join refuses non-string keys, which go the long way.
        try:
            joined = _MEMBER_SEP.join(map(_name_value, v.items()))
        except TypeError:
            pass
        else:
            if not (_plain(" ".join(v)) and _plain(" ".join(v.values()))):
                joined = _escaped_members(v)
            out.extend(("<value><struct><member><name>", joined,
                        "</value></member></struct></value>"))
            return
    # Records.  Field types are tested most common first, and strings,
    # scalars and string sets/maps are written inline: calls and list
    # operations are what costs here.
    out_mark = len(out)
    strs_mark = len(strs)
    ext = out.extend
    keep = strs.append
    keep_all = strs.extend
    if _only_str(map(type, v)):
        keep_all(v)
        items = v.items()
    else:
        items = [(_key(k), x) for k, x in v.items()]
    out.append("<value><struct>")
    for k, x in items:
        t = type(x)
        if t is str:
            keep(x)
            ext(("<member><name>", k, "</name><value>", x,
                 "</value></member>"))
        elif t is int:
            ext(("<member><name>", k, "</name><value>", _int_text(x),
                 "</value></member>"))
        elif t is bool:
            ext(("<member><name>", k, _TRUE_TAIL if x else _FALSE_TAIL))
        elif t is list and x and _only_str(map(type, x)):
            keep_all(x)
            ext(("<member><name>", k, "</name><value><array><data><value>",
                 "</value><value>".join(x),
                 "</value></data></array></value></member>"))
        elif t is dict and x and _only_str(map(type, x.values())):
            try:
                joined = _MEMBER_SEP.join(map(_name_value, x.items()))
            except TypeError:
                ext(("<member><name>", k, "</name>"))
                _fast_dict(x, out, strs)
                out.append("</member>")
            else:
                # Checked here rather than with the record's strings: a
                # map is where XML in a string usually sits (other_config
                # disks), and escaping it here spares the record.
                if not (_plain(" ".join(x)) and _plain(" ".join(x.values()))):
                    joined = _escaped_members(x)
                ext(("<member><name>", k, "</name><value><struct><member>"
                     "<name>", joined, "</value></member></struct></value>"
                     "</member>"))
        else:
            ext(("<member><name>", k, "</name>"))
            _fast(x, out, strs)
            out.append("</member>")
    out.append("</struct></value>")
    if len(strs) > strs_mark:
        ok = _plain(" ".join(strs[strs_mark:])) or \
            _escape_in_place(out, out_mark, strs[strs_mark:])
        del strs[strs_mark:]
        if not ok:
            del out[out_mark:]
            _careful(v, out)


def _escape_in_place(out, out_mark, strs):
    """Escape the strings that need it where they stand in out[out_mark:],
    found by identity: the members' names and string values are written
    as the very objects collected.  False (nothing changed) when one of
    them was written inside a joined piece (a set or a map of strings),
    where only re-encoding can reach it, or when the very object is also
    a piece of markup there (a string equal to one of the encoder's
    constant pieces, as the encoding of an empty array is, may be that
    constant itself), where no position tells which is which."""
    bad = {}   # id -> [string, occurrences]
    for x in strs:
        if not _plain(x) and _needs_escape(x) is not None:
            bad.setdefault(id(x), [x, 0])[1] += 1
    found = []
    for x, count in bad.values():
        at = out_mark
        for _ in range(count):
            try:
                at = out.index(x, at)
            except ValueError:
                return False
            if out[at] is not x:
                return False   # an equal piece of markup came first
            found.append(at)
            at += 1
        while True:
            try:
                at = out.index(x, at)
            except ValueError:
                break
            if out[at] is x:
                return False
            at += 1
    for i in found:
        out[i] = out[i].translate(_ESCAPES)
    return True


def _escaped_members(m):
    """The members of a string -> string map, each escaped as needed."""
    return _MEMBER_SEP.join(_name_value((_escape(a), _escape(b)))
                            for a, b in m.items())


_int_text = int.__repr__
_TRUE_TAIL = "</name><value><boolean>1</boolean></value></member>"
_FALSE_TAIL = "</name><value><boolean>0</boolean></value></member>"


def _careful(v, out):
    """Encode v escaping each string as needed; also handles every type
    _fast leaves alone."""
    t = type(v)
    if t is str:
        out.extend(("<value>", _escape(v), "</value>"))
    elif t is bool:
        out.append("<value><boolean>1</boolean></value>" if v
                   else "<value><boolean>0</boolean></value>")
    elif t is int:
        out.append("<value>%d</value>" % v)
    elif t is DateTime:
        out.extend(("<value><dateTime.iso8601>", _escape(v),
                    "</dateTime.iso8601></value>"))
    elif t is float:
        out.append("<value><double>%.16g</double></value>" % v)
    elif v is None:
        out.append("<value><nil/></value>")
    elif t is Int32:
        out.append("<value><i4>%d</i4></value>" % v)
    elif t is dict:
        out.append("<value><struct>")
        for k, x in v.items():
            out.extend(("<member><name>", _key(k), "</name>"))
            _careful(x, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif t is list or t is tuple:
        out.append("<value><array><data>")
        for x in v:
            _careful(x, out)
        out.append("</data></array></value>")
    # Subclasses and the rarer types.
    elif isinstance(v, DateTime):
        _careful(DateTime(str.__str__(v)), out)
    elif isinstance(v, str):
        _careful(str.__str__(v), out)
    elif isinstance(v, bool):
        _careful(bool(v), out)
    elif isinstance(v, Int32):
        _careful(Int32(v), out)
    elif isinstance(v, int):
        _careful(int(v), out)
    elif isinstance(v, float):
        _careful(float(v), out)
    elif isinstance(v, dict):
        _careful(dict(v), out)
    elif isinstance(v, (list, tuple, set, frozenset)):
        _careful(list(v), out)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        out.extend(("<value><base64>", binascii.b2a_base64(
            bytes(v), newline=False).decode("ascii"), "</base64></value>"))
    else:
        raise TypeError("cannot encode %s as XML-RPC" % (type(v).__name__,))


def _encode(v, out):
    mark = len(out)
    strs = []
    _fast(v, out, strs)
    if strs and not _plain(" ".join(strs)):
        del out[mark:]
        _careful(v, out)


def encode_value(v):
    """The <value>...</value> fragment for v, as a str."""
    out = []
    _encode(v, out)
    return "".join(out)


_HEAD = '<?xml version="1.0"?><methodResponse><params><param>'
_TAIL = "</param></params></methodResponse>"
_SUCCESS_HEAD = (_HEAD + "<value><struct><member><name>Status</name>"
                 "<value>Success</value></member><member><name>Value</name>")
_FAILURE_HEAD = (_HEAD + "<value><struct><member><name>Status</name>"
                 "<value>Failure</value></member><member>"
                 "<name>ErrorDescription</name>")
_STRUCT_TAIL = "</member></struct></value>" + _TAIL


def encode_success(value):
    """{Status: Success, Value: value} methodResponse, as bytes."""
    out = [_SUCCESS_HEAD]
    _encode(value, out)
    out.append(_STRUCT_TAIL)
    return "".join(out).encode("utf-8")


def encode_failure(error_description):
    """{Status: Failure, ErrorDescription: [...]} methodResponse, as bytes.
    Every element is sent as a string, whatever its Python type."""
    out = [_FAILURE_HEAD]
    _careful([_error_param(x) for x in error_description], out)
    out.append(_STRUCT_TAIL)
    return "".join(out).encode("utf-8")


def _error_param(x):
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x)


def encode_bare(value):
    """methodResponse whose only param is value itself, not wrapped in a
    Status struct (system.listMethods)."""
    out = [_HEAD]
    _encode(value, out)
    out.append(_TAIL)
    return "".join(out).encode("utf-8")


def encode_call(method, params):
    """A methodCall of ``method`` with ``params``, as bytes."""
    out = ['<?xml version="1.0"?><methodCall><methodName>',
           _escape(method), "</methodName><params>"]
    for p in params:
        out.append("<param>")
        _encode(p, out)
        out.append("</param>")
    out.append("</params></methodCall>")
    return "".join(out).encode("utf-8")


def encode_fault(code, text):
    """A standard XML-RPC <fault>, for bodies that could not be parsed."""
    return ('<?xml version="1.0"?><methodResponse><fault><value><struct>'
            "<member><name>faultCode</name><value><int>%d</int></value>"
            "</member><member><name>faultString</name><value>%s</value>"
            "</member></struct></value></fault></methodResponse>"
            % (int(code), _escape(str(text)))).encode("utf-8")

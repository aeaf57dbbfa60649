"""
The database string form of values and XAPI's database column names.

XAPI keeps every column as a string: this is what state.db stores and what
get_all_records_where expressions compare against.  The forms are:

  string, uuid, ref, enum   as is
  int                       decimal
  float                     printf "%.18g": 1.0 -> "1", 0.1 -> "0.1000...0006"
  bool                      "true" / "false"
  datetime                  20240315T08:09:10Z (DateTime already is that text)
  set                       ('a' 'b'), the empty set ()
  map                       (('k1' 'v1') ('k2' 'v2')), the empty map ()
  option                    a set of zero or one element

Set and map elements are the string forms of their own type, quoted with
single quotes; a quote or backslash inside is escaped with a backslash.  A
map whose values are sets nests naturally: the set's text is the value.

Column names join a field's namespaces with "__" (VM.memory/static_max is
the column memory__static_max); the wire name joins them with "_".  Which
fields sit in a namespace is a fact of XAPI's datamodel, stated below.
"""

import re
from functools import partial

from txxapi.values import DateTime, parse_datetime

__all__ = [
    "NAMESPACES", "to_db", "from_db", "to_db_func", "from_db_func",
    "column_name", "field_name", "parse_set", "parse_map",
]

# -- column names ----------------------------------------------------------

_NAME = ("label", "description")
_QOS = ("algorithm_type", "algorithm_params", "supported_algorithms")
_IO = ("read_kbs", "write_kbs")

# class -> {namespace: fields inside it}, from XAPI's datamodel.  Note that
# pool's name_label/name_description are plain fields, not a namespace.
NAMESPACES = {
    "task": {"name": _NAME},
    "pool_update": {"name": _NAME},
    "pool_patch": {"name": _NAME},
    "host_patch": {"name": _NAME},
    "host": {
        "name": _NAME,
        "memory": ("overhead",),
        "API_version": ("major", "minor", "vendor", "vendor_implementation"),
    },
    "host_metrics": {"memory": ("total", "free")},
    "network": {"name": _NAME},
    "PIF_metrics": {"io": _IO},
    "VIF": {"qos": _QOS},
    "VIF_metrics": {"io": _IO},
    "data_source": {"name": _NAME},
    "SR": {"name": _NAME},
    "SM": {"name": _NAME},
    "VDI": {"name": _NAME},
    "VBD": {"qos": _QOS},
    "VBD_metrics": {"io": _IO},
    "role": {"name": _NAME},
    "VM": {
        "name": _NAME,
        "memory": ("overhead", "target", "static_max", "dynamic_max",
                   "dynamic_min", "static_min"),
        "VCPUs": ("params", "max", "at_startup"),
        "actions": ("after_softreboot", "after_shutdown", "after_reboot",
                    "after_crash"),
        "PV": ("bootloader", "kernel", "ramdisk", "args", "bootloader_args",
               "legacy_args"),
        "HVM": ("boot_policy", "boot_params", "shadow_multiplier"),
    },
    "VM_metrics": {
        "memory": ("actual",),
        "VCPUs": ("number", "utilisation", "CPU", "params", "flags"),
    },
    "VMPP": {"name": _NAME},
    "VMSS": {"name": _NAME},
    "VM_appliance": {"name": _NAME},
    "VM_group": {"name": _NAME},
    "blob": {"name": _NAME},
    "GPU_group": {"name": _NAME},
    "PVS_site": {"name": _NAME},
    "Feature": {"name": _NAME},
    "USB_group": {"name": _NAME},
    "Repository": {"name": _NAME},
    "Observer": {"name": _NAME},
    "Caller": {"name": _NAME},
    "Rate_limit": {"name": _NAME},
}

# (class, wire name) <-> (class, column) for the namespaced fields only.
_TO_COLUMN = {}
_TO_FIELD = {}
for _cls, _spaces in NAMESPACES.items():
    for _ns, _inner in _spaces.items():
        for _f in _inner:
            _TO_COLUMN[(_cls, _ns + "_" + _f)] = _ns + "__" + _f
            _TO_FIELD[(_cls, _ns + "__" + _f)] = _ns + "_" + _f
del _cls, _spaces, _ns, _inner, _f


def column_name(cls_name, field_name):
    """XAPI's database column for a field given by its wire name."""
    return _TO_COLUMN.get((cls_name, field_name), field_name)


def field_name(cls_name, column):
    """The wire name of a database column (the inverse of column_name)."""
    return _TO_FIELD.get((cls_name, column), column)


# -- S-expressions -----------------------------------------------------------

def _quote(s):
    if "\\" in s or "'" in s:
        s = s.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + s + "'"


# XAPI's reader skips blanks and ';' comments; strings may use either quote.
_TOKEN = re.compile(r"""[ \t\r\n]+|;[^\n]*(?:\n|$)"""
                    r"""|'([^'\\]*(?:\\.[^'\\]*)*)'"""
                    r"""|"([^"\\]*(?:\\.[^"\\]*)*)"|(\()|(\))"""
                    r"""|([^"' \t\r\n()]+)""", re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _unescape(s):
    return _UNESCAPE.sub(r"\1", s) if "\\" in s else s


def _parse_sexpr(text):
    """Nested lists of strings; symbols count as strings."""
    stack = [[]]
    pos, end = 0, len(text)
    match = _TOKEN.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise ValueError("bad S-expression at %d: %r" % (pos, text))
        pos = m.end()
        single, double, open_, close, symbol = m.groups()
        if open_:
            stack.append([])
        elif close:
            if len(stack) < 2:
                raise ValueError("unbalanced S-expression: %r" % (text,))
            node = stack.pop()
            stack[-1].append(node)
        elif single is not None:
            stack[-1].append(_unescape(single))
        elif double is not None:
            stack[-1].append(_unescape(double))
        elif symbol is not None:
            stack[-1].append(symbol)
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("not one S-expression: %r" % (text,))
    return stack[0][0]


# What this module (and XAPI) writes: quoted strings, single blanks.
_Q = r"'[^'\\]*(?:\\.[^'\\]*)*'"  # unrolled: much faster in re
_FLAT_SET = re.compile(r"\((?:%s(?: %s)*)?\)\Z" % (_Q, _Q), re.S)
_FLAT_MAP = re.compile(r"\((?:\(%s %s\)(?: \(%s %s\))*)?\)\Z"
                       % (_Q, _Q, _Q, _Q), re.S)
_QUOTED = re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'", re.S)


def parse_set(text):
    """The element strings of a set's database form."""
    if text == "()":
        return []
    if _FLAT_SET.match(text):
        items = _QUOTED.findall(text)
        if "\\" in text:
            items = [_unescape(x) for x in items]
        return items
    node = _parse_sexpr(text)
    if not isinstance(node, list) or any(isinstance(x, list) for x in node):
        raise ValueError("not a set: %r" % (text,))
    return node


def parse_map(text):
    """The (key, value) string pairs of a map's database form."""
    if text == "()":
        return []
    if _FLAT_MAP.match(text):
        items = _QUOTED.findall(text)
        if "\\" in text:
            items = [_unescape(x) for x in items]
        return list(zip(items[0::2], items[1::2]))
    node = _parse_sexpr(text)
    if not isinstance(node, list):
        raise ValueError("not a map: %r" % (text,))
    pairs = []
    for item in node:
        if (not isinstance(item, list) or len(item) != 2
                or isinstance(item[0], list) or isinstance(item[1], list)):
            raise ValueError("not a map: %r" % (text,))
        pairs.append((item[0], item[1]))
    return pairs


# -- values -----------------------------------------------------------------

# Sets and maps of strings are the bulk of a state.db; these build them
# with C-level joins, marking element and pair boundaries with control
# characters no stored string should hold (checked by counting them).
_ITEM, _PAIR = "\x02", "\x03"


def _escape_quoted(raw):
    if "\\" in raw or "'" in raw:
        raw = raw.replace("\\", "\\\\").replace("'", "\\'")
    return raw


def _plain_set_to_db(v):
    if not v:
        return "()"
    raw = _ITEM.join(v)
    if raw.count(_ITEM) != len(v) - 1:
        return "(" + " ".join([_quote(x) for x in v]) + ")"
    return "('" + _escape_quoted(raw).replace(_ITEM, "' '") + "')"


def _plain_map_to_db(v, slow):
    if not v:
        return "()"
    raw = _ITEM.join(map(_PAIR.join, v.items()))
    n = len(v)
    if raw.count(_ITEM) != n - 1 or raw.count(_PAIR) != n:
        return slow(v)
    return "(('" + _escape_quoted(raw).replace(_PAIR, "' '").replace(
        _ITEM, "') ('") + "'))"


def _bool_to_db(v):
    return "true" if v else "false"


def _float_to_db(v):
    return "%.18g" % v


def _int_from_db(text):
    try:
        return int(text)
    except ValueError:
        return int(text.strip(), 0)  # XAPI also reads 0x.., 0o.., 0b..


def _float_from_db(text):
    try:
        return float(text)
    except ValueError:
        try:
            return float.fromhex(text)
        except ValueError:
            raise ValueError("not a float: %r" % (text,))


def _bool_from_db(text):
    if text == "true":
        return True
    if text == "false":
        return False
    folded = text.strip().lower()
    if folded in ("true", "false"):
        return folded == "true"
    raise ValueError("not a bool: %r" % (text,))


_DB_DATETIME = re.compile(r"^\d{8}T\d\d:\d\d:\d\dZ$")


def _datetime_from_db(text):
    if _DB_DATETIME.match(text):
        return DateTime(text)
    return parse_datetime(text)


_TO_CACHE = {}
_FROM_CACHE = {}


def to_db_func(typ):
    """A function value -> database string for ``typ`` (cached per type)."""
    try:
        return _TO_CACHE[typ]
    except KeyError:
        pass
    kind = typ.kind
    if kind in ("string", "ref", "enum", "datetime"):
        fn = str
    elif kind == "int":
        fn = str
    elif kind == "bool":
        fn = _bool_to_db
    elif kind == "float":
        fn = _float_to_db
    elif kind in ("set", "option"):
        elem = typ.elem if kind == "set" else typ.inner
        conv = to_db_func(elem)
        plain = elem.kind in ("string", "ref", "enum")
        if kind == "option":
            def fn(v, conv=conv):
                return "()" if v is None else "(" + _quote(conv(v)) + ")"
        elif plain:
            fn = _plain_set_to_db
        else:
            def fn(v, conv=conv):
                if not v:
                    return "()"
                return "(" + " ".join([_quote(conv(x)) for x in v]) + ")"
    elif kind == "map":
        kconv, vconv = to_db_func(typ.key), to_db_func(typ.value)
        plain = (typ.key.kind in ("string", "ref", "enum")
                 and typ.value.kind in ("string", "ref", "enum"))

        def fn(v, kconv=kconv, vconv=vconv):
            if not v:
                return "()"
            return "(" + " ".join(
                ["(" + _quote(kconv(k)) + " " + _quote(vconv(x)) + ")"
                 for k, x in v.items()]) + ")"
        if plain:
            fn = partial(_plain_map_to_db, slow=fn)
    else:
        raise TypeError("%s values are not stored in the database" % typ)
    _TO_CACHE[typ] = fn
    return fn


def from_db_func(typ):
    """A function database string -> value for ``typ`` (cached per type).
    It raises ValueError for text that is not of the type."""
    try:
        return _FROM_CACHE[typ]
    except KeyError:
        pass
    kind = typ.kind
    if kind in ("string", "ref"):
        fn = str
    elif kind == "enum":
        known = frozenset(typ.values)

        def fn(text, known=known, typ=typ):
            if text in known:
                return text
            try:
                return typ.coerce(text)  # XAPI's enums fold case on input
            except Exception:
                raise ValueError("%r is not in enum %s" % (text, typ.name))
    elif kind == "int":
        fn = _int_from_db
    elif kind == "float":
        fn = _float_from_db
    elif kind == "bool":
        fn = _bool_from_db
    elif kind == "datetime":
        fn = _datetime_from_db
    elif kind == "set":
        conv = from_db_func(typ.elem)
        plain = typ.elem.kind in ("string", "ref")

        def fn(text, conv=conv, plain=plain):
            items = parse_set(text)
            if not plain:
                items = [conv(x) for x in items]
            if len(set(items)) != len(items):
                items = list(dict.fromkeys(items))  # a set holds each once
            return items
    elif kind == "option":
        conv = from_db_func(typ.inner)

        def fn(text, conv=conv):
            items = parse_set(text)
            return conv(items[0]) if items else None
    elif kind == "map":
        kconv, vconv = from_db_func(typ.key), from_db_func(typ.value)
        plain = typ.key.kind == "string" and typ.value.kind == "string"

        def fn(text, kconv=kconv, vconv=vconv, plain=plain):
            pairs = parse_map(text)
            if plain:
                return dict(pairs)
            return {kconv(k): vconv(v) for k, v in pairs}
    else:
        raise TypeError("%s values are not stored in the database" % typ)
    _FROM_CACHE[typ] = fn
    return fn


def to_db(value, typ):
    """The database string form of ``value``, a stored value of ``typ``."""
    return to_db_func(typ)(value)


def from_db(text, typ):
    """The stored value of ``typ`` whose database form is ``text``."""
    return from_db_func(typ)(text)

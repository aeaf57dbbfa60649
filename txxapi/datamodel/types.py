"""
XenAPI types: parsing the model's type strings and checking wire values.

Each type turns a decoded wire value into the stored Python form
(txxapi.values) with ``coerce``, raising TypeMismatch for a value of the
wrong shape and BadEnum for a string outside an enum.  XML-RPC carries
64-bit ints as text, so ``int`` accepts decimal strings; JSON map keys are
always strings, so maps coerce their keys too.
"""

from txxapi.values import EPOCH, NULL_REF, DateTime, parse_datetime

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class TypeMismatch(Exception):
    """A value of the wrong shape.  ``field`` names the record field it
    was found in, when it was in a record."""

    field = None


class BadEnum(Exception):
    field = None

    def __init__(self, enum, value):
        Exception.__init__(self, enum, value)
        self.enum = enum
        self.value = value


class MissingField(Exception):
    """A constructor record lacks a field that has no default."""

    def __init__(self, field):
        Exception.__init__(self, field)
        self.field = field


class Type:
    kind = None

    def zero(self):
        raise NotImplementedError

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self)


class _String(Type):
    kind = "string"

    def coerce(self, v):
        if type(v) is str or isinstance(v, str):
            return str(v)
        raise TypeMismatch(v)

    def zero(self):
        return ""

    def __str__(self):
        return "string"


class _Int(Type):
    kind = "int"

    def coerce(self, v):
        if type(v) is int or (isinstance(v, int) and not isinstance(v, bool)):
            n = int(v)
        elif isinstance(v, str):
            try:
                n = int(v.strip(), 10)
            except ValueError:
                raise TypeMismatch(v)
        else:
            raise TypeMismatch(v)
        if not INT64_MIN <= n <= INT64_MAX:
            raise TypeMismatch(v)
        return n

    def zero(self):
        return 0

    def __str__(self):
        return "int"


class _Float(Type):
    kind = "float"

    def coerce(self, v):
        if isinstance(v, bool):
            raise TypeMismatch(v)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                raise TypeMismatch(v)
        raise TypeMismatch(v)

    def zero(self):
        return 0.0

    def __str__(self):
        return "float"


class _Bool(Type):
    kind = "bool"

    def coerce(self, v):
        if isinstance(v, bool):
            return v
        if v in ("true", "false"):  # the database string form
            return v == "true"
        raise TypeMismatch(v)

    def zero(self):
        return False

    def __str__(self):
        return "bool"


class _DateTime(Type):
    kind = "datetime"

    def coerce(self, v):
        if isinstance(v, DateTime):
            return v
        if isinstance(v, str):
            try:
                return parse_datetime(v)
            except ValueError:
                raise TypeMismatch(v)
        raise TypeMismatch(v)

    def zero(self):
        return EPOCH

    def __str__(self):
        return "datetime"


STRING, INT, FLOAT, BOOL, DATETIME = (
    _String(), _Int(), _Float(), _Bool(), _DateTime())


class Ref(Type):
    kind = "ref"

    def __init__(self, cls):
        self.cls = cls

    def coerce(self, v):
        # Any string is a well-typed ref; whether it names a live object
        # is the database's question (HANDLE_INVALID).
        if isinstance(v, str):
            return str(v)
        raise TypeMismatch(v)

    def zero(self):
        return NULL_REF

    def __str__(self):
        return "%s ref" % self.cls


class EnumType(Type):
    kind = "enum"

    def __init__(self, name, values):
        self.name = name
        self.values = tuple(values)
        self._lookup = frozenset(self.values)
        # XAPI matches enum names case-insensitively on input.
        self._folded = {v.lower(): v for v in self.values}

    def coerce(self, v):
        if not isinstance(v, str):
            raise TypeMismatch(v)
        if v in self._lookup:
            return str(v)
        try:
            return self._folded[v.lower()]
        except KeyError:
            raise BadEnum(self.name, v)

    def zero(self):
        return self.values[0]

    def __str__(self):
        return "enum %s" % self.name


class SetType(Type):
    kind = "set"

    def __init__(self, elem):
        self.elem = elem

    def coerce(self, v):
        if not isinstance(v, (list, tuple)):
            raise TypeMismatch(v)
        coerce = self.elem.coerce
        out = []
        for x in v:
            x = coerce(x)
            if x not in out:  # sets hold each element once
                out.append(x)
        return out

    def zero(self):
        return []

    def __str__(self):
        return "%s set" % self.elem


class MapType(Type):
    kind = "map"

    def __init__(self, key, value):
        self.key = key
        self.value = value

    def coerce(self, v):
        if not isinstance(v, dict):
            raise TypeMismatch(v)
        kc, vc = self.key.coerce, self.value.coerce
        return {kc(k): vc(x) for k, x in v.items()}

    def zero(self):
        return {}

    def __str__(self):
        return "(%s -> %s) map" % (self.key, self.value)


_REQUIRED = object()


class RecordType(Type):
    """A class's record; resolved against the model when first used.

    The only records a client sends are constructor records (the one
    argument of ``<Class>.create``), so coercing one gives the complete
    constructor record: every RW and RO/constructor field, typed, in model
    order (as XAPI reads them), the datamodel's default for an omitted
    one; MissingField for an omitted field without a default.  Other keys
    are ignored, as XAPI ignores them."""

    kind = "record"

    def __init__(self, cls, model):
        self.cls = cls
        self._model = model
        self._fields = None

    def constructor_fields(self):
        """(name, type, default or _REQUIRED) of each constructor field."""
        if self._fields is None:
            cls = self._model.classes[self.cls]
            self._fields = tuple(
                (f.name, f.type,
                 _REQUIRED if f.default_literal is None else f.default)
                for f in cls.stored_fields
                if f.in_constructor and not f.internal)
        return self._fields

    def coerce(self, v):
        if not isinstance(v, dict):
            raise TypeMismatch(v)
        out = {}
        for name, typ, default in self.constructor_fields():
            if name in v:
                value = v[name]
            elif default is _REQUIRED:
                raise MissingField(name)
            else:
                value = default  # coerced too: a fresh copy of it
            try:
                out[name] = typ.coerce(value)
            except (TypeMismatch, BadEnum) as e:
                e.field = name
                raise
        return out

    def zero(self):
        return {}

    def __str__(self):
        return "%s record" % self.cls


class OptionType(Type):
    kind = "option"

    def __init__(self, inner):
        self.inner = inner

    def coerce(self, v):
        return None if v is None else self.inner.coerce(v)

    def zero(self):
        return None

    def __str__(self):
        return "%s option" % self.inner


class VoidType(Type):
    kind = "void"

    def coerce(self, v):
        return v

    def zero(self):
        return ""

    def __str__(self):
        return "void"


class StructType(Type):
    """A free-form struct result, such as event.from's event batch."""

    kind = "struct"

    def __init__(self, text):
        self.text = text

    def coerce(self, v):
        if not isinstance(v, dict):
            raise TypeMismatch(v)
        return v

    def zero(self):
        return {}

    def __str__(self):
        return self.text


VOID = VoidType()
_SIMPLE = {"string": STRING, "int": INT, "float": FLOAT, "bool": BOOL,
           "datetime": DATETIME, "void": VOID,
           "an event batch": StructType("an event batch")}


def parse_type(text, enums, model=None):
    """Parse a model type string, e.g. "(string -> enum vm_operations) map".

    ``enums`` maps enum names to their values."""
    text = text.strip()
    if text in _SIMPLE:
        return _SIMPLE[text]
    if text.endswith(" map") and text.startswith("("):
        inner = text[1:-len(" map")].rstrip()
        assert inner.endswith(")"), text
        inner = inner[:-1]
        depth = 0
        for i, ch in enumerate(inner):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif depth == 0 and inner.startswith(" -> ", i):
                return MapType(parse_type(inner[:i], enums, model),
                               parse_type(inner[i + 4:], enums, model))
        raise ValueError("bad map type %r" % text)
    if text.endswith(" set"):
        return SetType(parse_type(text[:-4], enums, model))
    if text.endswith(" option"):
        return OptionType(parse_type(text[:-7], enums, model))
    if text.endswith(" ref"):
        return Ref(text[:-4])
    if text.endswith(" record"):
        return RecordType(text[:-7], model)
    if text.startswith("enum "):
        name = text[5:]
        return EnumType(name, enums[name])
    raise ValueError("unknown type %r" % text)


def parse_default(literal, typ):
    """Turn a model default literal (as the interface description prints
    it: '""', '{}', 'Halted', 'OpaqueRef:NULL', '{"k" -> "v"}') into a
    stored value of ``typ``."""
    kind = typ.kind
    if kind == "string":
        if literal.startswith('"') and literal.endswith('"'):
            return literal[1:-1]
        return literal
    if kind == "ref":
        return NULL_REF if literal in ("Null", "") else literal
    if kind == "int":
        return int(literal)
    if kind == "float":
        return float(literal)
    if kind == "bool":
        return literal == "true"
    if kind == "datetime":
        return DateTime(literal)
    if kind == "enum":
        return typ.coerce(literal)
    if kind in ("set", "map"):
        body = literal.strip()[1:-1].strip()
        if not body:
            return typ.zero()
        items = _split_top(body)
        if kind == "set":
            return [parse_default(x, typ.elem) for x in items]
        out = {}
        for item in items:
            k, v = item.split(" -> ", 1)
            out[parse_default(k.strip(), typ.key)] = \
                parse_default(v.strip(), typ.value)
        return out
    if kind == "option":
        return None
    raise ValueError("no default form for %s" % typ)


def _split_top(body):
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(body):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "({":
            depth += 1
        elif not quoted and ch in ")}":
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            parts.append(body[start:i].strip())
            start = i + 1
    parts.append(body[start:].strip())
    return parts

"""
The filter expression language of get_all_records_where / get_all_where.

    expr  := value "=" value | expr "and" expr | expr "or" expr
           | "not" expr | "true" | "false" | "(" expr ")"
    value := "\"" chars "\""  |  "field" "\"" name "\""

Behaviour follows XAPI's lexer and grammar exactly:

* blanks are space, tab and newline only; keywords are lowercase and need
  no separator ("truefalse" lexes as two tokens); a literal runs to the
  next double quote, with no escapes.
* "and" and "or" have the same precedence and associate to the left.
* "not" has the LOWEST precedence: it applies to everything up to the end
  of the enclosing parentheses, so ``not A and B`` is ``not (A and B)``.
* "=" compares database strings (txxapi.db.dbstring): enums in their
  spelling, bools as "true"/"false", refs as "OpaqueRef:...", sets and maps
  as S-expressions.  "_ref" names the row's ref.
* A malformed expression is INVALID_VALUE [expr; OCaml's exception text].
  A field the table lacks is only noticed when a row is evaluated and the
  comparison is reached (and/or short-circuit): INTERNAL_ERROR
  ["missing field"; name; ""].

Field names may be XAPI's column names (name__label) or wire names
(name_label).  Each expression is compiled once into Python code per class,
which reads only the fields it uses and converts a field to its string form
only when a plain comparison of the stored value cannot be made.
"""

from functools import lru_cache

from txxapi.db.dbstring import field_name, to_db_func
from txxapi.errors import XenAPIError

__all__ = ["compile_expr", "parse", "Expression", "PARSE_ERROR",
           "LEX_ERROR"]

# What XAPI reports as the second parameter of INVALID_VALUE.
PARSE_ERROR = "Parsing.Parse_error"
LEX_ERROR = 'Failure("lexing: empty token")'

_KEYWORDS = ("true", "false", "field", "and", "or", "not")
_BLANKS = " \t\n"


class _BadExpression(Exception):
    pass


def _tokens(text):
    """Tokens as (kind, literal) pairs; lexing errors surface only when the
    parser reaches them, as with XAPI's on-demand lexer."""
    pos, end = 0, len(text)
    while pos < end:
        ch = text[pos]
        if ch in _BLANKS:
            pos += 1
            continue
        if ch in "=()":
            yield ch, None
            pos += 1
            continue
        if ch == '"':
            close = text.find('"', pos + 1)
            if close < 0:
                break
            yield "str", text[pos + 1:close]
            pos = close + 1
            continue
        for word in _KEYWORDS:
            if text.startswith(word, pos):
                yield word, None
                pos += len(word)
                break
        else:
            break
    if pos < end:
        yield "lexerror", None
    else:
        yield "eof", None


class _Parser:
    def __init__(self, text):
        self._tokens = _tokens(text)
        self._next()

    def _next(self):
        self.kind, self.value = next(self._tokens)
        if self.kind == "lexerror":
            raise _BadExpression(LEX_ERROR)

    def _expect(self, kind):
        if self.kind != kind:
            raise _BadExpression(PARSE_ERROR)
        value = self.value
        if kind != "eof":
            self._next()
        return value

    def whole(self):
        e = self.expr()
        self._expect("eof")
        return e

    def expr(self):
        left = self.operand()
        while self.kind in ("and", "or"):
            op = self.kind
            self._next()
            left = (op, left, self.operand())
        return left

    def operand(self):
        if self.kind == "not":
            self._next()
            return ("not", self.expr())  # reaches as far right as it can
        if self.kind in ("true", "false"):
            kind = self.kind
            self._next()
            return (kind,)
        if self.kind == "(":
            self._next()
            e = self.expr()
            self._expect(")")
            return e
        a = self.value_()
        self._expect("=")
        return ("eq", a, self.value_())

    def value_(self):
        if self.kind == "str":
            return ("literal", self._expect("str"))
        if self.kind == "field":
            self._next()
            return ("field", self._expect("str"))
        raise _BadExpression(PARSE_ERROR)


def parse(text):
    """The expression's tree: ("true",), ("false",), ("not", e),
    ("and", a, b), ("or", a, b), ("eq", v, v) with v ("field", name) or
    ("literal", text).  Raises INVALID_VALUE."""
    try:
        return _Parser(text).whole()
    except _BadExpression as e:
        raise XenAPIError("INVALID_VALUE", text, e.args[0])


def _missing(name):
    raise XenAPIError("INTERNAL_ERROR", "missing field", name, "")


def _view(table, field, ref):
    if table is None or not hasattr(table, "views"):
        _missing(field)
    for set_field, src, src_field in table.views:
        if set_field == field:
            return list(src.indexes[src_field].get(ref, ()))
    _missing(field)


_PLAIN_KINDS = ("string", "ref", "enum", "datetime")


class _CodeGen:
    """Turns a tree into one Python expression over r (ref), f (fields)
    and t (table); constants travel in a namespace, never in the code."""

    def __init__(self, cls):
        self.cls = cls
        self.ns = {"_missing": _missing, "_view": _view}

    def const(self, value):
        name = "k%d" % len(self.ns)
        self.ns[name] = value
        return name

    def resolve(self, name):
        """(kind, wire name, Field or None): kind is "ref", "field",
        "view" or "missing"."""
        if name == "_ref":
            return "ref", name, None
        wire = field_name(self.cls.name, name)
        f = self.cls.fields.get(wire)
        if f is None:
            return "missing", name, None
        return ("view" if f.view_of else "field"), wire, f

    def value(self, v):
        """Code giving the database string of a value."""
        if v[0] == "literal":
            return self.const(v[1])
        kind, wire, f = self.resolve(v[1])
        if kind == "ref":
            return "r"
        if kind == "missing":
            return "_missing(%s)" % self.const(v[1])
        conv = self.const(to_db_func(f.type))
        if kind == "view":
            return "%s(_view(t, %s, r))" % (conv, self.const(wire))
        if f.type.kind in _PLAIN_KINDS:
            return "f[%s]" % self.const(wire)
        return "%s(f[%s])" % (conv, self.const(wire))

    def compare(self, a, b):
        if a[0] == "literal" and b[0] == "field":
            a, b = b, a
        if a[0] == "field" and b[0] == "literal":
            kind, wire, f = self.resolve(a[1])
            if kind == "field":
                return self.field_eq(f, wire, b[1])
        return "(%s == %s)" % (self.value(a), self.value(b))

    def field_eq(self, f, wire, literal):
        """Compare the stored value itself where its string form is known
        to be a function of it alone."""
        get = "f[%s]" % self.const(wire)
        kind = f.type.kind
        if kind in _PLAIN_KINDS:
            return "(%s == %s)" % (get, self.const(literal))
        if kind == "bool":
            if literal == "true":
                return "(not not %s)" % get
            if literal == "false":
                return "(not %s)" % get
            return "False"  # no bool prints as anything else
        if kind == "int":
            try:
                number = int(literal)
            except ValueError:
                number = None
            if number is not None and str(number) == literal:
                return "(%s == %s)" % (get, self.const(number))
            return "False"  # not the decimal form of any int
        conv = self.const(to_db_func(f.type))
        return "(%s(%s) == %s)" % (conv, get, self.const(literal))

    def expr(self, e):
        op = e[0]
        if op == "true":
            return "True"
        if op == "false":
            return "False"
        if op == "not":
            return "(not %s)" % self.expr(e[1])
        if op in ("and", "or"):
            return "(%s %s %s)" % (self.expr(e[1]), op, self.expr(e[2]))
        return self.compare(e[1], e[2])


class Expression:
    """A parsed filter.  Call it as ``expr(table, fields, ref=None)`` with
    a txxapi.db.memory.Table (or a datamodel Class, without which set
    fields computed from other tables cannot be read), or use
    ``select(table)`` for the matching refs of a whole table."""

    def __init__(self, text, tree):
        self.text = text
        self.tree = tree
        self._by_class = {}

    def _compiled(self, cls):
        try:
            return self._by_class[cls]
        except KeyError:
            pass
        gen = _CodeGen(cls)
        body = gen.expr(self.tree)
        source = ("def match(r, f, t):\n    return %s\n"
                  "def select(rows, t):\n"
                  "    return [r for r, w in rows.items()"
                  " for f in (w.fields,) if %s]\n" % (body, body))
        ns = gen.ns
        exec(compile(source, "<filter expression>", "exec"), ns)
        pair = (ns["match"], ns["select"])
        self._by_class[cls] = pair
        return pair

    def __call__(self, table, fields, ref=None):
        cls = getattr(table, "cls", table)
        t = table if table is not cls else None
        return bool(self._compiled(cls)[0](ref, fields, t))

    def select(self, table):
        """Refs of the table's rows that match, in table order."""
        if self.tree == ("true",):
            return list(table.rows)
        return self._compiled(table.cls)[1](table.rows, table)

    def evaluate(self, lookup):
        """Evaluate with ``lookup(name) -> database string`` supplying field
        values (for things that are not database rows, e.g. messages)."""
        def value(v):
            return v[1] if v[0] == "literal" else lookup(v[1])

        def ev(e):
            op = e[0]
            if op == "true":
                return True
            if op == "false":
                return False
            if op == "not":
                return not ev(e[1])
            if op == "and":
                return ev(e[1]) and ev(e[2])
            if op == "or":
                return ev(e[1]) or ev(e[2])
            return value(e[1]) == value(e[2])
        return ev(self.tree)


@lru_cache(maxsize=512)
def compile_expr(text):
    """The Expression for ``text``; clients repeat the same filters, so
    compiled expressions are kept.  Raises INVALID_VALUE."""
    return Expression(text, parse(text))

"""
state.db: the pool database as one XML document, in XAPI's layout.

    <?xml version="1.0" encoding="UTF-8"?>
    <database>
    <manifest><pair key="schema_major_vsn" value="5"/>...</manifest>
    <table name="VM">
    <row ref="OpaqueRef:..." __ctime="12" __mtime="40" _ref="OpaqueRef:..."
         uuid="..." name__label="web01" other_config="(('k'%.'v'))" .../>
    </table>
    <table name="session"/>
    ...
    </database>

Every table the model stores is present; non-persistent ones never have
rows.  A row has one attribute per stored column (database string form,
XAPI column names) plus ref, __ctime/__mtime (the row's generations) and
_ref (XAPI keeps the ref as a column too and expects it).

Attribute values use XAPI's whitespace protection so that blanks survive
XML attribute normalisation and files are interchangeable with XAPI's:
" " -> "%.", tab -> "%t", newline -> "%n", CR -> "%r", "%" -> "%%"; then
the usual XML escapes.  Characters XML 1.0 cannot carry at all (most C0
controls, lone surrogates) are dropped when writing.

Saving is split for the reactor: ``capture(db)`` takes a consistent
snapshot cheaply on the reactor thread (row field dicts are replaced, never
mutated, so references suffice) and ``write(snapshot, path)`` does the
slow part in a worker thread: it streams to a temporary file in the same
directory, fsyncs it, renames it over the old file and fsyncs the
directory.

Loading (``load``, ``import_xapi``) parses with expat, refusing DOCTYPEs
and entity declarations, and puts rows back with Database.load_row: unknown
tables and columns are dropped, missing columns take defaults, computed set
fields (views) and non-persistent tables are ignored.  As XAPI does, the
non-persistent allowed_operations/current_operations columns are reset to
their defaults on load: no operation survives a restart.
"""

import gc
import gzip
import os
import re
import xml.parsers.expat
from collections import Counter
from contextlib import contextmanager
from operator import attrgetter

from twisted.logger import Logger

from txxapi.db.dbstring import column_name, from_db_func, to_db_func
from txxapi.files import atomic_file

__all__ = ["SCHEMA_MAJOR_VSN", "SCHEMA_MINOR_VSN", "Snapshot", "StateDBError",
           "capture", "write", "load", "import_xapi"]

log = Logger()

# XAPI's current schema version (datamodel_common.ml).
SCHEMA_MAJOR_VSN = 5
SCHEMA_MINOR_VSN = 909

# Columns XAPI marks non-persistent on every class: blanked on load.
RESET_ON_LOAD = ("allowed_operations", "current_operations")

_ROWS_PER_CHUNK = 2000
_TEXT_KINDS = ("string", "ref", "enum", "datetime")
_READ_BLOCK = 1 << 20
_SEP = "\x00"  # cannot occur in XML text, so it can delimit values
# XML 1.0 has no way to carry these, not even as character references.
_NOT_XML = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML_OR_SEP = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class StateDBError(Exception):
    """The file is not a readable state.db."""


class Snapshot:
    """The database at one generation: per table, its class and its rows
    as (ref, fields, ctime, mtime), or None for a non-persistent table."""

    __slots__ = ("generation", "tables")

    def __init__(self, generation, tables):
        self.generation = generation
        self.tables = tables

    def count(self):
        return sum(len(rows) for _, rows in self.tables if rows)


_ROW_PARTS = attrgetter("ref", "fields", "ctime", "mtime")


@contextmanager
def _no_gc():
    """Allocating millions of small objects makes the cyclic collector walk
    the whole (large) heap again and again; none of them form cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def capture(db):
    """Snapshot ``db`` (reactor thread; no value is copied)."""
    tables = []
    with _no_gc():
        for t in db.tables.values():
            rows = list(map(_ROW_PARTS, t.rows.values())) \
                if t.cls.persistent else None
            tables.append((t.cls, rows))
    return Snapshot(db.generation, tables)


# -- writing --------------------------------------------------------------

def _escape(text):
    """XAPI's blank protection, then XML attribute escaping."""
    return (text.replace("%", "%%").replace(" ", "%.").replace("\t", "%t")
            .replace("\n", "%n").replace("\r", "%r").replace("&", "&amp;")
            .replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


class _WritePlan:
    """How one class's rows become <row> elements: a generated function
    gives a row's values (database strings) joined by _SEP, and a
    %-template lays the escaped values out as attributes."""

    def __init__(self, cls):
        self.cls = cls
        self.fields = list(cls.stored_fields)
        names = ["ref", "__ctime", "__mtime", "_ref"] + [
            column_name(cls.name, f.name) for f in self.fields]
        self.width = len(names)
        self.template = "<row %s/>\n" % " ".join(
            '%s="%%s"' % n for n in names)
        ns = {}
        parts = ["r", "str(c)", "str(m)", "r"]
        for i, f in enumerate(self.fields):
            get = "f[%r]" % f.name
            kind = f.type.kind
            if kind in _TEXT_KINDS:
                parts.append(get)
            elif kind == "int":
                parts.append("str(%s)" % get)
            elif kind == "bool":
                parts.append("('true' if %s else 'false')" % get)
            elif kind == "float":
                parts.append("'%%.18g' %% (%s,)" % get)
            else:
                ns["c%d" % i] = to_db_func(f.type)
                parts.append("c%d(%s)" % (i, get))
        source = "def row(r, f, c, m):\n    return %r.join((%s,))\n" % (
            _SEP, ", ".join(parts))
        exec(compile(source, "<state.db row %s>" % cls.name, "exec"), ns)
        self.row = ns["row"]

    def row_values(self, ref, fields, ctime, mtime):
        """The slow, careful path: one value at a time."""
        values = [ref, str(ctime), str(mtime), ref]
        for f in self.fields:
            value = fields.get(f.name, f.default)
            try:
                if f.type.kind in _TEXT_KINDS and not isinstance(value, str):
                    raise TypeError(value)
                text = to_db_func(f.type)(value)
            except Exception:
                log.warn("state.db: {cls}.{field} of {ref} is not a {typ} "
                         "({value!r}); writing the default",
                         cls=self.cls.name, field=f.name, ref=ref,
                         typ=str(f.type), value=value)
                text = to_db_func(f.type)(f.default)
            values.append(_NOT_XML_OR_SEP.sub("", text))
        return values

    def chunk_text(self, rows):
        try:
            joined = _SEP.join([self.row(*r) for r in rows])
        except (KeyError, TypeError, ValueError):
            joined = None
        if joined is not None:
            if joined.count(_SEP) != self.width * len(rows) - 1:
                joined = None  # a value holds the separator itself
            elif _NOT_XML.search(joined):
                log.warn("state.db: dropping characters XML cannot carry "
                         "from {cls} values", cls=self.cls.name)
                joined = _NOT_XML.sub("", joined)
        if joined is None:
            values = []
            for r in rows:
                values.extend(self.row_values(*r))
            joined = _SEP.join(values)
        return (self.template * len(rows)) % tuple(
            _escape(joined).split(_SEP))


_PLANS = {}


def _write_plan(cls):
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _WritePlan(cls)
    return plan


def _write_tables(out, snapshot):
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<database>\n'
              '<manifest><pair key="schema_major_vsn" value="%d"/>'
              '<pair key="schema_minor_vsn" value="%d"/>'
              '<pair key="generation_count" value="%d"/></manifest>\n'
              % (SCHEMA_MAJOR_VSN, SCHEMA_MINOR_VSN, snapshot.generation))
    for cls, rows in snapshot.tables:
        if not rows:
            out.write('<table name="%s"/>\n' % _escape(cls.name))
            continue
        out.write('<table name="%s">\n' % _escape(cls.name))
        plan = _write_plan(cls)
        for i in range(0, len(rows), _ROWS_PER_CHUNK):
            out.write(plan.chunk_text(rows[i:i + _ROWS_PER_CHUNK]))
        out.write("</table>\n")
    out.write("</database>\n")


def write(snapshot, path):
    """Write ``snapshot`` to ``path`` atomically and durably (worker
    thread).  Returns the size of the file."""
    with atomic_file(path, "w", encoding="utf-8", newline="\n",
                     buffering=1 << 20) as out:
        _write_tables(out, snapshot)
    size = os.stat(path).st_size
    return size


# -- reading --------------------------------------------------------------

def _unprotect(text):
    """Undo XAPI's blank protection ("%_", an old spelling of two blanks,
    is still read).  Splitting at "%%" first pairs every "%" the way a
    left-to-right scan does; what is left holds no "%%"."""
    if "%" not in text:
        return text
    return "%".join(
        part.replace("%_", "  ").replace("%.", " ").replace("%t", "\t")
        .replace("%n", "\n").replace("%r", "\r")
        for part in text.split("%%"))


class _Layout:
    """A table's rows nearly always list the same columns in the same
    order; for each such list a generated function builds the field dict
    straight from the list of values."""

    def __init__(self, plan, columns):
        index = {c: i for i, c in enumerate(columns)}
        self.ref = index.get("ref")
        self.ctime = index.get("__ctime")
        self.mtime = index.get("__mtime")
        self.dropped = [c for c in columns
                        if c not in plan.columns and c not in plan.ignored
                        and c not in ("ref", "__ctime", "__mtime")]
        self.rows = 0
        self.specs = []  # (value index, field name, converter or None)
        seen = set()
        for i, c in enumerate(columns):
            spec = plan.columns.get(c)
            if spec is None or spec[0] in seen or spec[0] in plan.reset:
                continue
            seen.add(spec[0])
            self.specs.append((i, spec[0], spec[1]))
        ns = {}
        items = []
        for i, name, conv in self.specs:
            if conv is None:
                items.append("%r: v[%d]" % (name, i))
            else:
                ns["c%d" % i] = conv
                items.append("%r: c%d(v[%d])" % (name, i, i))
        source = "def build(v):\n    return {%s}\n" % ", ".join(items)
        exec(compile(source, "<state.db %s>" % plan.name, "exec"), ns)
        self.build = ns["build"]

    def build_slowly(self, values, bad, table):
        """Field by field, so one bad value costs only itself."""
        fields = {}
        for i, name, conv in self.specs:
            try:
                fields[name] = values[i] if conv is None else conv(values[i])
            except (ValueError, TypeError):
                bad[(table, name)] += 1  # the default applies
        return fields


class _ReadPlan:
    """How one table's columns become field values."""

    def __init__(self, cls):
        self.name = cls.name
        self.columns = {}   # column -> (field name, converter or None)
        self.ignored = {"_ref"}  # columns known but never loaded
        for f in cls.fields.values():
            column = column_name(cls.name, f.name)
            if f.view_of is not None:
                self.ignored.update((column, f.name))
                continue
            conv = None if f.type.kind in ("string", "ref") \
                else from_db_func(f.type)
            self.columns[column] = (f.name, conv)
        for f in cls.fields.values():
            # Also accept wire names, unless that is another column.
            if f.view_of is None:
                self.columns.setdefault(f.name, self.columns[
                    column_name(cls.name, f.name)])
        self.reset = frozenset(n for n in RESET_ON_LOAD if n in cls.fields)
        self.layouts = {}

    def layout(self, columns):
        layout = self.layouts.get(columns)
        if layout is None:
            layout = self.layouts[columns] = _Layout(self, columns)
        return layout


class _Reader:
    def __init__(self, db):
        self.db = db
        self.plans = {}
        self.manifest = {}
        self.table = None       # name of the table being read
        self.plan = None        # its plan, None when its rows are dropped
        self.loaded = Counter()          # table -> rows
        self.dropped_tables = Counter()  # table -> rows
        self.bad_values = Counter()      # (table, field) -> rows
        self.no_ref = Counter()          # table -> rows
        self.max_generation = 0
        self.depth = 0
        self.root_seen = False

    def plan_for(self, name):
        try:
            return self.plans[name]
        except KeyError:
            pass
        t = self.db.tables.get(name)
        plan = _ReadPlan(t.cls) if t is not None and t.cls.persistent \
            else None
        self.plans[name] = plan
        return plan

    @property
    def dropped_columns(self):
        """(table, column) -> rows"""
        out = Counter()
        for plan in self.plans.values():
            for layout in (plan.layouts.values() if plan else ()):
                for column in layout.dropped:
                    out[(plan.name, column)] += layout.rows
        return out

    # expat handlers; attributes come as a flat [name, value, ...] list

    def start(self, tag, attrs):
        self.depth += 1
        if tag == "row":
            self.row(attrs)
            return
        attrs = dict(zip(attrs[0::2], attrs[1::2]))
        if tag == "pair":
            if "key" in attrs:
                self.manifest[attrs["key"]] = attrs.get("value", "")
        elif tag == "table":
            self.table = attrs.get("name", "")
            self.plan = self.plan_for(self.table)
            if self.table not in self.db.tables:
                self.dropped_tables[self.table] += 0
        elif tag == "database":
            if self.depth == 1:
                self.root_seen = True
        elif tag != "manifest":
            log.warn("state.db: ignoring unexpected element {tag}", tag=tag)
        if self.depth == 1 and not self.root_seen:
            raise StateDBError("the document element is %r, not database"
                               % (tag,))

    def end(self, tag):
        self.depth -= 1
        if tag == "table":
            self.table = self.plan = None

    def row(self, attrs):
        plan = self.plan
        if plan is None:
            self.dropped_tables[self.table] += 1
            return
        layout = plan.layout(tuple(attrs[0::2]))
        values = attrs[1::2]
        if layout.ref is None or not values[layout.ref]:
            self.no_ref[plan.name] += 1
            return
        blob = _SEP.join(values)
        if "%" in blob:
            values = _unprotect(blob).split(_SEP)
        try:
            fields = layout.build(values)
        except (ValueError, TypeError):
            fields = layout.build_slowly(values, self.bad_values, plan.name)
        try:
            ctime = int(values[layout.ctime]) if layout.ctime is not None \
                else 0
            mtime = int(values[layout.mtime]) if layout.mtime is not None \
                else 0
        except ValueError:
            ctime = mtime = 0
        layout.rows += 1
        self.db.load_row(plan.name, values[layout.ref], fields, ctime, mtime)
        self.loaded[plan.name] += 1
        if mtime > self.max_generation or ctime > self.max_generation:
            self.max_generation = max(ctime, mtime)


def _open(path):
    """The file, decompressed if it is gzipped (XAPI's "compress" option
    in db.conf)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _refuse(*args):
    raise StateDBError("DOCTYPE and entity declarations are not accepted")


def _read(path, db):
    reader = _Reader(db)
    parser = xml.parsers.expat.ParserCreate()
    parser.ordered_attributes = True
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.SetParamEntityParsing(
        xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    f = _open(path)  # a missing file is the caller's business
    try:
        with f, _no_gc():
            while True:
                block = f.read(_READ_BLOCK)
                parser.Parse(block, not block)
                if not block:
                    break
    except (xml.parsers.expat.ExpatError, OSError, EOFError) as e:
        raise StateDBError("%s: %s" % (path, e))
    if not reader.root_seen:
        raise StateDBError("%s: no database element" % (path,))
    try:
        generation = int(reader.manifest.get("generation_count", 0))
    except ValueError:
        raise StateDBError("%s: bad generation_count %r"
                           % (path, reader.manifest["generation_count"]))
    # Rows never postdate the manifest in a sound file; if they do, keep
    # the counter ahead of them so new writes still order after them.
    db.generation = max(generation, reader.max_generation)
    return generation, reader


def _report(path, reader):
    for table, rows in sorted(reader.dropped_tables.items()):
        log.warn("state.db {path}: dropped table {table} ({rows} rows)",
                 path=path, table=table, rows=rows)
    for (table, column), rows in sorted(reader.dropped_columns.items()):
        log.warn("state.db {path}: dropped column {table}.{column} "
                 "({rows} rows)", path=path, table=table, column=column,
                 rows=rows)
    for (table, name), rows in sorted(reader.bad_values.items()):
        log.warn("state.db {path}: unreadable {table}.{field} in {rows} "
                 "rows, default used", path=path, table=table, field=name,
                 rows=rows)
    for table, rows in sorted(reader.no_ref.items()):
        log.warn("state.db {path}: {rows} rows of {table} have no ref",
                 path=path, table=table, rows=rows)


def load(path, db):
    """Load a state.db written by ``write`` into ``db``; returns its
    generation_count (which db.generation is set to).  Raises StateDBError
    for an unreadable file, after which ``db`` may hold some of its rows;
    a missing file raises FileNotFoundError."""
    generation, reader = _read(path, db)
    _report(path, reader)
    return generation


def import_xapi(path, db):
    """Import a state.db written by XAPI itself.  Returns {table: rows
    imported}; what could not be kept is logged."""
    generation, reader = _read(path, db)
    major = reader.manifest.get("schema_major_vsn")
    minor = reader.manifest.get("schema_minor_vsn")
    if major != str(SCHEMA_MAJOR_VSN):
        log.warn("state.db {path}: schema {major}.{minor}, expected major "
                 "version {expected}", path=path, major=major, minor=minor,
                 expected=SCHEMA_MAJOR_VSN)
    _report(path, reader)
    summary = dict(reader.loaded)
    log.info("state.db {path}: imported {summary} at generation {gen}",
             path=path, summary=summary, gen=generation)
    return summary

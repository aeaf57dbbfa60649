"""
The in-memory pool database.

Tables are the datamodel's stored classes; rows are keyed by ref and hold a
dict of field values (txxapi.values forms).  One global generation counter
orders every write; each row keeps the generation that created it and the
one that last changed it, which is what event.from folds over.

Writes happen on the reactor thread only, so no lock is needed; a row's
field dict is replaced, never mutated, on every write (copy on write), so a
reader that took a reference (a snapshot writer in a thread, an event
batch) keeps a consistent view.

Every write is announced to listeners as a change record
``(generation, op, table, ref, fields)`` with op "add" (all fields),
"mod" (changed fields), "del" (None) or "touch" ({}): the redo log, the
event hub and replication to other hosts all consume this one feed.
"""

from bisect import bisect_right

from zope.interface import implementer

from txxapi.errors import XenAPIError, handle_invalid, uuid_invalid
from txxapi.interfaces import IDatabase
from txxapi.values import NULL_REF, new_ref, new_uuid

# How many recent changes the log keeps for incremental event.from; older
# tokens fall back to a scan of the row generations.
CHANGE_LOG_KEEP = 200000
# Fields looked up by value on hot paths, indexed besides those that feed
# computed set fields: a start's memory count reads every host's
# scheduled guests (placement reads them for every host of the pool).
LOOKUP_INDEXES = (("VM", "scheduled_to_be_resident_on"),)
TOMBSTONE_KEEP = 100000


class Row:
    __slots__ = ("ref", "fields", "ctime", "mtime")

    def __init__(self, ref, fields, ctime, mtime):
        self.ref = ref
        self.fields = fields
        self.ctime = ctime
        self.mtime = mtime


class Record(dict):
    """One row's record as get_record answers it, naming what it was
    built from: ``source`` is (table, ref, the row's field dict), and a
    field dict is never mutated (a write replaces it), so a record with
    the same field dict and the same computed set fields is the same
    record, and an encoder may answer it with the bytes it wrote before
    (txxapi.wire.shared.encoded_record)."""

    __slots__ = ("source",)


class RecordMap:
    """Records of many rows, captured at once and built as they are read.

    The rows' field dicts are captured when the map is made (cheap: they
    are never mutated), so every record shows one consistent state; the
    records themselves are built during iteration, which lets a large
    answer be encoded and sent in slices between other work.  Computed
    set fields are read when each record is built."""

    __slots__ = ("_table", "_rows")

    def __init__(self, table, rows):
        self._table = table
        self._rows = rows

    def __len__(self):
        return len(self._rows)

    def items(self):
        table, make = self._table, Database.record_of
        for ref, fields in self._rows:
            yield ref, make(table, ref, fields)

    def to_dict(self):
        return dict(self.items())


class Table:
    """One class's rows and the indexes over them."""

    def __init__(self, cls):
        self.cls = cls
        self.name = cls.name
        self.rows = {}
        self.by_uuid = {}
        self.by_name = {} if "name_label" in cls.fields else None
        # ref field -> {target ref -> {ref: None}}, for fields whose values
        # other classes' set fields are computed from.
        self.indexes = {}
        self.record_names = [f.name for f in cls.record_fields
                             if f.view_of is None]
        self.defaults = {f.name: f.default for f in cls.stored_fields}
        # (set field in a record, table holding the ref, indexed field)
        self.views = []
        # indexed ref field -> table whose computed set field it feeds
        self.view_targets = {}

    def index(self, field):
        return self.indexes.setdefault(field, {})


@implementer(IDatabase)
class Database:
    def __init__(self, model):
        self.model = model
        self.generation = 0
        # Generation of the last write to a persistent table: a call that
        # moved it must wait for the redo log before answering.
        self.persistent_generation = 0
        self.tables = {c.name: Table(c) for c in model.classes.values()
                       if c.in_db}
        for name, table in self.tables.items():
            for set_field, (src_cls, src_field) in table.cls.views.items():
                src = self.tables[src_cls]
                src.index(src_field)
                src.view_targets[src_field] = name
                table.views.append((set_field, src, src_field))
        for name, field in LOOKUP_INDEXES:
            if name in self.tables:
                self.tables[name].index(field)
        self.listeners = []
        # True while listeners hear of a change another host wrote
        # (apply_announced), not one of this host's own.
        self.replicated = False
        # Recent changes, for event.from: parallel lists of generations and
        # (table, ref); tombstones remember what deleted rows were.
        self.log_gens = []
        self.log_items = []
        self.log_start = 0  # changes at generations <= this were trimmed
        self.tombstones = {}  # (table, ref) -> (deleted gen, created gen)

    # -- reads ------------------------------------------------------------

    def table(self, name):
        return self.tables[name]

    def row(self, table, ref):
        try:
            return self.tables[table].rows[ref]
        except KeyError:
            raise handle_invalid(table, ref)

    def exists(self, table, ref):
        return ref in self.tables[table].rows

    def fields(self, table, ref):
        return self.row(table, ref).fields

    def get(self, table, ref, field):
        t = self.tables[table]
        try:
            row = t.rows[ref]
        except KeyError:
            raise handle_invalid(table, ref)
        for set_field, src, src_field in t.views:
            if set_field == field:
                return list(src.indexes[src_field].get(ref, ()))
        return row.fields[field]

    def record(self, table, ref):
        t = self.tables[table]
        try:
            row = t.rows[ref]
        except KeyError:
            raise handle_invalid(table, ref)
        return self._record(t, row)

    def answer_record(self, table, ref):
        """record(), as a Record: only for a result answered as it is."""
        row = self.row(table, ref)
        t = self.tables[table]
        rec = self.record_of(t, ref, row.fields, Record)
        rec.source = (t, ref, row.fields)
        return rec

    @staticmethod
    def _record(t, row):
        return Database.record_of(t, row.ref, row.fields)

    @staticmethod
    def record_of(t, ref, fields, make=dict):
        # A row's fields are most often the record's, in its order: one
        # copy in C then, instead of a look-up per field.
        names = t.record_names
        if list(fields) == names:
            rec = make(fields)
        else:
            rec = make((n, fields[n]) for n in names)
        for set_field, src, src_field in t.views:
            rec[set_field] = list(src.indexes[src_field].get(ref, ()))
        return rec

    def record_map(self, table, refs=None):
        """A RecordMap of a table's rows, all of them or those given."""
        t = self.tables[table]
        rows = t.rows
        if refs is None:
            pairs = [(r, row.fields) for r, row in rows.items()]
        else:
            pairs = [(r, rows[r].fields) for r in refs if r in rows]
        return RecordMap(t, pairs)

    def records(self, table, refs=None):
        """(ref, record) pairs of a table, all of them or those given."""
        t = self.tables[table]
        rows = t.rows
        make = self._record
        if refs is None:
            return [(r, make(t, row)) for r, row in rows.items()]
        return [(r, make(t, rows[r])) for r in refs if r in rows]

    def refs(self, table):
        return list(self.tables[table].rows)

    def by_uuid(self, table, uuid):
        try:
            return self.tables[table].by_uuid[uuid]
        except KeyError:
            raise uuid_invalid(table, uuid)

    def by_name_label(self, table, label):
        t = self.tables[table]
        return list(t.by_name.get(label, ())) if t.by_name is not None else []

    def where(self, table, **equals):
        """Refs of the rows whose fields equal the given values."""
        t = self.tables[table]
        items = list(equals.items())
        if len(items) == 1 and items[0][0] in t.indexes:
            field, value = items[0]
            return list(t.indexes[field].get(value, ()))
        return [r for r, row in t.rows.items()
                if all(row.fields.get(k) == v for k, v in items)]

    def count(self, table):
        return len(self.tables[table].rows)

    # -- writes (reactor thread only) ---------------------------------------

    def create(self, table, fields, ref=None):
        """Add a row; missing fields take the datamodel's defaults."""
        t = self.tables[table]
        ref = ref or new_ref()
        if ref in t.rows:
            raise XenAPIError("INTERNAL_ERROR",
                              "duplicate ref %s in table %s" % (ref, table))
        row_fields = dict(t.defaults)
        unknown = set(fields) - set(row_fields)
        if unknown:
            raise XenAPIError("INTERNAL_ERROR", "unknown fields %s in %s"
                              % (sorted(unknown), table))
        row_fields.update(fields)
        if not row_fields.get("uuid"):
            row_fields["uuid"] = new_uuid()
        uuid = row_fields["uuid"]
        if uuid in t.by_uuid:
            raise XenAPIError("INTERNAL_ERROR",
                              "duplicate uuid %s in table %s" % (uuid, table))
        gen = self._next_generation()
        row = Row(ref, row_fields, gen, gen)
        t.rows[ref] = row
        t.by_uuid[uuid] = ref
        if t.by_name is not None:
            t.by_name.setdefault(row_fields.get("name_label", ""), {})[ref] \
                = None
        touched = []
        for field, index in t.indexes.items():
            self._index_add(index, row_fields.get(field), ref)
            touched += self._view_targets(t, field, row_fields.get(field))
        self._logged(gen, t, ref, "add", row_fields)
        self._touch_all(touched)
        return ref

    def update(self, table, ref, changes):
        """Replace some fields of a row (copy on write)."""
        if not changes:
            return
        t = self.tables[table]
        try:
            row = t.rows[ref]
        except KeyError:
            raise handle_invalid(table, ref)
        old = row.fields
        unknown = [k for k in changes if k not in old]
        if unknown:
            raise XenAPIError("INTERNAL_ERROR", "unknown fields %s in %s"
                              % (unknown, table))
        # Writing a value a field already holds is no change at all: no
        # generation, no event (metrics writers rely on this).
        changes = {k: v for k, v in changes.items() if old[k] != v}
        if not changes:
            return
        new = dict(old)
        new.update(changes)
        touched = []
        for field, index in t.indexes.items():
            if field in changes:
                self._index_remove(index, old[field], ref)
                self._index_add(index, new[field], ref)
                touched += self._view_targets(t, field, old[field])
                touched += self._view_targets(t, field, new[field])
        if t.by_name is not None and "name_label" in changes:
            self._index_remove(t.by_name, old["name_label"], ref)
            t.by_name.setdefault(new["name_label"], {})[ref] = None
        if "uuid" in changes and changes["uuid"] != old["uuid"]:
            if changes["uuid"] in t.by_uuid:
                raise XenAPIError("INTERNAL_ERROR", "duplicate uuid")
            del t.by_uuid[old["uuid"]]
            t.by_uuid[changes["uuid"]] = ref
        gen = self._next_generation()
        row.fields = new
        row.mtime = gen
        self._logged(gen, t, ref, "mod", dict(changes))
        self._touch_all(touched)

    def delete(self, table, ref):
        t = self.tables[table]
        try:
            row = t.rows.pop(ref)
        except KeyError:
            raise handle_invalid(table, ref)
        fields = row.fields
        t.by_uuid.pop(fields["uuid"], None)
        if t.by_name is not None:
            self._index_remove(t.by_name, fields.get("name_label", ""), ref)
        touched = []
        for field, index in t.indexes.items():
            self._index_remove(index, fields.get(field), ref)
            touched += self._view_targets(t, field, fields.get(field))
        gen = self._next_generation()
        self.tombstones[(table, ref)] = (gen, row.ctime)
        if len(self.tombstones) > TOMBSTONE_KEEP:
            self._trim_tombstones()
        self._logged(gen, t, ref, "del", None)
        self._touch_all(touched)

    def touch(self, table, ref):
        """Bump a row's generation without changing it (event.inject)."""
        t = self.tables[table]
        try:
            row = t.rows[ref]
        except KeyError:
            raise handle_invalid(table, ref)
        gen = self._next_generation()
        row.mtime = gen
        self._logged(gen, t, ref, "touch", {})
        return gen

    def _view_targets(self, t, field, value):
        """(table, ref) of rows whose computed set fields list this row
        through ``field``: they change when it does."""
        target = t.view_targets.get(field)
        if target is None or value is None:
            return []
        rows = self.tables[target].rows
        values = value if isinstance(value, list) else (value,)
        return [(target, v) for v in values if v in rows]

    def _touch_all(self, targets):
        for table, ref in dict.fromkeys(targets):
            if ref in self.tables[table].rows:
                self.touch(table, ref)

    # -- loading (startup, replication) ------------------------------------

    def load_row(self, table, ref, fields, ctime, mtime):
        """Put a row back as persisted, without announcing it."""
        t = self.tables[table]
        row_fields = dict(t.defaults)
        row_fields.update((k, v) for k, v in fields.items()
                          if k in row_fields)
        if ref in t.rows:
            self._unindex(t, t.rows[ref])
        t.rows[ref] = Row(ref, row_fields, ctime, mtime)
        t.by_uuid[row_fields["uuid"]] = ref
        if t.by_name is not None:
            t.by_name.setdefault(row_fields.get("name_label", ""), {})[ref] \
                = None
        for field, index in t.indexes.items():
            self._index_add(index, row_fields.get(field), ref)

    def apply_change(self, record):
        """Replay one change record (redo log, replication) silently."""
        gen, op, table, ref, fields = record
        t = self.tables.get(table)
        if t is None:
            return
        if op == "add":
            self.load_row(table, ref, fields, gen, gen)
        elif op in ("mod", "touch") and ref in t.rows:
            row = t.rows[ref]
            known = {k: v for k, v in (fields or {}).items()
                     if k in row.fields}
            merged = dict(row.fields)
            merged.update(known)
            self._unindex(t, row)
            self.load_row(table, ref, merged, row.ctime, gen)
        elif op == "del" and ref in t.rows:
            self._unindex(t, t.rows.pop(ref))
        self.generation = max(self.generation, gen)

    def apply_announced(self, record):
        """Apply a change another host wrote (a replica of its log) as a
        write of this database: under a generation of its own, in the
        change log and the tombstones, told to the listeners, so that
        event.from here sees it.  (Touches of computed fields come as
        records of their own.)"""
        _gen, op, table, ref, fields = record
        t = self.tables.get(table)
        if t is None:
            return
        row = t.rows.get(ref)
        if op == "add" or (op in ("mod", "touch") and row is not None):
            gen = self._next_generation()
            if op != "add":
                merged = dict(row.fields)
                merged.update((k, v) for k, v in (fields or {}).items()
                              if k in row.fields)
                fields = merged
            self.load_row(table, ref, fields, gen if row is None
                          else row.ctime, gen)
        elif op == "del" and row is not None:
            gen = self._next_generation()
            self._unindex(t, t.rows.pop(ref))
            self.tombstones[(table, ref)] = (gen, row.ctime)
            if len(self.tombstones) > TOMBSTONE_KEEP:
                self._trim_tombstones()
        else:
            return
        # Listeners tell such a change from this host's own writes.
        self.replicated = True
        try:
            self._logged(gen, t, ref, op, record[4])
        finally:
            self.replicated = False

    def reset_runtime(self, names):
        """Put runtime-only fields (operations in flight, say) back to
        their defaults after a restart, silently: nothing they described
        survived it."""
        for t in self.tables.values():
            reset = {n: t.defaults[n] for n in names if n in t.defaults}
            if not reset:
                continue
            for row in t.rows.values():
                if any(row.fields[n] != v for n, v in reset.items()):
                    fields = dict(row.fields)
                    fields.update(reset)
                    row.fields = fields

    def _unindex(self, t, row):
        fields = row.fields
        t.by_uuid.pop(fields["uuid"], None)
        if t.by_name is not None:
            self._index_remove(t.by_name, fields.get("name_label", ""),
                               row.ref)
        for field, index in t.indexes.items():
            self._index_remove(index, fields.get(field), row.ref)

    # -- change log -----------------------------------------------------------

    def changes_since(self, generation):
        """(table, ref) pairs changed after ``generation``, each once, or
        None when the log no longer reaches back that far."""
        if generation < self.log_start:
            return None
        i = bisect_right(self.log_gens, generation)
        return dict.fromkeys(self.log_items[i:])

    def _next_generation(self):
        self.generation += 1
        return self.generation

    def _logged(self, gen, t, ref, op, fields):
        self.log_gens.append(gen)
        self.log_items.append((t.name, ref))
        if len(self.log_gens) > 2 * CHANGE_LOG_KEEP:
            cut = len(self.log_gens) - CHANGE_LOG_KEEP
            self.log_start = self.log_gens[cut - 1]
            del self.log_gens[:cut]
            del self.log_items[:cut]
        if t.cls.persistent:
            self.persistent_generation = gen
        record = (gen, op, t.name, ref, fields)
        for listener in self.listeners:
            listener(record, t.cls)

    def _trim_tombstones(self):
        keep = sorted(self.tombstones.items(), key=lambda kv: kv[1][0])
        self.tombstones = dict(keep[len(keep) // 2:])

    @staticmethod
    def _index_add(index, value, ref):
        if isinstance(value, list):
            for v in value:
                if v != NULL_REF:
                    index.setdefault(v, {})[ref] = None
        elif value is not None and value != NULL_REF:
            index.setdefault(value, {})[ref] = None

    @staticmethod
    def _index_remove(index, value, ref):
        for v in (value if isinstance(value, list) else (value,)):
            refs = index.get(v)
            if refs is not None:
                refs.pop(ref, None)
                if not refs:
                    del index[v]

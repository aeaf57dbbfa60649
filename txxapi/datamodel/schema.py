"""
The objects the datamodel is stated in (Class, Field, Message, Enum) and the
Model that binds them: it parses types, resolves defaults and relations and
derives every implicit message, so dispatch, records, RBAC and the database
schema all read one structure.
"""

import functools

from txxapi.datamodel import types as T
from txxapi.datamodel.roles import READ_ONLY

RW, RO_CONSTRUCTOR, RO_RUNTIME = "RW", "RO/constructor", "RO/runtime"
PUBLISHED, PROTOTYPED, DEPRECATED, REMOVED = (
    "Published_s", "Prototyped_s", "Deprecated_s", "Removed_s")

# Classes whose records are not database rows.
NOT_IN_DB = frozenset(["event", "sr_stat", "probe_result", "data_source",
                       "message", "vdi_nbd_server_info", "auth"])
# Rows of these tables live only in memory: they vanish with a restart
# (roles are rebuilt from the datamodel at every start).
NOT_PERSISTENT = frozenset(["session", "task", "user", "role"])
# Classes without events (XAPI's gen_events flag is off for them).
NO_EVENTS = frozenset(["session", "event", "user", "data_source"])
# Classes whose explicit calls have no Async form.
NO_ASYNC_CLASSES = frozenset(["session", "event", "task", "data_source",
                              "blob"])


class Enum:
    def __init__(self, name, values):
        self.name = name
        self.values = tuple(values)


class Field:
    def __init__(self, name, type, qualifier, default=None, read_roles=None,
                 write_roles=None, state=PUBLISHED, internal=False):
        self.name = name
        self.internal = internal  # stored, but never in a record
        self.type_text = type
        self.qualifier = qualifier
        self.default_literal = default
        self.read_roles = read_roles
        self.write_roles = write_roles
        self.state = state
        self.cls = None       # bound by Model
        self.type = None
        self.default = None
        self.view_of = None   # (class, field) this set is computed from

    @property
    def in_constructor(self):
        return self.qualifier in (RW, RO_CONSTRUCTOR)

    def __repr__(self):
        return "<Field %s.%s>" % (self.cls and self.cls.name, self.name)


class Param:
    __slots__ = ("type_text", "name", "type", "default", "has_default")

    def __init__(self, type_text, name, default=None, has_default=False):
        self.type_text = type_text
        self.name = name
        self.type = None
        self.default = default
        self.has_default = has_default


class Message:
    """One wire message.  ``kind`` is "explicit" for hand-written calls and
    names the generic behaviour for implicit ones ("get", "set", "add_to",
    "get_record", "create", ...)."""

    def __init__(self, name, params, result, roles, errors=(), session=True,
                 state=PUBLISHED, kind="explicit", field=None, hidden=False):
        self.name = name
        self.params = [Param(t, n) for t, n in params]
        self.result_text = result
        self.roles = tuple(roles)
        self.errors = tuple(errors)
        self.session = session
        self.state = state
        self.kind = kind
        self.field = field
        self.hidden = hidden
        self.cls = None
        self.result = None
        self.wire_name = None
        self.permission = None
        self.is_async = False

    @property
    def implicit(self):
        return self.kind != "explicit"

    @functools.cached_property
    def required_count(self):
        # Read on every call; the defaults are all set once the model is
        # built, before any call.
        return sum(1 for p in self.params if not p.has_default)

    def __repr__(self):
        return "<Message %s>" % self.wire_name


class Class:
    def __init__(self, name, fields=(), messages=(), enums=(), implicit=None,
                 read_roles=READ_ONLY, field_messages=True, state=PUBLISHED):
        self.name = name
        self.fields = {f.name: f for f in fields}
        self.explicit = list(messages)
        self.enums = list(enums)
        self.implicit_roles = dict(implicit or {})
        self.read_roles = read_roles
        self.field_messages = field_messages
        self.state = state
        self.messages = {}
        self.in_db = name not in NOT_IN_DB
        self.persistent = self.in_db and name not in NOT_PERSISTENT
        self.events = self.in_db and name not in NO_EVENTS
        self.views = {}         # set field name -> (class, ref field)
        self.stored_fields = []  # fields that are database columns
        self.record_fields = []  # fields a record shows, in model order

    def __repr__(self):
        return "<Class %s>" % self.name


_FIELD_KINDS = (("set", "set_"), ("add_to", "add_to_"),
                ("remove_from", "remove_from_"), ("add", "add_"),
                ("remove", "remove_"))


def _role_state(value):
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return value
    return value, PUBLISHED


class Model:
    """The whole datamodel, bound and cross-referenced."""

    def __init__(self, classes, errors, relations=(), param_defaults=None,
                 hidden=None, internal_fields=None):
        self.classes = {c.name: c for c in classes}
        for cls_name, entries in (internal_fields or {}).items():
            c = self.classes[cls_name]
            for name, type_text in entries:
                c.fields[name] = Field(name, type_text, RO_RUNTIME,
                                       internal=True)
        self.errors = dict(errors)
        self.enums = {}
        for c in classes:
            for e in c.enums:
                self.enums[e.name] = e.values
        self.messages = {}
        self._by_lower = {c.name.lower(): c for c in classes}
        for c in classes:
            self._bind_fields(c)
        for (one_cls, one_field), (many_cls, many_field) in relations:
            if (one_cls, one_field) == (many_cls, many_field):
                continue
            cls = self.classes[many_cls]
            cls.views[many_field] = (one_cls, one_field)
            cls.fields[many_field].view_of = (one_cls, one_field)
        for c in classes:
            c.stored_fields = [f for f in c.fields.values()
                               if f.view_of is None]
            c.record_fields = [f for f in c.fields.values() if not f.internal]
            self._derive_messages(c)
            for m in c.explicit:
                self._add(c, m)
        for cls_name, entries in (hidden or {}).items():
            c = self.classes[cls_name]
            for name, params, result, roles, session in entries:
                self._add(c, Message(name, params, result, roles,
                                     session=session, hidden=True))
        for (cls_name, msg_name), defaults in (param_defaults or {}).items():
            m = self.classes[cls_name].messages[msg_name]
            for p in m.params:
                if p.name in defaults:
                    p.default = defaults[p.name]
                    p.has_default = True

    def cls(self, name):
        return self.classes[name]

    def class_by_lower(self, name):
        """Events name classes in lower case; resolve them."""
        return self._by_lower.get(name.lower())

    def parse_type(self, text):
        return T.parse_type(text, self.enums, self)

    def _bind_fields(self, c):
        for f in c.fields.values():
            f.cls = c
            f.type = self.parse_type(f.type_text)
            if f.read_roles is None:
                f.read_roles = c.read_roles
            if f.default_literal is not None:
                f.default = T.parse_default(f.default_literal, f.type)
            else:
                f.default = f.type.zero()

    def _derive_messages(self, c):
        rec = c.name + " record"
        ref = c.name + " ref"
        generic = {
            "get_record": ((("%s" % ref, "self"),), rec),
            "get_by_uuid": ((("string", "uuid"),), ref),
            "get_by_name_label": ((("string", "label"),), ref + " set"),
            "get_all": ((), ref + " set"),
            "get_all_records": ((), "(%s -> %s) map" % (ref, rec)),
            "create": (((rec, "args"),), ref),
            "destroy": (((ref, "self"),), "void"),
        }
        for name, (params, result) in generic.items():
            if name in c.implicit_roles:
                roles, state = _role_state(c.implicit_roles[name])
                self._add(c, Message(name, params, result, roles,
                                     state=state, kind=name))
        if c.in_db and "get_all" in c.implicit_roles:
            # Callable, though the interface description does not list them.
            where = (("string", "expr"),)
            self._add(c, Message("get_all_records_where", where,
                                 generic["get_all_records"][1], c.read_roles,
                                 kind="get_all_records_where", hidden=True))
            self._add(c, Message("get_all_where", where, ref + " set",
                                 c.read_roles, kind="get_all_where",
                                 hidden=True))
        if not c.field_messages:
            return
        for f in c.fields.values():
            if f.internal:
                continue
            self._add(c, Message("get_" + f.name, (((ref, "self"),)),
                                 f.type_text, f.read_roles, state=f.state,
                                 kind="get", field=f))
            if f.qualifier != RW:
                continue
            shapes = [("set", (("value", f.type_text),))]
            if f.type.kind == "map":
                shapes += [("add_to", (("key", str(f.type.key)),
                                       ("value", str(f.type.value)))),
                           ("remove_from", (("key", str(f.type.key)),))]
            elif f.type.kind == "set":
                shapes += [("add", (("value", str(f.type.elem)),)),
                           ("remove", (("value", str(f.type.elem)),))]
            for kind, args in shapes:
                params = ((ref, "self"),) + tuple((t, n) for n, t in args)
                self._add(c, Message(kind + "_" + f.name, params, "void",
                                     f.write_roles, state=f.state,
                                     kind=kind, field=f))

    def _add(self, c, m):
        m.cls = c
        m.wire_name = "%s.%s" % (c.name, m.name)
        m.permission = m.wire_name.lower()
        m.result = self.parse_type(m.result_text)
        for p in m.params:
            p.type = self.parse_type(p.type_text)
        m.is_async = (c.name not in NO_ASYNC_CLASSES and not m.hidden and (
            m.kind == "explicit" or m.kind in ("create", "destroy")))
        c.messages[m.name] = m
        self.messages[m.wire_name] = m

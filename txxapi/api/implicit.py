"""
The generic behaviour behind every implicit message: getters, setters,
map and set updates, records, lookups, create and destroy.  Which of them
a class has, and with which types, comes from the datamodel; this module
only says what each kind does.
"""

from txxapi.db.where import compile_expr
from txxapi.errors import XenAPIError


def handler(message):
    return _KINDS[message.kind]


def _get(ctx, ref):
    m = ctx.message
    return ctx.db.get(m.cls.name, ref, m.field.name)


def _set(ctx, ref, value):
    m = ctx.message
    ctx.db.fields(m.cls.name, ref)  # HANDLE_INVALID first
    ctx.db.update(m.cls.name, ref, {m.field.name: value})
    return ""


def _add_to(ctx, ref, key, value):
    m = ctx.message
    current = ctx.db.fields(m.cls.name, ref)
    old = current[m.field.name]
    if key in old:
        raise XenAPIError("MAP_DUPLICATE_KEY", m.cls.name, m.field.name,
                          current["uuid"], str(key))
    new = dict(old)
    new[key] = value
    ctx.db.update(m.cls.name, ref, {m.field.name: new})
    return ""


def _remove_from(ctx, ref, key):
    m = ctx.message
    old = ctx.db.fields(m.cls.name, ref)[m.field.name]
    if key in old:
        new = dict(old)
        del new[key]
        ctx.db.update(m.cls.name, ref, {m.field.name: new})
    return ""


def _add(ctx, ref, value):
    m = ctx.message
    old = ctx.db.fields(m.cls.name, ref)[m.field.name]
    if value not in old:
        ctx.db.update(m.cls.name, ref, {m.field.name: old + [value]})
    return ""


def _remove(ctx, ref, value):
    m = ctx.message
    old = ctx.db.fields(m.cls.name, ref)[m.field.name]
    if value in old:
        ctx.db.update(m.cls.name, ref,
                      {m.field.name: [v for v in old if v != value]})
    return ""


def _get_record(ctx, ref):
    return ctx.db.answer_record(ctx.message.cls.name, ref)


def _get_by_uuid(ctx, uuid):
    return ctx.db.by_uuid(ctx.message.cls.name, uuid)


def _get_by_name_label(ctx, label):
    return ctx.db.by_name_label(ctx.message.cls.name, label)


def _get_all(ctx):
    return ctx.db.refs(ctx.message.cls.name)


def _get_all_records(ctx):
    return ctx.db.record_map(ctx.message.cls.name)


def _matching(ctx, expr):
    return compile_expr(expr).select(ctx.db.table(ctx.message.cls.name))


def _get_all_records_where(ctx, expr):
    return ctx.db.record_map(ctx.message.cls.name, _matching(ctx, expr))


def _get_all_where(ctx, expr):
    return _matching(ctx, expr)


def _create(ctx, record):
    # Dispatch has completed and checked the record (RecordType.coerce).
    return ctx.db.create(ctx.message.cls.name, record)


def _destroy(ctx, ref):
    ctx.db.delete(ctx.message.cls.name, ref)
    return ""


_KINDS = {
    "get": _get, "set": _set, "add_to": _add_to,
    "remove_from": _remove_from, "add": _add, "remove": _remove,
    "get_record": _get_record, "get_by_uuid": _get_by_uuid,
    "get_by_name_label": _get_by_name_label, "get_all": _get_all,
    "get_all_records": _get_all_records,
    "get_all_records_where": _get_all_records_where,
    "get_all_where": _get_all_where, "create": _create, "destroy": _destroy,
}

"""message.*: alerts, served from the message store (txxapi.messages)."""

from txxapi.api.registry import implements
from txxapi.db.dbstring import to_db
from txxapi.db.where import compile_expr
from txxapi.errors import XenAPIError
from txxapi.messages import MESSAGE_FIELDS


def _store(ctx):
    return ctx.server.messages


@implements("message.create")
def create(ctx, name, priority, cls, obj_uuid, body):
    return _store(ctx).create(name, priority, cls, obj_uuid, body)


@implements("message.destroy")
def destroy(ctx, self):
    _store(ctx).record(self)
    return _store(ctx).destroy([self]).addCallback(lambda _: "")


@implements("message.destroy_many")
def destroy_many(ctx, messages):
    store = _store(ctx)
    for ref in messages:
        store.record(ref)
    return store.destroy(list(dict.fromkeys(messages))).addCallback(
        lambda _: "")


@implements("message.get_record")
def get_record(ctx, self):
    return _store(ctx).record(self)


@implements("message.get_by_uuid")
def get_by_uuid(ctx, uuid):
    try:
        return _store(ctx).by_uuid[uuid]
    except KeyError:
        raise XenAPIError("UUID_INVALID", "message", uuid)


@implements("message.get_all")
def get_all(ctx):
    return list(_store(ctx).messages)


@implements("message.get_all_records")
def get_all_records(ctx):
    return _store(ctx).records()


@implements("message.get_since")
def get_since(ctx, since):
    return _store(ctx).records(lambda r: r["timestamp"] > since)


@implements("message.get")
def get(ctx, cls, obj_uuid, since):
    return _store(ctx).records(
        lambda r: r["cls"] == cls and r["obj_uuid"] == obj_uuid
        and r["timestamp"] > since)


@implements("message.get_all_records_where")
def get_all_records_where(ctx, expr):
    compiled = compile_expr(expr)

    def matches(record):
        def lookup(name):
            field = MESSAGE_FIELDS.get(name.replace("__", "_"))
            if field is None:
                raise XenAPIError("INTERNAL_ERROR", "missing field", name, "")
            return to_db(record[field.name], field.type)
        return compiled.evaluate(lookup)

    return _store(ctx).records(matches)

"""host.*: questions about and operations on one host."""

from txxapi.api.registry import implements
from txxapi.values import DateTime


@implements("host.get_servertime")
def get_servertime(ctx, host):
    ctx.db.fields("host", host)
    return DateTime.now()


@implements("host.get_server_localtime")
def get_server_localtime(ctx, host):
    ctx.db.fields("host", host)
    return DateTime.now()

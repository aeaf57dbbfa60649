"""host.*: questions about and operations on one host."""

from txxapi.api.registry import implements
from txxapi.values import DateTime
from txxapi.vmspec import host_free_memory


@implements("host.get_servertime")
def get_servertime(ctx, host):
    ctx.db.fields("host", host)
    return DateTime.now()


@implements("host.get_server_localtime")
def get_server_localtime(ctx, host):
    ctx.db.fields("host", host)
    return DateTime.now()


@implements("host.compute_free_memory")
def compute_free_memory(ctx, host):
    """Memory left for guests by the toolstack's own accounting (what a
    VM.start checks against), not the hypervisor's live figure."""
    return host_free_memory(ctx.db, host)


@implements("host.compute_memory_overhead")
def compute_memory_overhead(ctx, host):
    return ctx.db.fields("host", host)["memory_overhead"]

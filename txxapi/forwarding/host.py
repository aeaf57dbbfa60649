"""
Forwarding rules of calls that answer from one host's own state: a
host's clock and its RRDs run on that host, a VM's RRDs where it runs,
an SR's where it is plugged, as XAPI's message forwarding sends them;
pool.designate_new_master on the host it names, and a host's external
authentication on that host (its directory configuration is its own);
a host's reboot and shutdown on that host, marked.
"""

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards

DATA_SOURCE_CALLS = ("get_data_sources", "query_data_source",
                     "record_data_source", "forget_data_source_archives")


@forwards("host.get_servertime", "host.get_server_localtime",
          # Run by the host that is to be master (txxapi.pool.transition).
          "pool.designate_new_master",
          # pool.sync_database's wait for each slave's replica.
          "host.request_backup",
          "host.enable_external_auth", "host.disable_external_auth",
          "host.backup_rrds",
          *["host." + name for name in DATA_SOURCE_CALLS])
def on_host(ctx, host, *args):
    return Route(hosts.named(ctx, host))


@forwards("host.reboot", "host.shutdown")
def power(ctx, host):
    """On the host itself, marked so that no VM is started or moved
    there meanwhile (txxapi.migration.host_operations)."""
    return Route(hosts.named(ctx, host),
                 [("host", host, ctx.message.wire_name.split(".")[1])])


@forwards(*["VM." + name for name in DATA_SOURCE_CALLS])
def on_vm(ctx, vm, *args):
    return Route(hosts.of_vm(ctx, vm))


@forwards(*["SR." + name for name in DATA_SOURCE_CALLS])
def on_sr(ctx, sr, *args):
    ctx.db.fields("SR", sr)
    return Route(hosts.with_sr_plugged(ctx, sr))

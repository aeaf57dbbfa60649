"""
Forwarding rules of the host's network interfaces (txxapi/network): a
PIF's calls run on its host, PIF.scan on the host it scans, as XAPI's
message forwarding sends them.  Nothing is marked.
"""

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards


@forwards("PIF.scan")
def on_host(ctx, host):
    return Route(hosts.named(ctx, host))


@forwards("PIF.reconfigure_ip", "host.management_reconfigure")
def on_pif_host(ctx, pif, *args):
    return Route(ctx.db.fields("PIF", pif)["host"])

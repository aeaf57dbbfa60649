"""
pool.sync_database and the host.request_backup it makes of every host,
as XAPI's.  XAPI copies its database to each slave; here every write the
master acknowledged is already on a quorum of the pool's etcd members,
so what is left to wait for is each slave's hot replica: the call
answers once every live slave's replica holds the master's generation
of when it was made (a slave not live is left out, as it is from every
call).  On a pool of one there is nothing to wait for.
"""

from twisted.internet import defer

from txxapi.api.registry import implements
from txxapi.forwarding import hosts, remote


@implements("pool.sync_database")
@defer.inlineCallbacks
def sync_database(ctx):
    generation = ctx.db.persistent_generation
    slaves = sorted(hosts.members(ctx) - {hosts.this_host(ctx)})
    results = yield defer.DeferredList(
        [remote.call_on(ctx, slave, "host.request_backup",
                        [slave, generation, True], with_task=False)
         for slave in slaves], consumeErrors=True)
    for ok, result in results:
        if not ok:
            result.raiseException()
    return ""


@implements("host.request_backup")
def request_backup(ctx, host, generation, force):
    """On the host named: once its replica holds ``generation`` (the
    master's database is its own)."""
    ctx.db.fields("host", host)
    wait = getattr(ctx.server.persistence, "caught_up", None)
    if wait is None or ctx.server.identity.is_master:
        return ""
    return wait(generation).addCallback(lambda _: "")

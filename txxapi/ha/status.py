"""
The failover plan's figures in the database: whether a plan exists for
n host failures, how many the pool tolerates, ha_plan_exists_for and
ha_overcommitted kept current with XAPI's alerts on their transitions,
and the check that refuses a change that would break the plan.  The
search runs off the reactor.
"""

from twisted.internet import defer, threads

from txxapi.errors import XenAPIError
from txxapi.ha import planner, state


# XAPI's alert priorities for the planner's two pool messages.
OVERCOMMITTED_PRIORITY = 3
DROP_PRIORITY = 3


def pool_of(db):
    return db.refs("pool")[0]


def alert(ctx, name, priority, body):
    pool = pool_of(ctx.db)
    ctx.server.messages.create(name, priority, "Pool",
                               ctx.db.fields("pool", pool)["uuid"], body)


def planned(fn, *args):
    """Run a planner function off the reactor: the state is read from
    the database first, the search (a fraction of a second at 64 hosts
    x 4,096 VMs, more at 16-32 hosts) runs in a thread."""
    return threads.deferToThread(fn, *args)


def plan_exists(db, n, **change):
    return planned(planner.plan_for_n_failures,
                    state.pool_state(db, **change), n).addCallback(
        lambda result: result == planner.PLAN_FOR_ALL)


def max_failures(db, protected=None):
    return planned(planner.max_failures_to_tolerate,
                    state.pool_state(db, protected))


@defer.inlineCallbacks
def update_pool_status(ctx):
    """Recompute ha_plan_exists_for and ha_overcommitted as XAPI's
    update_pool_status does (it runs whether or not HA is on), raising
    the pool alerts on the transitions."""
    db = ctx.db
    pool = pool_of(db)
    p = db.fields("pool", pool)
    target = p["ha_host_failures_to_tolerate"]
    if (yield plan_exists(db, target)):
        db.update("pool", pool, {"ha_overcommitted": False,
                                 "ha_plan_exists_for": target})
        return
    best = yield max_failures(db)
    p = db.fields("pool", pool)
    if p["ha_plan_exists_for"] != best:
        db.update("pool", pool, {"ha_plan_exists_for": min(target, best)})
        if best < p["ha_plan_exists_for"]:
            alert(ctx, "HA_POOL_DROP_IN_PLAN_EXISTS_FOR", DROP_PRIORITY,
                   str(best))
    if not p["ha_overcommitted"]:
        db.update("pool", pool, {"ha_overcommitted": True})
        alert(ctx, "HA_POOL_OVERCOMMITTED", OVERCOMMITTED_PRIORITY,
               "The failover tolerance for pool '%s' has dropped and the "
               "initially specified number of host failures to tolerate "
               "can no longer be guaranteed" % p["name_label"])


@defer.inlineCallbacks
def assert_change_preserves_plan(db, n=None, **change):
    """With HA on and overcommit not allowed, refuse a change that would
    turn the plan for ha_plan_exists_for failures (if one exists now)
    into none."""
    p = db.fields("pool", pool_of(db))
    if not p["ha_enabled"] or p["ha_allow_overcommit"]:
        return
    now = p["ha_plan_exists_for"]
    if not (yield plan_exists(db, now)):
        return
    after = now if n is None else n
    if not (yield plan_exists(db, after, **change)):
        raise XenAPIError("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN")

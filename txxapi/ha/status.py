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
from txxapi.values import NULL_REF


# XAPI's alert priorities for the planner's two pool messages.
OVERCOMMITTED_PRIORITY = 3
DROP_PRIORITY = 3


def pool_of(ctx):
    """The pool's ref: the server's (known once its database is open),
    else the database's one pool."""
    pool = getattr(ctx.server, "pool_ref", None)
    return pool if pool is not None else ctx.db.refs("pool")[0]


def guards_plan(ctx):
    """Whether HA refuses changes that break its plan: HA on, overcommit
    not allowed."""
    p = ctx.db.fields("pool", pool_of(ctx))
    return p["ha_enabled"] and not p["ha_allow_overcommit"]


def alert(ctx, name, priority, body):
    pool = pool_of(ctx)
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
    pool = pool_of(ctx)
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


def starts_in_flight(db):
    """The VMs a start or resume under way will protect: held on a host
    (scheduled_to_be_resident_on) with the "restart" priority, not yet
    always-run.  Planned for as protected already, so that a placement
    admitted after theirs counts on their restart too."""
    def starting(vm):
        return vm["scheduled_to_be_resident_on"] != NULL_REF and \
            vm["ha_restart_priority"] == state.RESTART and \
            not vm["ha_always_run"]
    return [ref for ref in db.refs("VM") if starting(db.fields("VM", ref))]


def assert_change_preserves_plan(ctx, n=None, **change):
    """With HA on and overcommit not allowed, refuse (a Deferred failing
    with HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN) a change that would turn
    the plan for ha_plan_exists_for failures (if one exists now) into
    none.  ``change``: what state.pool_state takes (extra VMs to protect,
    hosts to disable, VMs arriving on hosts); ``n``: a new number of
    failures.  Both states are read now, in this reactor step: only the
    searches run later."""
    if not guards_plan(ctx):
        return defer.succeed(None)
    db = ctx.db
    now = db.fields("pool", pool_of(ctx))["ha_plan_exists_for"]
    after = now if n is None else n
    starting = starts_in_flight(db)
    before_state = state.pool_state(db, extra=starting)
    change["extra"] = starting + [
        v for v in change.get("extra", ()) if v not in starting]
    after_state = state.pool_state(db, **change)

    def breaks():
        return planner.plan_for_n_failures(before_state, now) == \
            planner.PLAN_FOR_ALL and \
            planner.plan_for_n_failures(after_state, after) != \
            planner.PLAN_FOR_ALL

    def refuse(broken):
        if broken:
            raise XenAPIError("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN")
    return planned(breaks).addCallback(refuse)


def assert_placement_preserves_plan(ctx, vm, host):
    """XAPI's check before a VM is placed on a host (a start, a resume,
    a move): a VM about to become protected (priority "restart", not yet
    always-run: its start protects it) is checked as a new one to
    protect, any other as arriving there."""
    v = ctx.db.fields("VM", vm)
    if v["ha_restart_priority"] == state.RESTART and not v["ha_always_run"]:
        return assert_change_preserves_plan(ctx, extra=[vm])
    return assert_change_preserves_plan(ctx, arriving=[(host, vm)])


def placement_admission(ctx, vm, host):
    """A forwarding rule's ``admit`` for placing vm on host: None where
    HA guards no plan (nothing to wait for)."""
    if not guards_plan(ctx):
        return None
    return lambda: assert_placement_preserves_plan(ctx, vm, host)

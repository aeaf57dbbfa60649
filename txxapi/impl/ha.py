"""
The HA planning calls that need only the database: how many host
failures the pool tolerates (now or with hypothetical priorities), where
failed VMs would go, whether a plan exists, the failures-to-tolerate
target and a VM's restart priority, with XAPI's checks.  Enabling and
disabling HA need the liveness machinery and are not among them.
"""

from twisted.internet import defer, threads

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError, handle_invalid, invalid_value
from txxapi.ha import planner, state

# XAPI's alert priorities for the planner's two pool messages.
OVERCOMMITTED_PRIORITY = 3
DROP_PRIORITY = 3


def _pool(db):
    return db.refs("pool")[0]


def _alert(ctx, name, priority, body):
    pool = _pool(ctx.db)
    ctx.server.messages.create(name, priority, "Pool",
                               ctx.db.fields("pool", pool)["uuid"], body)


def _planned(fn, *args):
    """Run a planner function off the reactor: the state is read from
    the database first, the search (a fraction of a second at 64 hosts
    x 4,096 VMs, more at 16-32 hosts) runs in a thread."""
    return threads.deferToThread(fn, *args)


def _plan_exists(db, n, **change):
    return _planned(planner.plan_for_n_failures,
                    state.pool_state(db, **change), n).addCallback(
        lambda result: result == planner.PLAN_FOR_ALL)


def _max_failures(db, protected=None):
    return _planned(planner.max_failures_to_tolerate,
                    state.pool_state(db, protected))


@defer.inlineCallbacks
def update_pool_status(ctx):
    """Recompute ha_plan_exists_for and ha_overcommitted as XAPI's
    update_pool_status does (it runs whether or not HA is on), raising
    the pool alerts on the transitions."""
    db = ctx.db
    pool = _pool(db)
    p = db.fields("pool", pool)
    target = p["ha_host_failures_to_tolerate"]
    if (yield _plan_exists(db, target)):
        db.update("pool", pool, {"ha_overcommitted": False,
                                 "ha_plan_exists_for": target})
        return
    best = yield _max_failures(db)
    p = db.fields("pool", pool)
    if p["ha_plan_exists_for"] != best:
        db.update("pool", pool, {"ha_plan_exists_for": min(target, best)})
        if best < p["ha_plan_exists_for"]:
            _alert(ctx, "HA_POOL_DROP_IN_PLAN_EXISTS_FOR", DROP_PRIORITY,
                   str(best))
    if not p["ha_overcommitted"]:
        db.update("pool", pool, {"ha_overcommitted": True})
        _alert(ctx, "HA_POOL_OVERCOMMITTED", OVERCOMMITTED_PRIORITY,
               "The failover tolerance for pool '%s' has dropped and the "
               "initially specified number of host failures to tolerate "
               "can no longer be guaranteed" % p["name_label"])


@defer.inlineCallbacks
def assert_change_preserves_plan(db, n=None, **change):
    """With HA on and overcommit not allowed, refuse a change that would
    turn the plan for ha_plan_exists_for failures (if one exists now)
    into none."""
    p = db.fields("pool", _pool(db))
    if not p["ha_enabled"] or p["ha_allow_overcommit"]:
        return
    now = p["ha_plan_exists_for"]
    if not (yield _plan_exists(db, now)):
        return
    after = now if n is None else n
    if not (yield _plan_exists(db, after, **change)):
        raise XenAPIError("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN")


@implements("pool.ha_compute_max_host_failures_to_tolerate")
@defer.inlineCallbacks
def compute_max_host_failures_to_tolerate(ctx):
    db = ctx.db
    n = yield _max_failures(db)
    pool = _pool(db)
    p = db.fields("pool", pool)
    if p["ha_enabled"]:
        target = p["ha_host_failures_to_tolerate"]
        if p["ha_overcommitted"] != (target > n):
            db.update("pool", pool, {"ha_overcommitted": target > n})
        if p["ha_plan_exists_for"] != n:
            db.update("pool", pool, {"ha_plan_exists_for": min(target, n)})
            if n < p["ha_plan_exists_for"]:
                _alert(ctx, "HA_POOL_DROP_IN_PLAN_EXISTS_FOR", DROP_PRIORITY,
                       str(n))
    return n


@implements("pool.ha_compute_hypothetical_max_host_failures_to_tolerate")
def compute_hypothetical_max_host_failures_to_tolerate(ctx, configuration):
    for vm, priority in configuration.items():
        if priority not in state.VALID_PRIORITIES:
            raise invalid_value("ha_restart_priority", priority)
    for vm in configuration:
        if not ctx.db.exists("VM", vm):
            raise handle_invalid("VM", vm)
    protected = [vm for vm, priority in configuration.items()
                 if priority == state.RESTART]
    return _max_failures(ctx.db, protected)


@implements("pool.ha_compute_vm_failover_plan")
def compute_vm_failover_plan(ctx, failed_hosts, failed_vms):
    """VM -> {"host": where it would restart} or, for a VM that fits
    nowhere, {"error_code": why}: its agility error, else
    HOST_NOT_ENOUGH_FREE_MEMORY."""
    db = ctx.db
    for vm in failed_vms:
        if not db.exists("VM", vm):
            raise handle_invalid("VM", vm)
    plan = state.evacuation_plan(db, failed_hosts, failed_vms)
    result = {}
    for vm in failed_vms:
        if vm in plan:
            result[vm] = {"host": plan[vm]}
            continue
        try:
            state.assert_agile(db, vm)
            code = "HOST_NOT_ENOUGH_FREE_MEMORY"
        except XenAPIError as e:
            code = e.code
        result[vm] = {"error_code": code}
    return result


@implements("pool.ha_failover_plan_exists")
def failover_plan_exists(ctx, n):
    return _plan_exists(ctx.db, n)


@implements("pool.set_ha_host_failures_to_tolerate")
@defer.inlineCallbacks
def set_ha_host_failures_to_tolerate(ctx, self, value):
    db = ctx.db
    db.fields("pool", self)
    if value < 0:
        raise invalid_value("ha_host_failures_to_tolerate", value)
    # No plan at all blocks nothing.
    if db.fields("pool", _pool(db))["ha_plan_exists_for"] > 0:
        yield assert_change_preserves_plan(db, value)
    db.update("pool", self, {"ha_host_failures_to_tolerate": value})
    yield update_pool_status(ctx)


@implements("VM.set_ha_restart_priority")
@defer.inlineCallbacks
def set_ha_restart_priority(ctx, self, value):
    db = ctx.db
    vm = db.fields("VM", self)
    if value not in state.VALID_PRIORITIES:
        raise invalid_value("ha_restart_priority", value)
    current = vm["ha_restart_priority"]
    if current != state.RESTART and value == state.RESTART:
        if vm["power_state"] != "Halted":
            yield assert_change_preserves_plan(db, extra=[self])
        if db.fields("pool", _pool(db))["ha_enabled"]:
            yield update_pool_status(ctx)
    vm = db.fields("VM", self)
    if current != value:
        changes = {"ha_restart_priority": value}
        # A running VM is protected (or not) at once.
        if vm["power_state"] == "Running":
            changes["ha_always_run"] = value == state.RESTART
        db.update("VM", self, changes)


@implements("VM.assert_agile")
def assert_agile(ctx, self):
    ctx.db.fields("VM", self)
    state.assert_agile(ctx.db, self)

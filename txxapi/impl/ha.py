"""
The HA planning calls that need only the database: how many host
failures the pool tolerates (now or with hypothetical priorities), where
failed VMs would go, whether a plan exists, the failures-to-tolerate
target and a VM's restart priority, with XAPI's checks.  Enabling and
disabling HA need the liveness machinery and are not among them.
"""

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


def update_pool_status(ctx):
    """Recompute ha_plan_exists_for and ha_overcommitted as XAPI's
    update_pool_status does (it runs whether or not HA is on), raising
    the pool alerts on the transitions."""
    db = ctx.db
    pool = _pool(db)
    p = db.fields("pool", pool)
    target = p["ha_host_failures_to_tolerate"]
    if state.plan_for_n_failures(db, target) == planner.PLAN_FOR_ALL:
        db.update("pool", pool, {"ha_overcommitted": False,
                                 "ha_plan_exists_for": target})
        return
    best = state.max_failures_to_tolerate(db)
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


def assert_change_preserves_plan(db, n=None, **change):
    """With HA on and overcommit not allowed, refuse a change that would
    turn the plan for ha_plan_exists_for failures (if one exists now)
    into none."""
    p = db.fields("pool", _pool(db))
    if not p["ha_enabled"] or p["ha_allow_overcommit"]:
        return
    now = p["ha_plan_exists_for"]
    if state.plan_for_n_failures(db, now) != planner.PLAN_FOR_ALL:
        return
    after = now if n is None else n
    if state.plan_for_n_failures(db, after, **change) != planner.PLAN_FOR_ALL:
        raise XenAPIError("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN")


@implements("pool.ha_compute_max_host_failures_to_tolerate")
def compute_max_host_failures_to_tolerate(ctx):
    db = ctx.db
    n = state.max_failures_to_tolerate(db)
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
    return state.max_failures_to_tolerate(ctx.db, protected)


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
    return state.plan_for_n_failures(ctx.db, n) == planner.PLAN_FOR_ALL


@implements("pool.set_ha_host_failures_to_tolerate")
def set_ha_host_failures_to_tolerate(ctx, self, value):
    db = ctx.db
    db.fields("pool", self)
    if value < 0:
        raise invalid_value("ha_host_failures_to_tolerate", value)
    # No plan at all blocks nothing.
    if db.fields("pool", _pool(db))["ha_plan_exists_for"] > 0:
        assert_change_preserves_plan(db, value)
    db.update("pool", self, {"ha_host_failures_to_tolerate": value})
    update_pool_status(ctx)


@implements("VM.set_ha_restart_priority")
def set_ha_restart_priority(ctx, self, value):
    db = ctx.db
    vm = db.fields("VM", self)
    if value not in state.VALID_PRIORITIES:
        raise invalid_value("ha_restart_priority", value)
    current = vm["ha_restart_priority"]
    if current != state.RESTART and value == state.RESTART:
        if vm["power_state"] != "Halted":
            assert_change_preserves_plan(db, extra=[self])
        if db.fields("pool", _pool(db))["ha_enabled"]:
            update_pool_status(ctx)
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

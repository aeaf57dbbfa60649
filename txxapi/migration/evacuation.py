"""
host.evacuate, host.assert_can_evacuate and
host.get_vms_which_prevent_evacuation, as XAPI computes its evacuation
plan (without workload balancing):

* the targets are the other enabled hosts; with none, every VM of the
  host is NO_HOSTS_AVAILABLE [vm];
* with HA on, a VM HA does not protect is HOST_EVACUATE_VM_NOT_HA_
  PROTECTED [vm] (it would not come back after a failure either);
* a VM must be able to boot on every target (assert_can_boot_here
  without the memory check: VM_REQUIRES_SR, VM_REQUIRES_NETWORK...), and
  pass pool_migrate's operation check (VM_BAD_POWER_STATE for a paused
  VM, OTHER_OPERATION_IN_PROGRESS...);
* the VMs that may move are packed onto the targets by memory, the
  largest first, each on the target with the most memory left; one that
  fits nowhere is HOST_NOT_ENOUGH_FREE_MEMORY [vm].

The control domain stays.  host.evacuate refuses with the first VM's
error, then migrates the VMs as planned, evacuate_batch_size at a time
(10 when 0 or less), each as a VM.pool_migrate of its own under a task
of its own; a VM that halted meanwhile (VM_BAD_POWER_STATE) is skipped,
any other failure is the evacuation's.  It runs on the master with the
host marked ``evacuate``.
"""

from twisted.internet import defer

from txxapi import operations, vmspec
from txxapi.api.registry import implements
from txxapi.datamodel import MODEL
from txxapi.errors import XenAPIError
from txxapi.forwarding import migration as rules
from txxapi.ha.state import is_protected
from txxapi.impl.vm import assert_can_boot_here
from txxapi.migration import checks, sender
from txxapi.values import NULL_REF

DEFAULT_BATCH_SIZE = 10


def _targets(db, host):
    return sorted(h for h in db.refs("host")
                  if h != host and db.fields("host", h)["enabled"])


def _user_vms(db, host):
    return sorted(v for v in db.where("VM", resident_on=host)
                  if not db.fields("VM", v)["is_control_domain"])


def compute_plan(ctx, host):
    """{vm: host it moves to, or the [code, params...] that stops it}."""
    db = ctx.db
    db.fields("host", host)
    vms, targets = _user_vms(db, host), _targets(db, host)
    if not targets:
        return {vm: ["NO_HOSTS_AVAILABLE", vm] for vm in vms}
    plan = {}
    movable = []
    ha = db.fields("pool", ctx.server.pool_ref)["ha_enabled"]
    for vm in vms:
        if ha and not is_protected(db.fields("VM", vm)):
            plan[vm] = ["HOST_EVACUATE_VM_NOT_HA_PROTECTED", vm]
            continue
        try:
            for target in targets:
                assert_can_boot_here(ctx, vm, target, memory=False)
        except XenAPIError as e:
            plan[vm] = list(e.description)
            continue
        movable.append(vm)
    for vm in vms:
        try:
            operations.check(ctx, "VM", vm, "pool_migrate")
        except XenAPIError as e:
            plan[vm] = list(e.description)
    placed = _pack(db, movable, targets)
    for vm in movable:
        if vm not in placed:
            plan[vm] = ["HOST_NOT_ENOUGH_FREE_MEMORY", vm]
        elif vm not in plan:
            plan[vm] = placed[vm]
    return plan


def _pack(db, vms, targets):
    """VM -> target, by memory: the largest VM first, onto the target
    with the most left."""
    free = {t: vmspec.host_free_memory(db, t) for t in targets}
    need = {vm: vmspec.start_memory(db.fields("VM", vm)) for vm in vms}
    placed = {}
    for vm in sorted(vms, key=lambda v: (-need[v], v)):
        target = max(targets, key=lambda t: (free[t], t))
        if free[target] >= need[vm]:
            placed[vm] = target
            free[target] -= need[vm]
    return placed


def _errors(plan):
    return {vm: p for vm, p in sorted(plan.items()) if isinstance(p, list)}


@implements("host.assert_can_evacuate")
def assert_can_evacuate(ctx, host):
    errors = _errors(compute_plan(ctx, host))
    if errors:
        raise XenAPIError("CANNOT_EVACUATE_HOST", "|".join(
            ",".join(e) for e in errors.values()))
    return ""


@implements("host.get_vms_which_prevent_evacuation")
def get_vms_which_prevent_evacuation(ctx, self):
    return _errors(compute_plan(ctx, self))


@implements("host.evacuate")
def evacuate(ctx, host, network, evacuate_batch_size):
    plan = compute_plan(ctx, host)
    for error in _errors(plan).values():
        raise XenAPIError(*error)
    moves = sorted(plan.items())
    options = {"live": "true"}
    if network != NULL_REF:
        for target in sorted(set(plan.values())):
            checks.address_on_network(ctx, network, target)
        options["network"] = network
    size = evacuate_batch_size if evacuate_batch_size > 0 \
        else DEFAULT_BATCH_SIZE
    return _migrate_all(ctx, host, moves, options, size)


@defer.inlineCallbacks
def _migrate_all(ctx, host, moves, options, size):
    tasks = ctx.server.tasks
    slots = defer.DeferredSemaphore(size)
    done = []

    def finished(result):
        done.append(result)
        if ctx.task is not None:
            tasks.set_progress(ctx.task, len(done) / len(moves))
        return result
    results = yield defer.DeferredList(
        [slots.run(migrate_one, ctx, vm, target, options)
         .addBoth(finished) for vm, target in moves], consumeErrors=True)
    for ok, result in results:
        if not ok and not (isinstance(result.value, XenAPIError) and
                           result.value.code == "VM_BAD_POWER_STATE"):
            result.raiseException()
    left = _user_vms(ctx.db, host)
    if left:
        raise XenAPIError("INTERNAL_ERROR", "evacuate: %d VMs are still "
                          "resident on %s" % (len(left), host))
    return ""


def migrate_one(ctx, vm, host, options):
    """VM.pool_migrate of one VM, as its own call: checked, marked and
    sent to the VM's host, under a task of its own."""
    server = ctx.server
    call = server.context(session=ctx.session,
                          message=MODEL.messages["VM.pool_migrate"])

    def run():
        route = rules.pool_migrate(call, vm, host, options)
        return server.forwarder.run(
            call, route, lambda: sender.pool_migrate(call, vm, host, options),
            ("VM.pool_migrate", [vm, host, options]))
    return server.tasks.under_own_task(call, "Async.VM.pool_migrate", run,
                                       subtask_of=ctx.task or NULL_REF)

"""
Forwarding rules of the moves between hosts (txxapi/migration):

* VM.pool_migrate runs on the host the VM is resident on, with the VM
  marked ``pool_migrate`` and the destination ``vm_migrate``, after
  XAPI's checks (txxapi.migration.checks; ``force: true`` in the options
  leaves out those that need the guest's help, as XAPI's non-strict
  check); wherever it runs, the master first schedules the VM to be
  resident on the destination (its memory held there against concurrent
  starts) until the call is over, then raises VM_MIGRATED if it
  succeeded;
* VM.migrate_send is marked ``migrate_send`` on the VM (a concurrent
  operation meets OTHER_OPERATION_IN_PROGRESS); within the pool a
  running VM's move is routed as pool_migrate's (the destination marked
  and its memory held); a move to another pool runs where the VM runs,
  or for a halted VM on a host that sees its disks (copy=true, a halted
  VM's copy to another pool, is refused within the pool with
  OPERATION_NOT_ALLOWED, as XAPI's);
* host.evacuate runs on the master (it sends each VM's pool_migrate),
  with the host marked ``evacuate``.
"""

from twisted.python.failure import Failure

from txxapi.errors import XenAPIError
from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards
from txxapi.ha.status import placement_admission
from txxapi.migration import checks, cross_pool, sender, storage_motion
from txxapi.migration import host_operations  # noqa: F401  (host rules)
from txxapi.values import NULL_REF

# XAPI's refusal of copy=true within the pool (its wording's sense).
COPY_WITHIN_POOL = ("Copy mode is not allowed for a storage migration "
                    "within the pool: use VM.copy or VM.clone")


@forwards("VM.pool_migrate")
def pool_migrate(ctx, vm, host, options):
    strict = not checks.forced(options)
    checks.assert_can_migrate(ctx, vm, host, options, strict)
    return _move(ctx, vm, host, ("VM", vm, "pool_migrate", strict))


@forwards("VM.migrate_send")
def migrate_send(ctx, vm, dest, live, vdi_map, vif_map, options, vgpu_map):
    db = ctx.db
    f = db.fields("VM", vm)
    mark = ("VM", vm, "migrate_send")
    if cross_pool.is_cross_pool(ctx, dest):
        cross_pool.assert_local(ctx, vm, dest, vdi_map, vif_map, options)
        disks = [db.fields("VDI", v)["SR"] for v in sorted(vdi_map)]
        source = hosts.of_vm(ctx, vm) if f["power_state"] == "Running" \
            else hosts.with_sr_plugged(ctx, disks[0]) if disks \
            else hosts.master(ctx)
        return Route(source, [mark])
    if cross_pool.copying(options):
        raise XenAPIError("OPERATION_NOT_ALLOWED", COPY_WITHIN_POOL)
    host, _ = storage_motion.plan(ctx, vm, dest, vdi_map, vif_map)
    if f["power_state"] == "Running" and host != f["resident_on"]:
        return _move(ctx, vm, host, mark)
    return Route(hosts.of_vm(ctx, vm), [mark])


def _move(ctx, vm, host, mark):
    """A running VM's move to ``host``, run where it runs: the VM marked
    (``mark``) and the destination ``vm_migrate``."""
    source = hosts.of_vm(ctx, vm)
    resident = ctx.db.fields("VM", vm)["resident_on"]
    marks = [mark]
    admit = None
    if host != resident:
        marks.append(("host", host, "vm_migrate"))
        admit = placement_admission(ctx, vm, host)

    def hold(ctx):
        release = sender.reserve(ctx, vm, host) if host != resident \
            else None

        def over(result):
            if release is not None:
                result = release(result)
            if isinstance(result, Failure):
                return result
            return sender.announce(ctx, vm, resident, host).addCallback(
                lambda _: result)
        return over
    return Route(source, marks, hold=hold, admit=admit)


@forwards("host.evacuate")
def evacuate(ctx, host, network, evacuate_batch_size):
    ctx.db.fields("host", host)
    if network != NULL_REF:
        ctx.db.fields("network", network)
    return Route(hosts.master(ctx), [("host", host, "evacuate")])

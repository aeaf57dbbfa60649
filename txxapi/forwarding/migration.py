"""
Forwarding rules of the moves between hosts (txxapi/migration):

* VM.pool_migrate runs on the host the VM is resident on, with the VM
  marked ``pool_migrate`` and the destination ``vm_migrate``, after
  XAPI's checks (txxapi.migration.checks; ``force: true`` in the options
  leaves out those that need the guest's help, as XAPI's non-strict
  check); sent there, the master first schedules the VM to be resident
  on the destination (its memory held there against concurrent starts)
  until the call is over, then raises VM_MIGRATED if it succeeded;
* host.evacuate runs on the master (it sends each VM's pool_migrate),
  with the host marked ``evacuate``.
"""

from twisted.python.failure import Failure

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards
from txxapi.ha.status import placement_admission
from txxapi.migration import checks, sender
from txxapi.migration import host_operations  # noqa: F401  (host rules)
from txxapi.values import NULL_REF


@forwards("VM.pool_migrate")
def pool_migrate(ctx, vm, host, options):
    strict = not checks.forced(options)
    checks.assert_can_migrate(ctx, vm, host, options, strict)
    source = hosts.of_vm(ctx, vm)
    resident = ctx.db.fields("VM", vm)["resident_on"]
    marks = [("VM", vm, "pool_migrate", strict)]
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

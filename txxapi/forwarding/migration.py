"""
Forwarding rules of the moves between hosts (txxapi/migration):

* VM.pool_migrate runs on the host the VM is resident on, with the VM
  marked ``pool_migrate`` and the destination ``vm_migrate``, after
  XAPI's checks (txxapi.migration.checks); sent there, the master first
  schedules the VM to be resident on the destination (its memory held
  there against concurrent starts) until the call is over;
* host.evacuate runs on the master (it sends each VM's pool_migrate),
  with the host marked ``evacuate``.
"""

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards
from txxapi.migration import checks, sender
from txxapi.migration import host_operations  # noqa: F401  (host rules)
from txxapi.values import NULL_REF


@forwards("VM.pool_migrate")
def pool_migrate(ctx, vm, host, options):
    checks.assert_can_migrate(ctx, vm, host, options)
    source = hosts.of_vm(ctx, vm)
    if host == ctx.db.fields("VM", vm)["resident_on"]:
        return Route(source, [("VM", vm, "pool_migrate")])

    def hold(ctx):
        return sender.reserve(ctx, vm, host)
    return Route(source, [("VM", vm, "pool_migrate"),
                          ("host", host, "vm_migrate")], hold=hold)


@forwards("host.evacuate")
def evacuate(ctx, host, network, evacuate_batch_size):
    ctx.db.fields("host", host)
    if network != NULL_REF:
        ctx.db.fields("network", network)
    return Route(hosts.master(ctx), [("host", host, "evacuate")])

"""
What VM.pool_migrate needs before anything is marked, in XAPI's order:
the VM's own operation check (VM_BAD_POWER_STATE, OTHER_OPERATION_IN_
PROGRESS, VM_LACKS_FEATURE...), the destination host's operations (an
evacuation under way), then the checks of VM.assert_can_boot_here on the
destination: live (HOST_NOT_LIVE), enabled, every disk's SR plugged
there (VM_REQUIRES_SR: a disk on the source's local SR cannot follow),
networks, and memory for the VM beside what already runs or is
scheduled there (HOST_NOT_ENOUGH_FREE_MEMORY).  A move to the host the
VM is on is XAPI's localhost migration; the host's own state does not
stop that.
"""

from txxapi import operations
from txxapi.errors import XenAPIError
from txxapi.impl.vm import assert_can_boot_here


def forced(options):
    """XAPI's ``force`` option: "true" (its boolean parse; anything else
    is false)."""
    return options.get("force") == "true"


def assert_can_migrate(ctx, vm, host, options, strict=True,
                       op="pool_migrate", sr_check=True):
    """``op``: the VM's operation to check (None: it is marked already);
    ``sr_check``: false when the caller checks the disks' (new) SRs."""
    db = ctx.db
    db.fields("VM", vm)
    db.fields("host", host)
    if op is not None:
        operations.check(ctx, "VM", vm, op, strict)
    if host == db.fields("VM", vm)["resident_on"]:
        return
    operations.check(ctx, "host", host, "vm_migrate")
    assert_can_boot_here(ctx, vm, host, sr_check=sr_check)
    if "network" in options:
        address_on_network(ctx, options["network"], host)


def address_on_network(ctx, network, host):
    """The host's address on ``network`` that a migration to it uses
    (option network=<ref>): its PIF there must be plugged and have one."""
    db = ctx.db
    db.fields("network", network)
    pifs = sorted(db.where("PIF", network=network, host=host))
    if not pifs:
        raise XenAPIError("PIF_NOT_PRESENT", host, network)
    pif = db.fields("PIF", pifs[0])
    if not pif["currently_attached"]:
        raise XenAPIError("REQUIRED_PIF_IS_UNPLUGGED", pifs[0])
    address = pif["IP"] or next(
        (a.split("/")[0] for a in pif["IPv6"] if a), "")
    if not address:
        raise XenAPIError("INTERFACE_HAS_NO_IP", pifs[0])
    return address


def destination_address(ctx, host, options):
    if "network" in options:
        return address_on_network(ctx, options["network"], host)
    return ctx.db.fields("host", host)["address"]

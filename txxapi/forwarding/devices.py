"""
Forwarding rules of a VM's devices (VBDs, VIFs): the operation is marked
on the device (fail fast) and runs where the device's VM is resident.
The local steps are in txxapi/impl/vbd.py and vif.py.
"""

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards


def on_device(cls, op, *also):
    """``op`` on the device; ``also``: classes of further parameters whose
    handles are checked first (VBD.insert's VDI)."""
    def rule(ctx, ref, *args):
        vm = ctx.db.fields(cls, ref)["VM"]
        for other, value in zip(also, args):
            ctx.db.fields(other, value)
        host = hosts.of_vm(ctx, vm) if ctx.db.exists("VM", vm) \
            else hosts.master(ctx)
        return Route(host, [(cls, ref, op)])
    return rule


forwards("VBD.plug")(on_device("VBD", "plug"))
forwards("VBD.unplug")(on_device("VBD", "unplug"))
forwards("VBD.unplug_force")(on_device("VBD", "unplug_force"))
forwards("VBD.insert")(on_device("VBD", "insert", "VDI"))
forwards("VBD.eject")(on_device("VBD", "eject"))
forwards("VIF.plug")(on_device("VIF", "plug"))
forwards("VIF.unplug")(on_device("VIF", "unplug"))
forwards("VIF.unplug_force")(on_device("VIF", "unplug"))

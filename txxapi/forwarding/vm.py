"""
Forwarding rules of VMs: each VM operation is marked on the VM (fail
fast: a conflicting call gets OTHER_OPERATION_IN_PROGRESS at once) and
runs on the host the VM is resident on, or the one it starts on.  The
local steps are in txxapi/impl/vm.py, vm_config.py and vm_copy.py.
"""

from txxapi.forwarding import hosts
from txxapi.forwarding.registry import Route, forwards
from txxapi.ha.status import placement_admission
from txxapi.migration.host_operations import assert_not_evacuating
from txxapi.migration.receiver import assert_not_arriving
from txxapi.impl import vm as vm_impl
from txxapi.impl import vm_copy

# message -> the operation it marks on its VM (the message's first
# parameter), for the operations that need nothing more.
VM_OPERATIONS = {
    "VM.clean_shutdown": "clean_shutdown",
    "VM.hard_shutdown": "hard_shutdown",
    "VM.shutdown": "shutdown",
    "VM.clean_reboot": "clean_reboot",
    "VM.hard_reboot": "hard_reboot",
    "VM.pause": "pause",
    "VM.unpause": "unpause",
    "VM.suspend": "suspend",
    "VM.destroy": "destroy",
    "VM.set_HVM_shadow_multiplier": "changing_shadow_memory",
    "VM.set_memory_static_range": "changing_static_range",
    "VM.set_memory_static_max": "changing_static_range",
    "VM.set_memory_static_min": "changing_static_range",
    "VM.set_memory_limits": "changing_memory_limits",
    "VM.set_memory": "changing_memory_limits",
    "VM.set_memory_dynamic_range": "changing_dynamic_range",
    "VM.set_memory_dynamic_max": "changing_dynamic_range",
    "VM.set_memory_dynamic_min": "changing_dynamic_range",
    "VM.set_VCPUs_max": "changing_VCPUs",
    "VM.set_VCPUs_number_live": "changing_VCPUs_live",
    "VM.clone": "clone",
    "VM.snapshot": "snapshot",
    "VM.checkpoint": "checkpoint",
    "VM.provision": "provision",
}


def on_vm(op):
    def rule(ctx, vm, *args):
        return Route(hosts.of_vm(ctx, vm), [("VM", vm, op)])
    return rule


for _name, _op in VM_OPERATIONS.items():
    forwards(_name)(on_vm(_op))


def _placed(ctx, vm, op):
    """Where the placement puts the VM; sent there, the VM is scheduled
    to be resident on it (its memory held) until the call is over."""
    host = hosts.to_start(ctx, vm)

    def hold(ctx):
        ctx.db.update("VM", vm, {"scheduled_to_be_resident_on": host})
        return vm_impl.release_reservation(ctx, vm)
    return Route(host, [("VM", vm, op)], hold=hold,
                 admit=placement_admission(ctx, vm, host))


@forwards("VM.start")
def start(ctx, vm, start_paused, force):
    assert_not_arriving(ctx.db, vm)
    return _placed(ctx, vm, "start")


@forwards("VM.resume")
def resume(ctx, vm, start_paused, force):
    return _placed(ctx, vm, "resume")


def _on_named_host(op):
    def rule(ctx, vm, host, start_paused, force):
        ctx.db.fields("VM", vm)
        target = hosts.named(ctx, host)
        if op == "start_on":
            assert_not_arriving(ctx.db, vm)
            assert_not_evacuating(ctx, target)
        return Route(target, [("VM", vm, op)],
                     admit=placement_admission(ctx, vm, target))
    return rule


forwards("VM.start_on")(_on_named_host("start_on"))
forwards("VM.resume_on")(_on_named_host("resume_on"))


@forwards("VM.copy")
def copy(ctx, vm, new_name, sr):
    vm_copy.assert_copy_target(ctx, sr)
    return Route(hosts.of_vm(ctx, vm), [("VM", vm, "copy")])


@forwards("VM.import")
def import_from_url(ctx, url, sr, full_restore, force):
    """On a host where the SR is plugged, as XAPI picks one of its PBDs'
    hosts."""
    ctx.db.fields("SR", sr)
    return Route(hosts.with_sr_plugged(ctx, sr))


@forwards("VM.revert")
def revert(ctx, snapshot):
    """The snapshot is marked reverting-from, its VM being reverted."""
    marks = [("VM", snapshot, "revert")]
    vm = ctx.db.fields("VM", snapshot)["snapshot_of"]
    if ctx.db.exists("VM", vm):
        marks.append(("VM", vm, "reverting"))
    return Route(hosts.of_vm(ctx, snapshot), marks)


@forwards("VM.set_is_a_template")
def set_is_a_template(ctx, vm, value):
    """Only making a template is an operation (a template becoming a VM
    is not)."""
    marks = [("VM", vm, "make_into_template")] if value else []
    return Route(hosts.of_vm(ctx, vm), marks)


@forwards("VM.power_state_reset")
def power_state_reset(ctx, vm):
    """On the master, as XAPI's: the way out for a VM whose host is
    gone."""
    vm_impl.assert_resettable(ctx, vm)
    return Route(hosts.master(ctx), [("VM", vm, "power_state_reset")])


@forwards("VM.call_plugin")
def call_plugin(ctx, vm, plugin, fn, args):
    vm_impl.assert_plugin_call(ctx, vm, plugin, fn)
    return Route(hosts.of_vm(ctx, vm), [("VM", vm, "call_plugin")])

"""
The VM lifecycle rules on records built in a Database: which operations
are valid in which power state, alongside which others, on templates,
snapshots and the control domain, with which guest features; the device
operation tables; the memory sums; what a guest's own shutdown leads to.
"""

import pytest

from txxapi import vmspec
from txxapi.datamodel import MODEL
from txxapi.db.memory import Database
from txxapi.impl import devices, vm as vm_impl, vm_lifecycle
from txxapi.xenops import guest_action, ocaml_float
from txxenops.memory import memory_overhead
from txxenops.types import DomainInfo

GIB = 1024 ** 3
MIB = 1024 ** 2


@pytest.fixture
def db():
    return Database(MODEL)


def make_vm(db, **fields):
    base = {"name_label": "v", "memory_static_min": 256 * MIB,
            "memory_static_max": 256 * MIB, "memory_dynamic_min": 256 * MIB,
            "memory_dynamic_max": 256 * MIB, "VCPUs_max": 1,
            "VCPUs_at_startup": 1, "domain_type": "pv", "domid": -1,
            "actions_after_crash": "restart",
            "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart"}
    base.update(fields)
    return db.create("VM", base)


def error(db, ref, op):
    e = vm_impl._check(db, ref, op)
    return None if e is None else e.description


def test_power_states_decide_first(db):
    vm = make_vm(db)
    assert error(db, vm, "start") is None
    assert error(db, vm, "pause") == [
        "VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert error(db, vm, "hard_shutdown") == [
        "VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted"]
    db.update("VM", vm, {"power_state": "Running"})
    assert error(db, vm, "start") == [
        "VM_BAD_POWER_STATE", vm, "halted", "running"]
    assert error(db, vm, "destroy")[0] == "VM_BAD_POWER_STATE"
    assert error(db, vm, "snapshot") is None


def test_a_passed_through_pci_device_keeps_the_vm_where_it_is(db):
    # A PV guest: it can suspend without saying so.
    metrics = db.create("VM_metrics", {"current_domain_type": "pv"})
    vm = make_vm(db, power_state="Running", metrics=metrics)
    db.create("PCI", {"attached_VMs": [vm], "pci_id": "0000:00:02.0"})
    for op in ("suspend", "checkpoint", "pool_migrate", "migrate_send"):
        assert error(db, vm, op) == ["VM_HAS_PCI_ATTACHED", vm]
    assert error(db, vm, "clean_shutdown") is None


def test_blocked_operations_come_before_everything(db):
    vm = make_vm(db, blocked_operations={"start": "maintenance"},
                 power_state="Running")
    assert error(db, vm, "start") == ["OPERATION_BLOCKED", vm,
                                      "maintenance"]


def test_concurrency(db):
    vm = make_vm(db, current_operations={"OpaqueRef:t1": "clone"})
    assert error(db, vm, "copy") is None
    assert error(db, vm, "start") == [
        "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clone", "OpaqueRef:t1"]
    db.update("VM", vm, {"power_state": "Running", "current_operations": {
        "OpaqueRef:t2": "clean_shutdown"}})
    assert error(db, vm, "hard_shutdown") is None
    assert error(db, vm, "hard_reboot") is None
    assert error(db, vm, "pause")[0] == "OTHER_OPERATION_IN_PROGRESS"
    db.update("VM", vm, {"current_operations": {
        "OpaqueRef:t2": "clean_shutdown", "OpaqueRef:t3": "hard_shutdown"}})
    assert error(db, vm, "hard_shutdown")[3] == \
        "{clean_shutdown,hard_shutdown}"


def test_templates_and_snapshots(db):
    tpl = make_vm(db, is_a_template=True,
                  other_config={"default_template": "true"})
    assert error(db, tpl, "start") == ["VM_IS_TEMPLATE", tpl, "start"]
    assert error(db, tpl, "clone") is None
    assert error(db, tpl, "destroy") == ["VM_IS_TEMPLATE", tpl, "destroy"]
    mine = make_vm(db, is_a_template=True)
    assert error(db, mine, "destroy") is None
    assert error(db, mine, "provision") is None
    plain = make_vm(db)
    assert error(db, plain, "provision") == ["ONLY_PROVISION_TEMPLATE"]
    assert error(db, plain, "revert") == ["ONLY_REVERT_SNAPSHOT"]
    snap = make_vm(db, is_a_template=True, is_a_snapshot=True,
                   power_state="Suspended")
    assert error(db, snap, "revert") is None
    assert error(db, snap, "clone") is None
    assert error(db, snap, "resume") == ["VM_IS_SNAPSHOT", snap, "resume"]


def test_control_domain(db):
    dom0 = make_vm(db, is_control_domain=True, domid=0,
                   power_state="Running")
    assert error(db, dom0, "destroy")[0] == "VM_BAD_POWER_STATE"
    assert error(db, dom0, "changing_VCPUs") == [
        "OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0"]
    assert error(db, dom0, "clean_shutdown")[0] == "OPERATION_NOT_ALLOWED"


def test_guest_features_for_hvm(db):
    metrics = db.create("VM_metrics", {"current_domain_type": "hvm"})
    vm = make_vm(db, domain_type="hvm", power_state="Running",
                 metrics=metrics)
    assert error(db, vm, "clean_shutdown") == ["VM_LACKS_FEATURE", vm]
    assert error(db, vm, "suspend") == ["VM_LACKS_FEATURE", vm]
    assert error(db, vm, "hard_shutdown") is None
    gm = db.create("VM_guest_metrics", {"PV_drivers_detected": True,
                                        "other": {"feature-suspend": "1"}})
    db.update("VM", vm, {"guest_metrics": gm})
    assert error(db, vm, "clean_shutdown") is None
    assert error(db, vm, "suspend") is None
    db.update("VM_guest_metrics", gm, {"other": {
        "data-cant-suspend-reason": "busy"}})
    assert error(db, vm, "suspend") == ["VM_NON_SUSPENDABLE", vm, "busy"]


def test_allowed_operations_agree_with_the_checks(db):
    vm = make_vm(db)
    allowed = vm_impl._advertise(db, vm)
    assert "start" in allowed and "destroy" in allowed
    assert "pause" not in allowed
    # XAPI leaves these out of the advisory list.
    assert "shutdown" not in allowed and "power_state_reset" not in allowed
    for op in allowed:
        assert error(db, vm, op) is None


def test_vbd_and_vif_tables(db):
    vm = make_vm(db)
    cd = db.create("VBD", {"VM": vm, "type": "CD", "empty": True,
                           "mode": "RO", "userdevice": "3",
                           "unpluggable": True})
    errs = devices.vbd_errors(db, cd)
    assert errs["attach"] is None and errs["insert"] is None
    assert errs["eject"].description == ["VBD_IS_EMPTY", cd]
    assert errs["plug"].description == [
        "VM_BAD_POWER_STATE", vm, "running", "halted"]
    disk = db.create("VBD", {"VM": vm, "type": "Disk", "empty": False,
                             "mode": "RW", "userdevice": "0",
                             "unpluggable": False})
    db.update("VM", vm, {"power_state": "Running"})
    errs = devices.vbd_errors(db, disk)
    assert errs["insert"].code == "VBD_NOT_REMOVABLE_MEDIA"
    assert errs["unplug"].code == "VBD_NOT_UNPLUGGABLE"
    assert errs["plug"] is None
    vif = db.create("VIF", {"VM": vm, "device": "0", "currently_attached":
                            True, "current_operations": {"t": "plug"}})
    assert devices.vif_errors(db, vif)["unplug"].code == \
        "OTHER_OPERATION_IN_PROGRESS"


def test_device_numbers_and_macs():
    assert devices.disk_number("0") == 0
    assert devices.disk_number("xvdc") == 2
    assert devices.disk_number("hdd") == 3
    assert devices.disk_number("hde") is None
    assert devices.disk_number("xvdaa") == 26
    assert devices.disk_number("eth0") is None
    mac = devices.generated_mac("seed", 0)
    assert devices.valid_mac(mac) and mac == devices.generated_mac("seed", 0)
    assert int(mac[:2], 16) & 3 == 2     # locally administered, unicast
    assert mac != devices.generated_mac("seed", 1)


def test_memory_sums(db):
    metrics = db.create("host_metrics", {"memory_total": 8 * GIB})
    host = db.create("host", {"metrics": metrics,
                              "memory_overhead": 100 * MIB})
    dom0 = make_vm(db, is_control_domain=True, resident_on=host,
                   memory_dynamic_min=GIB)
    running = make_vm(db, resident_on=host, memory_dynamic_min=GIB,
                      memory_overhead=10 * MIB)
    starting = make_vm(db, scheduled_to_be_resident_on=host,
                       memory_dynamic_min=2 * GIB, memory_overhead=MIB)
    assert dom0 and running
    assert vmspec.host_free_memory(db, host) == \
        8 * GIB - 100 * MIB - GIB - (GIB + 10 * MIB) - (2 * GIB + MIB)
    assert vmspec.host_free_memory(db, host, ignore_scheduled=starting) == \
        8 * GIB - 100 * MIB - GIB - (GIB + 10 * MIB)
    vm = db.fields("VM", make_vm(db, domain_type="hvm", VCPUs_max=2,
                                 memory_static_max=GIB,
                                 memory_dynamic_min=512 * MIB))
    assert vmspec.start_memory(vm) == 512 * MIB + vmspec.vm_overhead(vm)


def test_the_toolstack_and_the_backend_agree_on_overhead(db):
    for domain_type in ("pv", "hvm", "pv_in_pvh"):
        ref = make_vm(db, domain_type=domain_type, VCPUs_max=4,
                      memory_static_max=3 * GIB, HVM_shadow_multiplier=1.5)
        spec = vmspec.vm_spec(db, None, ref)
        assert memory_overhead(spec) == vmspec.vm_overhead(
            db.fields("VM", ref))


def test_spec_coerces_memory_as_xapi_does(db):
    ref = make_vm(db, memory_static_min=128 * MIB,
                  memory_static_max=GIB, memory_dynamic_min=64 * MIB,
                  memory_dynamic_max=2 * GIB)
    spec = vmspec.vm_spec(db, None, ref)
    assert (spec.memory_dynamic_min, spec.memory_dynamic_max) == (
        128 * MIB, GIB)
    bad = make_vm(db, memory_static_min=2 * GIB, memory_static_max=GIB)
    assert vmspec.coerced_memory(db.fields("VM", bad)) is None


def test_basic_parameters(db):
    def check(**fields):
        ref = make_vm(db, **fields)
        try:
            vm_impl.validate_basic_parameters(ref, db.fields("VM", ref))
        except Exception as e:
            return e.description
    assert check() is None
    assert check(VCPUs_at_startup=2)[0] == "VALUE_NOT_SUPPORTED"
    assert check(VCPUs_max=0)[:2] == ["INVALID_VALUE", "VCPUs_max"]
    assert check(memory_static_min=GIB)[0] == "MEMORY_CONSTRAINT_VIOLATION"
    assert check(actions_after_crash="rename_restart")[0] == \
        "VALUE_NOT_SUPPORTED"
    assert check(domain_type="hvm",
                 actions_after_crash="coredump_and_restart")[0] == \
        "VALUE_NOT_SUPPORTED"
    assert check(memory_static_min=8 * MIB, memory_static_max=8 * MIB,
                 memory_dynamic_min=8 * MIB,
                 memory_dynamic_max=8 * MIB)[0] == "VM_MEMORY_SIZE_TOO_LOW"


@pytest.mark.parametrize("state,reason,field,value,action", [
    ("crashed", "crash", "actions_after_crash", "preserve", "preserve"),
    ("crashed", "crash", "actions_after_crash", "coredump_and_destroy",
     "destroy"),
    ("crashed", "crash", "actions_after_crash", "restart", "restart"),
    ("shutdown", "poweroff", "actions_after_shutdown", "restart", "restart"),
    ("shutdown", "halt", "actions_after_shutdown", "destroy", "destroy"),
    ("shutdown", "reboot", "actions_after_reboot", "destroy", "destroy"),
    ("shutdown", "watchdog", "actions_after_crash", "destroy", "destroy"),
    ("shutdown", "suspend", "actions_after_shutdown", "destroy", "none"),
])
def test_guest_actions(state, reason, field, value, action):
    vm = {"actions_after_crash": "restart",
          "actions_after_shutdown": "destroy",
          "actions_after_reboot": "restart",
          "actions_after_softreboot": "soft_reboot", field: value}
    info = DomainInfo(uuid="u", domid=3, state=state, shutdown_reason=reason)
    assert guest_action(vm, info) == action


def test_error_floats_print_as_xapi_does():
    assert ocaml_float(1200) == "1200."
    assert ocaml_float(1.5) == "1.5"


def test_every_operation_has_its_states():
    vm = {"is_control_domain": False, "is_a_snapshot": False}
    for op in MODEL.enums["vm_operations"]:
        vm_lifecycle.allowed_states(vm, op)


def test_host_free_memory_call(tmp_path):
    from tests.support.inprocess import call, login, make_server
    server, _ = make_server(tmp_path)
    s = login(server)
    host = server.host_ref
    free = call(server, "host.compute_free_memory", s, host)
    total = server.db.fields("host_metrics",
                             server.db.fields("host", host)["metrics"])[
                                 "memory_total"]
    dom0 = server.db.fields("VM", server.db.fields("host", host)[
        "control_domain"])
    assert free == total - dom0["memory_dynamic_min"] - dom0[
        "memory_overhead"]
    assert call(server, "host.compute_memory_overhead", s, host) == 0

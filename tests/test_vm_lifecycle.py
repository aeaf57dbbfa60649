"""
VM lifecycle against real `twistd xapi` servers on the simulator backend,
driven with the XenAPI SDK: the whole life of a VM synchronously and with
Async + task polling, power states, resident_on, domid, metrics, guest
metrics, consoles and events; refused operations leave the VM as it was;
memory exhaustion; concurrent conflicting calls; hung and crashing
guests; 100 concurrent starts beside a responsive API; kill -9 with VMs
running.
"""

import threading
import time

import pytest
import XenAPI

from tests.support.servers import RunningServer, serving

GIB = 1024 ** 3
MIB = 1024 ** 2
NULL = "OpaqueRef:NULL"
SERVER_ARGS = ["--simulator-op-time", "0.01", "--shutdown-timeout", "3",
               "--simulator-memory", str(32 * GIB)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's server (conftest's xapi fixture logs in to it)."""
    yield from serving(tmp_path_factory, "vmlife", SERVER_ARGS)


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def wait_until(check, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail("timed out waiting for %s" % what)


def new_vm(x, name="vm", memory=256 * MIB, vcpus=1, other=None, **extra):
    record = {
        "name_label": name, "name_description": "", "user_version": "1",
        "is_a_template": False, "affinity": NULL,
        "memory_static_max": str(memory), "memory_dynamic_max": str(memory),
        "memory_dynamic_min": str(memory), "memory_static_min": str(memory),
        "VCPUs_params": {}, "VCPUs_max": str(vcpus),
        "VCPUs_at_startup": str(vcpus),
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "restart",
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
        "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {},
        "PCI_bus": "", "other_config": dict(other or {}),
        "recommendations": ""}
    record.update(extra)
    return x.VM.create(record)


def add_vif(x, vm, device="0"):
    net = x.network.get_all()[0]
    return x.VIF.create({
        "device": device, "network": net, "VM": vm, "MAC": "", "MTU": "1500",
        "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})


def wait_task(x, task, timeout=30.0):
    # A cancel passes through "cancelling" before it ends.
    wait_until(lambda: x.task.get_status(task) not in ("pending",
                                                        "cancelling"),
               timeout, "task %s" % task)
    rec = x.task.get_record(task)
    x.task.destroy(task)
    return rec


def task_result(rec):
    assert rec["status"] == "success", rec["error_info"]
    assert rec["progress"] == 1.0
    result = rec["result"]
    return result.replace("<value>", "").replace("</value>", "")


def guest_metrics(x, vm):
    gm = wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL and
                    x.VM.get_guest_metrics(vm), what="guest metrics")
    return x.VM_guest_metrics.get_record(gm)


def cleanup(x, *vms):
    for vm in vms:
        try:
            if x.VM.get_power_state(vm) != "Halted":
                x.VM.hard_shutdown(vm)
            x.VM.destroy(vm)
        except XenAPI.Failure:
            pass


# --- the whole life --------------------------------------------------------

def test_whole_life_synchronously(x):
    host = x.host.get_all()[0]
    template = x.VM.get_by_name_label("Other install media")[0]
    vm = x.VM.clone(template, "life")
    assert x.VM.get_is_a_template(vm)
    assert x.VM.get_other_config(vm)["base_template_name"] == \
        "Other install media"
    x.VM.set_memory_limits(vm, str(256 * MIB), str(256 * MIB),
                           str(256 * MIB), str(256 * MIB))
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.provision(vm)
    assert not x.VM.get_is_a_template(vm)
    vif = add_vif(x, vm)
    mac = x.VIF.get_MAC(vif)
    assert x.VIF.get_allowed_operations(vif) == ["attach"]

    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running"
    assert rec["resident_on"] == host and int(rec["domid"]) >= 1
    assert rec["scheduled_to_be_resident_on"] == NULL
    assert vm in x.host.get_resident_VMs(host)
    metrics = x.VM_metrics.get_record(rec["metrics"])
    assert metrics["memory_actual"] == str(256 * MIB)
    assert metrics["VCPUs_number"] == "1"
    assert metrics["current_domain_type"] == "hvm"
    assert str(metrics["start_time"]) > "2000"
    assert x.VIF.get_currently_attached(vif)
    gm = guest_metrics(x, vm)
    assert gm["networks"]["0/ip"].startswith("10.")
    assert gm["PV_drivers_detected"] and gm["other"]["feature-suspend"] == "1"
    consoles = [x.console.get_record(c) for c in rec["consoles"]]
    assert [c["protocol"] for c in consoles] == ["rfb"]
    assert consoles[0]["location"].endswith("/console?uuid=%s"
                                            % consoles[0]["uuid"])
    wait_until(lambda: "clean_shutdown" in x.VM.get_allowed_operations(vm),
               what="clean_shutdown allowed once the agent reported")

    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.unpause(vm)
    assert x.VM.get_power_state(vm) == "Running"

    domid = x.VM.get_domid(vm)
    x.VM.suspend(vm)
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == (
        "Suspended", "-1", NULL)
    assert rec["consoles"] == []
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert int(x.VM.get_domid(vm)) > int(domid)

    for reboot in (x.VM.clean_reboot, x.VM.hard_reboot):
        domid = x.VM.get_domid(vm)
        reboot(vm)
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_domid(vm) != domid

    snap = x.VM.snapshot(vm, "life-snap", [])
    srec = x.VM.get_record(snap)
    assert srec["is_a_snapshot"] and srec["is_a_template"]
    assert srec["snapshot_of"] == vm and srec["power_state"] == "Halted"
    assert str(srec["snapshot_time"]) > "2000"
    assert srec["snapshot_info"]["power-state-at-snapshot"] == "Running"
    assert snap in x.VM.get_snapshots(vm)
    assert x.VM.get_parent(vm) == snap
    assert x.VIF.get_MAC(srec["VIFs"][0]) == mac

    x.VM.clean_shutdown(vm)
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["resident_on"]) == (
        "Halted", "-1", NULL)
    assert not x.VIF.get_currently_attached(vif)

    description = x.VM.get_name_description(vm)
    x.VM.set_name_description(vm, "changed after the snapshot")
    x.VM.revert(snap)
    assert x.VM.get_name_description(vm) == description
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VIF.get_MAC(x.VM.get_VIFs(vm)[0]) == mac

    copy = x.VM.copy(vm, "life-copy", NULL)
    crec = x.VM.get_record(copy)
    assert crec["power_state"] == "Halted" and not crec["is_a_snapshot"]
    assert crec["uuid"] != x.VM.get_uuid(vm)
    assert x.VIF.get_MAC(crec["VIFs"][0]) != mac

    x.VM.start(vm, True, False)
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"

    metrics = x.VM.get_metrics(vm)
    x.VM.destroy(vm)
    assert failure(x.VM.get_record, vm)[0] == "HANDLE_INVALID"
    assert failure(x.VIF.get_record, vif)[0] == "HANDLE_INVALID"
    assert failure(x.VM_metrics.get_record, metrics)[0] == "HANDLE_INVALID"
    cleanup(x, copy, snap)


def test_whole_life_async(x):
    vm = new_vm(x, "async")
    add_vif(x, vm)
    rec = wait_task(x, x.Async.VM.start(vm, False, False))
    task_result(rec)
    assert x.VM.get_power_state(vm) == "Running"
    guest_metrics(x, vm)
    for call, state in ((x.Async.VM.pause, "Paused"),
                        (x.Async.VM.unpause, "Running"),
                        (x.Async.VM.suspend, "Suspended")):
        task_result(wait_task(x, call(vm)))
        assert x.VM.get_power_state(vm) == state
    task_result(wait_task(x, x.Async.VM.resume(vm, False, False)))
    domid = x.VM.get_domid(vm)
    task_result(wait_task(x, x.Async.VM.clean_reboot(vm)))
    assert x.VM.get_domid(vm) != domid
    snap = task_result(wait_task(x, x.Async.VM.snapshot(vm, "a-snap", [])))
    assert x.VM.get_snapshot_of(snap) == vm
    checkpoint = task_result(wait_task(
        x, x.Async.VM.checkpoint(vm, "a-checkpoint")))
    assert x.VM.get_power_state(checkpoint) == "Suspended"
    assert x.VM.get_power_state(vm) == "Running"
    task_result(wait_task(x, x.Async.VM.clean_shutdown(vm)))
    assert x.VM.get_power_state(vm) == "Halted"
    task_result(wait_task(x, x.Async.VM.revert(checkpoint)))
    assert x.VM.get_power_state(vm) == "Suspended"
    task_result(wait_task(x, x.Async.VM.resume(vm, False, False)))
    assert x.VM.get_power_state(vm) == "Running"
    task_result(wait_task(x, x.Async.VM.hard_shutdown(vm)))
    clone = task_result(wait_task(x, x.Async.VM.clone(vm, "a-clone")))
    assert x.VM.get_name_label(clone) == "a-clone"
    task_result(wait_task(x, x.Async.VM.destroy(vm)))
    cleanup(x, clone, snap, checkpoint)


def test_events_follow_the_vm(x):
    vm = new_vm(x, "watched")
    token = x.event.__getattr__("from")(["VM"], "", 0)["token"]

    def wait_for(state):
        nonlocal token
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = x.event.__getattr__("from")(["VM"], token, 5.0)
            token = reply["token"]
            if any(e["ref"] == vm and e["snapshot"]["power_state"] == state
                   for e in reply["events"] if e["operation"] == "mod"):
                return
        pytest.fail("no event with power_state %s" % state)

    x.VM.start(vm, False, False)
    wait_for("Running")
    x.VM.hard_shutdown(vm)
    wait_for("Halted")
    x.VM.destroy(vm)


# --- refusals ---------------------------------------------------------------

def test_refused_operations_leave_the_vm_as_it_was(x):
    vm = new_vm(x, "refused")
    add_vif(x, vm)
    before = x.VM.get_record(vm)
    for call, args, code in (
            (x.VM.pause, (), "VM_BAD_POWER_STATE"),
            (x.VM.unpause, (), "VM_BAD_POWER_STATE"),
            (x.VM.clean_shutdown, (), "VM_BAD_POWER_STATE"),
            (x.VM.suspend, (), "VM_BAD_POWER_STATE"),
            (x.VM.resume, (False, False), "VM_BAD_POWER_STATE"),
            (x.VM.revert, (), "ONLY_REVERT_SNAPSHOT"),
            (x.VM.provision, (), "ONLY_PROVISION_TEMPLATE"),
            (x.VM.set_memory_limits,
             (str(512 * MIB), str(256 * MIB), str(256 * MIB),
              str(256 * MIB)), "MEMORY_CONSTRAINT_VIOLATION_ORDER"),
            (x.VM.set_VCPUs_at_startup, ("4",), "INVALID_VALUE")):
        details = failure(call, vm, *args)
        assert details[0] == code, (call, details)
        assert x.VM.get_record(vm) == before, call
    assert failure(x.VM.pause, vm) == [
        "VM_BAD_POWER_STATE", vm, "running", "halted"]

    x.VM.start(vm, False, False)
    guest_metrics(x, vm)
    wait_until(lambda: "clean_shutdown" in x.VM.get_allowed_operations(vm))
    before = x.VM.get_record(vm)
    for call, args, code in ((x.VM.start, (False, False),
                              "VM_BAD_POWER_STATE"),
                             (x.VM.destroy, (), "VM_BAD_POWER_STATE"),
                             (x.VM.unpause, (), "VM_BAD_POWER_STATE"),
                             (x.VM.set_VCPUs_max, ("2",),
                              "VM_BAD_POWER_STATE")):
        assert failure(call, vm, *args)[0] == code
        assert x.VM.get_record(vm) == before, call
    assert failure(x.VM.start, vm, False, False) == [
        "VM_BAD_POWER_STATE", vm, "halted", "running"]
    x.VM.hard_shutdown(vm)

    template = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    before = x.VM.get_record(template)
    assert failure(x.VM.start, template, False, False) == [
        "VM_IS_TEMPLATE", template, "start"]
    assert x.VM.get_record(template) == before

    x.VM.set_memory_limits(vm, str(8 * MIB), str(8 * MIB), str(8 * MIB),
                           str(8 * MIB))
    before = x.VM.get_record(vm)
    assert failure(x.VM.start, vm, False, False) == [
        "VM_MEMORY_SIZE_TOO_LOW", vm]
    assert x.VM.get_record(vm) == before
    x.VM.destroy(vm)


def test_conflicting_calls_get_other_operation_in_progress(x):
    vm = new_vm(x, "slow", other={"simulator-shutdown-delay": "0.8"})
    x.VM.start(vm, False, False)
    task = x.Async.VM.clean_shutdown(vm)
    wait_until(lambda: x.VM.get_current_operations(vm), what="operation")
    before = x.VM.get_record(vm)
    assert failure(x.VM.pause, vm) == [
        "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clean_shutdown", task]
    assert failure(x.VM.clean_reboot, vm)[0] == "OTHER_OPERATION_IN_PROGRESS"
    assert x.VM.get_record(vm) == before
    task_result(wait_task(x, task))
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VM.get_current_operations(vm) == {}
    x.VM.destroy(vm)


def test_hung_guest_times_out_and_stays_running(x):
    vm = new_vm(x, "hung", other={"simulator-hung": "true"})
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    assert failure(x.VM.clean_shutdown, vm) == [
        "VM_SHUTDOWN_TIMEOUT", vm, "3."]
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_domid(vm) == domid
    # A cancelled clean shutdown also leaves it running.
    task = x.Async.VM.clean_shutdown(vm)
    wait_until(lambda: "cancel" in x.task.get_allowed_operations(task),
               what="a cancellable task")
    x.task.cancel(task)
    rec = wait_task(x, task)
    assert rec["status"] == "cancelled"
    assert rec["error_info"][0] == "TASK_CANCELLED"
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.shutdown(vm)       # clean fails, hard follows
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.destroy(vm)


def test_guest_crash_shutdown_and_reboot_follow_the_actions(x):
    vm = new_vm(x, "crashy")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    x.VM.call_plugin(vm, "simulator", "crash", {})
    wait_until(lambda: x.VM.get_domid(vm) not in (domid, "-1"),
               what="restart after crash")
    assert x.VM.get_power_state(vm) == "Running"

    domid = x.VM.get_domid(vm)
    x.VM.call_plugin(vm, "simulator", "reboot", {})
    wait_until(lambda: x.VM.get_domid(vm) not in (domid, "-1"),
               what="restart after reboot")

    x.VM.set_actions_after_crash(vm, "preserve")
    x.VM.call_plugin(vm, "simulator", "crash", {})
    wait_until(lambda: x.VM.get_power_state(vm) == "Paused",
               what="preserved crash")
    x.VM.hard_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running"

    x.VM.set_actions_after_crash(vm, "destroy")
    x.VM.call_plugin(vm, "simulator", "crash", {})
    wait_until(lambda: x.VM.get_power_state(vm) == "Halted",
               what="destroyed after crash")

    x.VM.start(vm, False, False)
    x.VM.call_plugin(vm, "simulator", "poweroff", {})
    wait_until(lambda: x.VM.get_power_state(vm) == "Halted",
               what="guest poweroff")
    assert failure(x.VM.call_plugin, vm, "nope", "x", {}) == [
        "XENAPI_MISSING_PLUGIN", "nope"]
    x.VM.destroy(vm)


# --- devices -----------------------------------------------------------------

def test_vifs_and_vbds_hot_plug(x):
    vm = new_vm(x, "devices")
    cd = x.VBD.create({
        "VM": vm, "VDI": NULL, "userdevice": "3", "bootable": False,
        "mode": "RO", "type": "CD", "empty": True, "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert "3" not in x.VM.get_allowed_VBD_devices(vm)
    assert failure(x.VBD.create, {
        "VM": vm, "VDI": NULL, "userdevice": "xvdd", "bootable": False,
        "mode": "RO", "type": "CD", "empty": True, "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {}}) == [
        "DEVICE_ALREADY_EXISTS", "xvdd"]
    add_vif(x, vm, "0")
    assert failure(add_vif, x, vm, "0") == ["DEVICE_ALREADY_EXISTS", "0"]
    assert x.VM.get_allowed_VIF_devices(vm)[0] == "1"
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(cd)
    assert x.VBD.get_device(cd) == "xvdd"
    assert failure(x.VBD.eject, cd)[0] == "VBD_IS_EMPTY"
    guest_metrics(x, vm)

    vif = add_vif(x, vm, "1")
    assert not x.VIF.get_currently_attached(vif)
    assert sorted(x.VIF.get_allowed_operations(vif)) == ["attach", "plug"]
    x.VIF.plug(vif)
    assert x.VIF.get_currently_attached(vif)
    wait_until(lambda: "1/ip" in x.VM_guest_metrics.get_networks(
        x.VM.get_guest_metrics(vm)), what="the guest sees the new VIF")
    assert failure(x.VIF.plug, vif)[0] == "DEVICE_ALREADY_ATTACHED"
    x.VIF.unplug(vif)
    assert not x.VIF.get_currently_attached(vif)
    x.VIF.destroy(vif)

    x.VBD.unplug(cd)
    assert not x.VBD.get_currently_attached(cd)
    x.VBD.plug(cd)
    assert x.VBD.get_currently_attached(cd)
    assert failure(x.VBD.destroy, cd)[0] == "OPERATION_NOT_ALLOWED"
    x.VM.hard_shutdown(vm)
    x.VBD.destroy(cd)
    x.VM.destroy(vm)


# --- memory ------------------------------------------------------------------

def test_starts_beyond_the_host_memory_fail_and_stay_halted(tmp_path):
    s = RunningServer(str(tmp_path / "data"), extra_args=[
        "--simulator-op-time", "0", "--simulator-memory", str(8 * GIB)])
    s.start()
    try:
        x = s.session().xenapi
        host = x.host.get_all()[0]
        started = []
        for i in range(20):
            vm = new_vm(x, "big%d" % i, memory=GIB)
            before = x.VM.get_record(vm)
            try:
                x.VM.start(vm, False, False)
            except XenAPI.Failure as e:
                code, needed, free = e.details
                assert code == "HOST_NOT_ENOUGH_FREE_MEMORY"
                assert int(needed) > int(free)
                assert x.VM.get_record(vm) == before
                break
            started.append(vm)
        else:
            pytest.fail("the host never ran out of memory")
        assert 3 <= len(started) < 8
        assert x.VM.get_power_state(vm) == "Halted"
        assert x.VM.get_scheduled_to_be_resident_on(vm) == NULL
        assert vm not in x.host.get_resident_VMs(host)
        x.VM.hard_shutdown(started[0])
        x.VM.start(vm, False, False)
        assert x.VM.get_power_state(vm) == "Running"
    finally:
        s.stop()


# --- load and restarts -------------------------------------------------------

def test_100_concurrent_starts_do_not_block_the_api(x, server):
    vms = [new_vm(x, "many%d" % i, memory=64 * MIB) for i in range(100)]
    probe = XenAPI.Session(server.http_url)
    probe.xenapi.login_with_password("root", "xenroot-test", "1.0", "probe")
    latencies = []
    stop = threading.Event()

    def measure():
        while not stop.is_set():
            t0 = time.monotonic()
            probe.xenapi.pool.get_all()
            latencies.append(time.monotonic() - t0)
            time.sleep(0.02)

    t = threading.Thread(target=measure)
    t.start()
    try:
        tasks = [x.Async.VM.start(vm, False, False) for vm in vms]
        for task in tasks:
            task_result(wait_task(x, task, timeout=60))
    finally:
        stop.set()
        t.join()
    assert all(x.VM.get_power_state(vm) == "Running" for vm in vms)
    domids = {x.VM.get_domid(vm) for vm in vms}
    assert len(domids) == 100
    assert latencies and max(latencies) < 2.0, max(latencies)
    tasks = [x.Async.VM.hard_shutdown(vm) for vm in vms]
    for task in tasks:
        task_result(wait_task(x, task, timeout=60))
    for vm in vms:
        x.VM.destroy(vm)
    probe.xenapi.session.logout()


def test_vms_survive_kill_9_of_the_server(tmp_path):
    s = RunningServer(str(tmp_path / "data"),
                      extra_args=["--simulator-op-time", "0"])
    s.start()
    try:
        x = s.session().xenapi
        vms = [new_vm(x, "survivor%d" % i) for i in range(3)]
        for vm in vms:
            x.VM.start(vm, False, False)
        x.VM.pause(vms[2])
        halted = new_vm(x, "halted")
        before = {vm: (x.VM.get_power_state(vm), x.VM.get_domid(vm))
                  for vm in vms}
        s.kill()
        s.start()
        x = s.session().xenapi
        after = {vm: (x.VM.get_power_state(vm), x.VM.get_domid(vm))
                 for vm in vms}
        assert after == before
        assert before[vms[2]][0] == "Paused"
        assert x.VM.get_power_state(halted) == "Halted"
        host = x.host.get_all()[0]
        assert all(x.VM.get_resident_on(vm) == host for vm in vms)
        assert x.VM.get_current_operations(vms[0]) == {}
        assert "clean_shutdown" in x.VM.get_allowed_operations(vms[0]) or \
            "hard_shutdown" in x.VM.get_allowed_operations(vms[0])
        x.VM.hard_shutdown(vms[0])
        x.VM.start(halted, False, False)
        assert int(x.VM.get_domid(halted)) > max(
            int(d) for _, d in before.values())
    finally:
        s.stop()

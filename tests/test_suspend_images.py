"""
Suspend images as VDIs, against real `twistd xapi` servers on the
simulator backend with the XenAPI SDK: VM.suspend leaves a VDI of type
suspend on the suspend SR as VM.suspend_VDI (VM.suspend_SR, else the
pool's suspend_image_SR, else the host's suspend_image_sr, as XAPI picks),
resume reads it and destroys it, hard_shutdown and destroy of a suspended
VM discard it, clones, copies, checkpoints and reverts carry their own,
a restart keeps a suspended VM resumable, and failures leave nothing
half-made.
"""

import os
import subprocess

from tests.support.servers import RunningServer
from tests.test_vm_lifecycle import (  # noqa: F401 (server: a fixture)
    MIB, SERVER_ARGS, cleanup, failure, guest_metrics, new_vm, server,
    wait_until)

NULL = "OpaqueRef:NULL"
MEMORY = 256 * MIB


def running_vm(x, name, **kw):
    vm = new_vm(x, name, memory=MEMORY, **kw)
    x.VM.start(vm, False, False)
    return vm


def suspend_vdis(x):
    return sorted(ref for ref, rec in x.VDI.get_all_records().items()
                  if rec["type"] == "suspend")


def default_sr(x):
    return x.pool.get_default_SR(x.pool.get_all()[0])


def gone(x, vdi):
    return failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"


def test_suspend_makes_a_suspend_vdi_and_resume_destroys_it(x):
    vm = running_vm(x, "image")
    gm = guest_metrics(x, vm)
    before = x.VM_metrics.get_record(x.VM.get_metrics(vm))
    domid = int(x.VM.get_domid(vm))
    x.VM.suspend(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended"
    vdi = rec["suspend_VDI"]
    assert vdi != NULL and suspend_vdis(x) == [vdi]
    v = x.VDI.get_record(vdi)
    assert v["type"] == "suspend"
    assert v["name_label"] == v["name_description"] == "Suspend image"
    assert v["SR"] == default_sr(x)
    # XAPI's sizing: static_max * 1.2 * 1.05 + 100 MiB.
    assert int(v["virtual_size"]) >= int(MEMORY * 1.2 * 1.05) + 100 * MIB
    assert v["sm_config"]["vmhint"] == rec["uuid"]
    assert int(v["sm_config"]["initial_allocation"]) <= \
        int(v["virtual_size"])
    assert v["VBDs"] == []
    x.VM.resume(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and rec["suspend_VDI"] == NULL
    assert int(rec["domid"]) > domid
    assert gone(x, vdi) and suspend_vdis(x) == []
    # The guest carried on where it stopped: same memory, same agent view.
    after = x.VM_metrics.get_record(rec["metrics"])
    assert after["memory_actual"] == before["memory_actual"]
    assert guest_metrics(x, vm)["networks"] == gm["networks"]
    cleanup(x, vm)


def test_resume_paused_and_async(x):
    vm = running_vm(x, "paused")
    task = x.Async.VM.suspend(vm)
    wait_until(lambda: x.task.get_status(task) != "pending", 30, "suspend")
    assert x.task.get_status(task) == "success"
    vdi = x.VM.get_suspend_VDI(vm)
    x.VM.resume(vm, True, False)
    assert x.VM.get_power_state(vm) == "Paused" and gone(x, vdi)
    cleanup(x, vm)


def test_suspend_sr_choice(x, server):
    host = x.host.get_all()[0]
    pool = x.pool.get_all()[0]
    local = default_sr(x)
    other = x.SR.create(host, {"location": os.path.join(server.base, "sr2")},
                        "0", "suspend SR", "", "file", "user", False, {})
    vm = running_vm(x, "choice")

    def suspend_lands_on():
        x.VM.suspend(vm)
        sr = x.VDI.get_SR(x.VM.get_suspend_VDI(vm))
        x.VM.resume(vm, False, False)
        return sr
    try:
        assert suspend_lands_on() == local
        x.VM.set_suspend_SR(vm, other)
        assert suspend_lands_on() == other
        x.VM.set_suspend_SR(vm, NULL)
        x.pool.set_suspend_image_SR(pool, other)
        assert suspend_lands_on() == other
        x.pool.set_suspend_image_SR(pool, NULL)
        x.host.set_suspend_image_sr(host, other)
        assert suspend_lands_on() == other
        x.host.set_suspend_image_sr(host, NULL)
        domid = x.VM.get_domid(vm)
        assert failure(x.VM.suspend, vm) == ["VM_NO_SUSPEND_SR", vm]
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_domid(vm) == domid
        assert suspend_vdis(x) == []
        # An SR without room for the suspend VDI (a thin file SR checks
        # the empty image's size at creation; a full one mid-image is a
        # VDI_IO_ERROR that leaves the VM as it was).
        small = x.SR.create(host, {
            "location": os.path.join(server.base, "small"),
            "size": str(64 * 1024)}, "0", "small", "", "file", "user",
            False, {})
        x.VM.set_suspend_SR(vm, small)
        assert failure(x.VM.suspend, vm) == [
            "SR_SUSPEND_SPACE_INSUFFICIENT", small]
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_domid(vm) == domid
        assert suspend_vdis(x) == []
    finally:
        x.pool.set_suspend_image_SR(pool, local)
        x.host.set_suspend_image_sr(host, local)
        cleanup(x, vm)


def test_hard_shutdown_and_destroy_discard_the_image(x):
    vm = running_vm(x, "discard")
    x.VM.suspend(vm)
    vdi = x.VM.get_suspend_VDI(vm)
    x.VM.hard_shutdown(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["suspend_VDI"] == NULL
    assert gone(x, vdi)
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    vdi = x.VM.get_suspend_VDI(vm)
    x.VM.destroy(vm)
    assert gone(x, vdi) and suspend_vdis(x) == []


def test_vdi_destroy_of_a_suspend_image(x):
    """As on XAPI: refused while the image is being used (VDI_IN_USE);
    at rest it may go, and the VM forgets it; resume then halts the VM
    with VM_HAS_NO_SUSPEND_VDI."""
    vm = running_vm(x, "lost")
    x.VM.suspend(vm)
    vdi = x.VM.get_suspend_VDI(vm)
    x.VDI.destroy(vdi)
    assert x.VM.get_suspend_VDI(vm) == NULL
    assert failure(x.VM.resume, vm, False, False) == [
        "VM_HAS_NO_SUSPEND_VDI", "VM", vm]
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.destroy(vm)


def test_image_in_use_cannot_be_destroyed(x):
    """While a suspend waits for a guest that does not answer, its VDI
    exists and is in use; the timeout takes it away again."""
    vm = running_vm(x, "hung", other={"simulator-hung": "true"})
    domid = x.VM.get_domid(vm)
    task = x.Async.VM.suspend(vm)
    vdi = wait_until(lambda: suspend_vdis(x), what="the suspend VDI")[0]
    wait_until(lambda: x.VDI.get_allowed_operations(vdi) == [] or
               "destroy" not in x.VDI.get_allowed_operations(vdi),
               what="the VDI in use")
    assert failure(x.VDI.destroy, vdi) == ["VDI_IN_USE", vdi, "destroy"]
    wait_until(lambda: x.task.get_status(task) != "pending", 30, "suspend")
    assert x.task.get_error_info(task) == ["VM_SUSPEND_TIMEOUT", vm, "3."]
    rec = x.VM.get_record(vm)
    assert (rec["power_state"], rec["domid"], rec["suspend_VDI"]) == (
        "Running", domid, NULL)
    assert suspend_vdis(x) == []
    cleanup(x, vm)


def test_failed_resume_leaves_the_vm_suspended_with_its_image(
        x, xapi, server):
    """A resume that cannot fit, and one whose image is corrupt, leave
    the VM Suspended with its VDI; it resumes once the cause is gone."""
    vm = running_vm(x, "retry")
    x.VM.suspend(vm)
    vdi = x.VM.get_suspend_VDI(vm)
    host = x.host.get_all()[0]
    free = int(x.host_metrics.get_record(
        x.host.get_metrics(host))["memory_free"])
    hog = new_vm(x, "hog", memory=(free - 1024 * MIB) // MIB * MIB)
    # All the memory but 64 MiB, with the hog's own overhead.
    size = str((free - int(x.VM.get_memory_overhead(hog)) - 64 * MIB)
               // MIB * MIB)
    x.VM.set_memory_limits(hog, size, size, size, size)
    x.VM.start(hog, False, False)
    assert failure(x.VM.resume, vm, False, False)[0] == \
        "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert x.VM.get_power_state(vm) == "Suspended"
    assert x.VM.get_suspend_VDI(vm) == vdi and x.VDI.get_type(vdi) == \
        "suspend"
    cleanup(x, hog)

    # Overwrite the image with garbage through the data path.
    saved = os.path.join(server.base, "saved.img")
    garbage = os.path.join(server.base, "garbage.img")
    _curl(server, xapi._session, "GET", "/export_raw_vdi", vdi, saved)
    with open(garbage, "wb") as f:
        f.write(b"garbage\n" * 1024)
    _curl(server, xapi._session, "PUT", "/import_raw_vdi", vdi, garbage)
    error = failure(x.VM.resume, vm, False, False)
    assert error[0] == "INTERNAL_ERROR" and "image" in error[1]
    assert x.VM.get_power_state(vm) == "Suspended"
    assert x.VM.get_suspend_VDI(vm) == vdi
    _curl(server, xapi._session, "PUT", "/import_raw_vdi", vdi, saved)
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running" and gone(x, vdi)
    cleanup(x, vm)


def _curl(server, sid, method, path, vdi, filename):
    query = "?session_id=%s&vdi=%s&format=raw" % (sid, vdi)
    args = ["curl", "-sS", "-f", "-k"]
    args += ["-T", filename] if method == "PUT" else ["-o", filename]
    subprocess.run(args + [server.http_url + path + query], check=True,
                   timeout=60)


def test_checkpoint_clone_copy_and_revert_carry_their_own_images(x, server):
    vm = running_vm(x, "carry")
    cp = x.VM.checkpoint(vm, "carry-cp")
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_suspend_VDI(vm) == NULL
    cp_image = x.VM.get_suspend_VDI(cp)
    assert x.VM.get_power_state(cp) == "Suspended" and cp_image != NULL
    assert x.VDI.get_type(cp_image) == "suspend"
    assert suspend_vdis(x) == [cp_image]

    # A copy into another SR takes its image there too, as on XAPI.
    elsewhere = x.SR.create(
        x.host.get_all()[0], {"location": os.path.join(server.base, "sr3")},
        "0", "copies", "", "file", "user", False, {})
    copy = x.VM.copy(cp, "carry-copy", elsewhere)
    assert x.VDI.get_SR(x.VM.get_suspend_VDI(copy)) == elsewhere
    clone = x.VM.clone(cp, "carry-clone")
    for new in (copy, clone):
        rec = x.VM.get_record(new)
        assert rec["power_state"] == "Suspended"
        assert rec["suspend_VDI"] not in (NULL, cp_image)
        assert x.VDI.get_type(rec["suspend_VDI"]) == "suspend"
        # Each resumes from its own image, which then goes (a copy of a
        # snapshot is a template until it is made a VM, as on XAPI).
        assert rec["is_a_template"]
        x.VM.set_is_a_template(new, False)
        x.VM.resume(new, False, False)
        assert x.VM.get_power_state(new) == "Running"
        assert gone(x, rec["suspend_VDI"])
    assert x.VDI.get_record(cp_image)["type"] == "suspend"

    x.VM.hard_shutdown(vm)
    x.VM.revert(cp)
    image = x.VM.get_suspend_VDI(vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    assert image not in (NULL, cp_image)
    x.VM.resume(vm, False, False)
    assert gone(x, image) and x.VM.get_power_state(vm) == "Running"

    x.VM.destroy(cp)
    assert gone(x, cp_image) and suspend_vdis(x) == []
    cleanup(x, vm, copy, clone)


def test_pool_migrate_to_this_host_goes_through_an_image(x):
    vm = running_vm(x, "migrate")
    domid = int(x.VM.get_domid(vm))
    x.VM.pool_migrate(vm, x.host.get_all()[0], {})
    assert x.VM.get_power_state(vm) == "Running"
    assert int(x.VM.get_domid(vm)) > domid
    assert suspend_vdis(x) == []
    cleanup(x, vm)


def test_restart_keeps_a_suspended_vm_resumable(tmp_path):
    server = RunningServer(str(tmp_path / "data"), extra_args=SERVER_ARGS)
    server.start()
    try:
        x = server.session(https=False).xenapi
        vm = running_vm(x, "kept")
        x.VM.suspend(vm)
        vdi = x.VM.get_suspend_VDI(vm)
        # What a suspend cut off by the process's end leaves behind: a
        # suspend VDI made for a VM, which no VM refers to.
        orphan = x.VDI.create({
            "name_label": "Suspend image", "name_description": "",
            "SR": default_sr(x), "virtual_size": str(MIB),
            "type": "suspend", "sharable": False, "read_only": False,
            "other_config": {}, "xenstore_data": {},
            "sm_config": {"vmhint": x.VM.get_uuid(vm)}, "tags": []})
        server.stop()
        server.start()
        x = server.session(https=False).xenapi
        wait_until(lambda: gone(x, orphan), what="the orphan to go")
        assert x.VM.get_power_state(vm) == "Suspended"
        assert x.VM.get_suspend_VDI(vm) == vdi
        assert x.VDI.get_type(vdi) == "suspend"
        x.VM.resume(vm, False, False)
        assert x.VM.get_power_state(vm) == "Running" and gone(x, vdi)
    finally:
        server.stop()

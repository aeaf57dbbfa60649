"""
SRs, PBDs, VDIs and SM records through the XenAPI SDK against a real
server: the local SR of a first start, SR create/scan/probe/destroy/forget
on file and ISO SRs, VDI create/snapshot/clone/copy/resize/destroy with
the database following the driver's tree, garbage collection returning
space, XAPI's errors, and VMs whose disks are really made, snapshotted,
cloned and copied.
"""

import os
import subprocess

import pytest

from tests.support.api import failure, wait_until
from tests.support.servers import RunningServer

MIB = 1 << 20
GIB = 1 << 30
NULL = "OpaqueRef:NULL"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("storage")
    iso = os.path.join(str(base), "isos")
    os.makedirs(iso)
    with open(os.path.join(iso, "install.iso"), "wb") as f:
        f.write(b"\1" * 4096)
    s = RunningServer(os.path.join(str(base), "data"), extra_args=[
        "--iso-dir", iso, "--simulator-op-time", "0"])
    s.base = str(base)
    s.start()
    yield s
    s.stop()


def new_vdi(x, sr, size=16 * MIB, name="disk", **extra):
    record = {"name_label": name, "name_description": "", "SR": sr,
              "virtual_size": str(size), "type": "user", "sharable": False,
              "read_only": False, "other_config": {}, "xenstore_data": {},
              "sm_config": {}, "tags": []}
    record.update(extra)
    return x.VDI.create(record)


def new_sr(x, server, name, size=None, sm_type="file"):
    path = os.path.join(server.base, name)
    config = {"location": path}
    if size is not None:
        config["size"] = str(size)
    host = x.host.get_all()[0]
    return x.SR.create(host, config, "0", name, "", sm_type, "user", False,
                       {}), path


def sr_usage(x, sr):
    x.SR.update(sr)
    return int(x.SR.get_physical_utilisation(sr))


def test_first_start_has_the_local_sr_and_sm_records(x, server):
    pool = x.pool.get_all()[0]
    sr = x.pool.get_default_SR(pool)
    rec = x.SR.get_record(sr)
    assert rec["name_label"] == "Local storage"
    assert rec["type"] == "file" and rec["content_type"] == "user"
    assert rec["other_config"]["i18n-key"] == "local-storage"
    assert not rec["shared"]
    assert x.pool.get_suspend_image_SR(pool) == sr
    assert x.pool.get_crash_dump_SR(pool) == sr
    host = x.host.get_all()[0]
    assert x.host.get_suspend_image_sr(host) == sr
    pbd, = rec["PBDs"]
    assert x.PBD.get_currently_attached(pbd)
    location = x.PBD.get_device_config(pbd)["location"]
    assert location == os.path.join(server.data_dir, "sr", rec["uuid"])
    assert os.path.isdir(location)
    assert int(rec["physical_size"]) > 0
    assert {"vdi_create", "vdi_snapshot", "scan"} <= set(
        rec["allowed_operations"])
    sms = {r["type"]: r for r in x.SM.get_all_records().values()}
    assert set(sms) == set(x.SR.get_supported_types())
    assert {"file", "iso", "sharedfile"} <= set(sms)
    assert "VDI_SNAPSHOT" in sms["file"]["capabilities"]
    assert sms["file"]["features"]["VDI_CREATE"] == "1"
    assert "location" in sms["file"]["configuration"]
    assert "VDI_CREATE" not in sms["iso"]["capabilities"]
    # The ISO directory given on the command line is a library SR.
    iso, = [r for r in x.SR.get_all_records().values()
            if r["type"] == "iso" and not r["is_tools_sr"]]
    assert iso["content_type"] == "iso"
    names = [x.VDI.get_name_label(v) for v in iso["VDIs"]]
    assert names == ["install.iso"]


def test_vdi_snapshot_clone_copy_resize_destroy(x, server):
    sr, _ = new_sr(x, server, "sr-ops")
    vdi = new_vdi(x, sr, 10 * MIB + 1, other_config={"k": "v"},
                  tags=["t"])
    rec = x.VDI.get_record(vdi)
    # Rounded up by the driver, as on XAPI's VHD SRs.
    assert rec["virtual_size"] == str(12 * MIB)
    assert rec["location"] == rec["uuid"] and rec["managed"]
    assert rec["other_config"] == {"k": "v"} and rec["tags"] == ["t"]
    assert rec["sm_config"]["image-format"] == "qcow2"

    snap = x.VDI.snapshot(vdi, {})
    s = x.VDI.get_record(snap)
    assert s["is_a_snapshot"] and s["snapshot_of"] == vdi
    assert s["snapshot_time"].value != "19700101T00:00:00Z"
    assert s["name_label"] == "disk" and s["other_config"] == {"k": "v"}
    assert x.VDI.get_snapshots(vdi) == [snap]
    # Both sit on a hidden base copy, which the database knows unmanaged.
    base = x.VDI.get_sm_config(vdi)["vhd-parent"]
    assert s["sm_config"]["vhd-parent"] == base
    base_ref = x.VDI.get_by_uuid(base)
    assert not x.VDI.get_managed(base_ref)
    assert x.VDI.get_read_only(base_ref)
    assert failure(x.VDI.destroy, base_ref) == ["VDI_NOT_MANAGED", base_ref]

    clone = x.VDI.clone(vdi, {})
    c = x.VDI.get_record(clone)
    assert not c["is_a_snapshot"] and c["snapshot_of"] == NULL
    assert c["name_label"] == "disk" and not c["read_only"]

    other, _ = new_sr(x, server, "sr-copy")
    copy = x.VDI.copy(vdi, other, NULL, NULL)
    assert x.VDI.get_SR(copy) == other
    assert x.VDI.get_virtual_size(copy) == rec["virtual_size"]
    assert "vhd-parent" not in x.VDI.get_sm_config(copy)

    x.VDI.resize(vdi, str(20 * MIB))
    assert x.VDI.get_virtual_size(vdi) == str(20 * MIB)
    assert failure(x.VDI.resize, vdi, str(MIB))[0] == \
        "SR_BACKEND_FAILURE_79"
    assert x.VDI.get_virtual_size(vdi) == str(20 * MIB)

    for ref in (snap, clone, copy, vdi):
        x.VDI.destroy(ref)
    assert failure(x.VDI.get_record, vdi) == ["HANDLE_INVALID", "VDI", vdi]


def test_snapshots_deleted_coalesce_and_give_space_back(x, server):
    sr, path = new_sr(x, server, "sr-gc", size=GIB)
    vdi = new_vdi(x, sr, 32 * MIB)
    snaps = []
    for _ in range(3):
        snaps.append(x.VDI.snapshot(vdi, {}))
    def base_copies():
        # One call: the collector may drop records between two.
        return [r for r in x.VDI.get_all_records().values()
                if r["SR"] == sr and not r["managed"]]
    assert len(base_copies()) == 3
    files_before = len(os.listdir(path))
    before = sr_usage(x, sr)
    for snap in snaps:
        x.VDI.destroy(snap)
    # The garbage collector runs in the background after deletes.
    wait_until(lambda: not base_copies(), what="base copies to be coalesced")
    assert "vhd-parent" not in x.VDI.get_sm_config(vdi)
    assert len(os.listdir(path)) < files_before
    assert sr_usage(x, sr) < before
    x.VDI.destroy(vdi)


def test_sr_errors(x, server):
    host = x.host.get_all()[0]
    assert failure(x.SR.create, host, {"location": "/nonexistent"}, "0",
                   "x", "", "nosuchtype", "user", False, {}) == [
        "SR_UNKNOWN_DRIVER", "nosuchtype"]
    assert failure(x.SR.create, host, {}, "0", "x", "", "file", "user",
                   False, {})[:2] == ["SR_BACKEND_FAILURE_94", ""]
    sr, path = new_sr(x, server, "sr-errors")
    vdi = new_vdi(x, sr)
    uuid = x.SR.get_uuid(sr)
    assert failure(x.SR.introduce, uuid, "", "", "file", "user", False,
                   {}) == ["SR_UUID_EXISTS", uuid]
    pbd, = x.SR.get_PBDs(sr)
    assert failure(x.SR.destroy, sr) == ["SR_HAS_PBD", sr]
    assert failure(x.SR.forget, sr) == ["SR_HAS_PBD", sr]
    assert failure(x.PBD.destroy, pbd) == [
        "OPERATION_NOT_ALLOWED", "PBD is currently attached"]
    assert failure(x.PBD.create, {"host": host, "SR": sr,
                                  "device_config": {}}) == [
        "PBD_EXISTS", sr, host, pbd]
    assert failure(x.PBD.set_device_config, pbd, {}) == [
        "PERMISSION_DENIED", ""]
    x.PBD.unplug(pbd)
    assert not x.PBD.get_currently_attached(pbd)
    assert failure(x.VDI.create, {
        "name_label": "", "name_description": "", "SR": sr,
        "virtual_size": str(MIB), "type": "user", "sharable": False,
        "read_only": False, "other_config": {}, "xenstore_data": {},
        "sm_config": {}, "tags": []}) == ["SR_HAS_NO_PBDS", sr]
    assert failure(x.SR.destroy, sr) == ["SR_NOT_EMPTY"]
    x.PBD.plug(pbd)
    x.VDI.destroy(vdi)
    x.PBD.unplug(pbd)
    x.SR.destroy(sr)
    assert not os.path.exists(path)
    assert failure(x.PBD.get_record, pbd)[0] == "HANDLE_INVALID"

    # A tiny SR refuses a VDI whose image does not fit.
    small, _ = new_sr(x, server, "sr-small", size=64 * 1024)
    details = failure(new_vdi, x, small, GIB)
    assert details[0] == "SR_FULL" and int(details[1]) > int(details[2])


def test_vdi_errors(x, server):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = new_vdi(x, sr)
    assert failure(x.VDI.set_read_only, vdi, True) == ["PERMISSION_DENIED",
                                                       ""]
    assert failure(x.VDI.set_on_boot, vdi, "reset") == [
        "SR_OPERATION_NOT_SUPPORTED", sr]
    assert failure(new_vdi, x, sr, MIB, type="cbt_metadata") == [
        "VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata"]
    iso = [r for r, rec in x.SR.get_all_records().items()
           if rec["type"] == "iso" and not rec["is_tools_sr"]][0]
    assert failure(new_vdi, x, iso) == ["SR_OPERATION_NOT_SUPPORTED", iso]
    cd = x.SR.get_VDIs(iso)[0]
    assert failure(x.VDI.destroy, cd) == ["SR_OPERATION_NOT_SUPPORTED", iso]
    assert failure(x.VDI.snapshot, cd, {}) == [
        "SR_OPERATION_NOT_SUPPORTED", iso]
    assert failure(x.VDI.enable_cbt, cd) == [
        "SR_OPERATION_NOT_SUPPORTED", iso]
    # The driver finds the image gone: VDI_MISSING, and a scan forgets it.
    location = x.PBD.get_device_config(x.SR.get_PBDs(sr)[0])["location"]
    os.unlink(os.path.join(location, x.VDI.get_uuid(vdi) + ".qcow2"))
    assert failure(x.VDI.update, vdi) == ["VDI_MISSING", sr, vdi]
    x.SR.scan(sr)
    assert failure(x.VDI.get_uuid, vdi)[0] == "HANDLE_INVALID"
    assert failure(x.VDI.destroy, "OpaqueRef:nope") == [
        "HANDLE_INVALID", "VDI", "OpaqueRef:nope"]


def test_scan_probe_introduce_forget(x, server):
    sr, path = new_sr(x, server, "sr-scan")
    # An image put there behind the toolstack's back appears on a scan.
    uuid = "3c3a2f4e-93a5-4d7c-9a38-7c1f2b1e5d10"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    os.path.join(path, uuid + ".qcow2"), str(4 * MIB)],
                   check=True)
    x.SR.scan(sr)
    vdi = x.VDI.get_by_uuid(uuid)
    assert x.VDI.get_SR(vdi) == sr
    assert x.VDI.get_virtual_size(vdi) == str(4 * MIB)
    x.VDI.forget(vdi)
    assert failure(x.VDI.get_by_uuid, uuid)[0] == "UUID_INVALID"
    again = x.VDI.introduce(uuid, "back", "", sr, "user", False, False, {},
                            uuid, {}, {}, True, "0", "0", NULL, False,
                            "19700101T00:00:00Z", NULL)
    assert x.VDI.get_name_label(again) == "back"
    host = x.host.get_all()[0]
    xml = x.SR.probe(host, {"location": path}, "file", {})
    assert "<UUID>%s</UUID>" % x.SR.get_uuid(sr) in xml
    ext, = x.SR.probe_ext(host, {"location": path}, "file", {})
    assert ext["sr"]["uuid"] == x.SR.get_uuid(sr)
    pbd, = x.SR.get_PBDs(sr)
    x.PBD.unplug(pbd)
    x.SR.forget(sr)
    assert failure(x.VDI.get_record, again)[0] == "HANDLE_INVALID"
    # Forgetting keeps the data: introduce and plug it again.
    uuid_sr = xml.split("<UUID>")[1].split("</UUID>")[0]
    sr2 = x.SR.introduce(uuid_sr, "again", "", "file", "user", False, {})
    pbd2 = x.PBD.create({"host": host, "SR": sr2,
                         "device_config": {"location": path}})
    x.PBD.plug(pbd2)
    assert x.VDI.get_SR(x.VDI.get_by_uuid(uuid)) == sr2


def test_vm_provision_start_snapshot_clone_copy(x, server):
    template = [r for r, rec in x.VM.get_all_records().items()
                if rec["is_a_template"] and "disks" in rec["other_config"]
                and 'size="' in rec["other_config"]["disks"]][0]
    vm = x.VM.clone(template, "with disks")
    x.VM.provision(vm)
    vbds = [v for v in x.VM.get_VBDs(vm) if x.VBD.get_type(v) == "Disk"]
    assert vbds
    disk = x.VBD.get_VDI(vbds[0])
    default_sr = x.pool.get_default_SR(x.pool.get_all()[0])
    assert x.VDI.get_SR(disk) == default_sr
    assert int(x.VDI.get_virtual_size(disk)) >= GIB
    x.VM.set_memory_limits(vm, str(256 * MIB), str(256 * MIB),
                           str(256 * MIB), str(256 * MIB))
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(vbds[0])
    # Attached read-write to a running VM: no destroy, no import.
    assert failure(x.VDI.destroy, disk) == ["VDI_IN_USE", disk, "destroy"]
    snap = x.VM.snapshot(vm, "snap")
    snap_disk = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(snap)
                 if x.VBD.get_type(v) == "Disk"][0]
    assert x.VDI.get_is_a_snapshot(snap_disk)
    assert x.VDI.get_snapshot_of(snap_disk) == disk
    x.VM.hard_shutdown(vm)
    clone = x.VM.clone(vm, "clone")
    clone_disk = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(clone)
                  if x.VBD.get_type(v) == "Disk"][0]
    assert clone_disk != disk and x.VDI.get_SR(clone_disk) == default_sr
    copy = x.VM.copy(vm, "copy", NULL)
    copy_disk = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(copy)
                 if x.VBD.get_type(v) == "Disk"][0]
    assert "vhd-parent" not in x.VDI.get_sm_config(copy_disk)
    x.VM.start(clone, False, False)
    x.VM.hard_shutdown(clone)
    x.VM.revert(snap)
    reverted = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm)
                if x.VBD.get_type(v) == "Disk"][0]
    assert reverted != disk
    assert failure(x.VDI.get_record, disk)[0] == "HANDLE_INVALID"
    for v in (vm, snap, clone, copy):
        for vbd in x.VM.get_VBDs(v):
            vdi = x.VBD.get_VDI(vbd)
            if vdi != NULL and x.VBD.get_type(vbd) == "Disk":
                x.VDI.destroy(vdi)
        x.VM.destroy(v)


def _vbd(x, vm, vdi, userdevice, mode="RW", vbd_type="Disk"):
    return x.VBD.create({
        "VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": False,
        "mode": mode, "type": vbd_type, "empty": vdi == NULL,
        "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})


def _active_files(x, sr):
    location = x.PBD.get_device_config(x.SR.get_PBDs(sr)[0])["location"]
    return [n for n in os.listdir(location) if n.endswith(".active")]


def test_vm_disks_attach_and_let_go(x, server):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    template = [r for r, rec in x.VM.get_all_records().items()
                if rec["is_a_template"] and
                rec["name_label"].startswith("Other install media")][0]
    vm = x.VM.clone(template, "disks")
    x.VM.provision(vm)
    x.VM.set_memory_limits(vm, str(256 * MIB), str(256 * MIB),
                           str(256 * MIB), str(256 * MIB))
    data = new_vdi(x, sr, 8 * MIB, name="data")
    iso = [r for r, rec in x.SR.get_all_records().items()
           if rec["type"] == "iso" and not rec["is_tools_sr"]][0]
    cd = _vbd(x, vm, NULL, "3", "RO", "CD")
    x.VM.start(vm, False, False)
    assert len(_active_files(x, sr)) == 1
    # A second VM may not write the disk the first one writes.
    other = x.VM.clone(template, "other")
    x.VM.set_is_a_template(other, False)
    x.VM.set_memory_limits(other, str(256 * MIB), str(256 * MIB),
                           str(256 * MIB), str(256 * MIB))
    disk = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm)
            if x.VBD.get_type(v) == "Disk"][0]
    _vbd(x, other, disk, "0")
    assert failure(x.VM.start, other, False, False) == ["VDI_IN_USE", disk]
    assert x.VM.get_power_state(other) == "Halted"
    # Hot-plug a data disk and a CD (once the guest has its drivers);
    # unplug the disk again.
    wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL,
               what="the guest's drivers")
    plugged = _vbd(x, vm, data, "1")
    x.VBD.plug(plugged)
    assert x.VBD.get_currently_attached(plugged)
    assert len(_active_files(x, sr)) == 2
    x.VBD.insert(cd, x.SR.get_VDIs(iso)[0])
    assert not x.VBD.get_empty(cd)
    x.VBD.unplug(plugged)
    wait_until(lambda: len(_active_files(x, sr)) == 1,
               what="the unplugged disk to be let go")
    x.VDI.destroy(data)
    x.VM.suspend(vm)
    wait_until(lambda: not _active_files(x, sr), what="suspend to let go")
    x.VM.resume(vm, False, False)
    assert len(_active_files(x, sr)) == 1
    x.VM.checkpoint(vm, "cp")
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    wait_until(lambda: not _active_files(x, sr), what="shutdown to let go")
    x.VM.start(other, False, False)
    x.VM.hard_shutdown(other)


def test_restart_keeps_srs_and_vdis(tmp_path):
    server = RunningServer(str(tmp_path / "data"))
    server.start()
    try:
        s = server.session(https=False)
        x = s.xenapi
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        vdi = new_vdi(x, sr, 8 * MIB, name="kept")
        snap = x.VDI.snapshot(vdi, {})
        template = x.VM.get_by_name_label("Other install media")[0]
        vm = x.VM.clone(template, "running")
        x.VM.provision(vm)
        x.VM.set_memory_limits(vm, str(256 * MIB), str(256 * MIB),
                               str(256 * MIB), str(256 * MIB))
        x.VM.start(vm, False, False)
        server.stop()
        server.start()
        x = server.session(https=False).xenapi
        assert x.pool.get_default_SR(x.pool.get_all()[0]) == sr
        assert x.PBD.get_currently_attached(x.SR.get_PBDs(sr)[0])
        assert x.VDI.get_name_label(vdi) == "kept"
        assert x.VDI.get_snapshot_of(snap) == vdi
        assert len([r for r in x.SR.get_all_records().values()
                    if r["name_label"] == "Local storage"]) == 1
        # The VM outlived the restart; its disk is claimed again and let
        # go when it stops.
        assert x.VM.get_power_state(vm) == "Running"
        assert len(_active_files(x, sr)) == 1
        disk = [x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm)
                if x.VBD.get_type(v) == "Disk"][0]
        assert failure(x.VDI.destroy, disk)[0] == "VDI_IN_USE"
        x.VM.hard_shutdown(vm)
        wait_until(lambda: not _active_files(x, sr), what="the disk let go")
        x.VDI.destroy(disk)
    finally:
        server.stop()

"""
``xe`` commands on VMs' devices and disks, VM migration, snapshots and
the pool's HA and database switches, run with the real client against a
real server: each checked by what it prints and by what the API shows
after.  Commands whose API call another part of the server builds are
checked against that call's own answer through the SDK, whatever it is.
"""

import re
import threading

import XenAPI

from tests.support.pool import host_address
from tests.support.xe import (
    api_error, as_the_api_answers, block, module_fixtures, ok, run_xe)
from tests.test_vm_lifecycle import new_vm

MIB = 1 << 20

server, api, x = module_fixtures("clidevs")


def default_sr(x):
    return x.SR.get_uuid(x.pool.get_default_SR(x.pool.get_all()[0]))


def test_disks_clone_snapshot_copy_resize(server, x):
    sr = default_sr(x)
    vdi = ok(server, "vdi-create", "sr-uuid=" + sr, "name-label=orig",
             "virtual-size=8MiB").strip()
    clone = ok(server, "vdi-clone", "uuid=" + vdi, "new-name-label=cloned",
               "new-name-description=a clone").strip()
    ref = x.VDI.get_by_uuid(clone)
    assert (x.VDI.get_name_label(ref), x.VDI.get_name_description(ref)) == (
        "cloned", "a clone")
    snap = ok(server, "vdi-snapshot", "uuid=" + vdi).strip()
    assert x.VDI.get_is_a_snapshot(x.VDI.get_by_uuid(snap))
    assert x.VDI.get_snapshot_of(x.VDI.get_by_uuid(snap)) == \
        x.VDI.get_by_uuid(vdi)
    before = sorted(x.VDI.get_all())
    for extra in ([], ["sr-uuid=" + sr, "into-vdi-uuid=" + clone]):
        assert run_xe(server, "vdi-copy", "uuid=" + vdi, *extra) == (
            1, "", "Error: Please specify one but not both of: a destination "
                   "sr-uuid (I will create a fresh VDI); or a destination "
                   "into-vdi-uuid (I will copy the blocks into this VDI)\n")
    assert sorted(x.VDI.get_all()) == before
    copy = ok(server, "vdi-copy", "uuid=" + vdi, "sr-uuid=" + sr).strip()
    assert x.VDI.get_virtual_size(x.VDI.get_by_uuid(copy)) == str(8 * MIB)
    assert ok(server, "vdi-copy", "uuid=" + vdi,
              "into-vdi-uuid=" + clone) == clone + "\n"
    ok(server, "vdi-resize", "uuid=" + copy, "disk-size=16MiB")
    assert x.VDI.get_virtual_size(x.VDI.get_by_uuid(copy)) == str(16 * MIB)
    assert run_xe(server, "vdi-resize", "uuid=" + copy,
                  "disk-size=lots")[2] == (
        "Error: Failed to parse field 'disk-size': expecting an integer "
        "(possibly with suffix)\n")
    for u in (snap, copy, clone, vdi):
        ok(server, "vdi-destroy", "uuid=" + u)


def test_hot_plug_pause_and_reset(server, x):
    vm = new_vm(x, "devices")
    uuid = x.VM.get_uuid(vm)
    vdi = ok(server, "vdi-create", "sr-uuid=" + default_sr(x),
             "name-label=hot", "virtual-size=4MiB").strip()
    net = x.network.get_uuid(x.network.get_all()[0])
    ok(server, "vm-start", "uuid=" + uuid)
    vbd = ok(server, "vbd-create", "vm-uuid=" + uuid, "vdi-uuid=" + vdi,
             "device=1").strip()
    vif = ok(server, "vif-create", "vm-uuid=" + uuid, "network-uuid=" + net,
             "device=0").strip()
    vbd_ref, vif_ref = x.VBD.get_by_uuid(vbd), x.VIF.get_by_uuid(vif)
    ok(server, "vbd-plug", "uuid=" + vbd)
    ok(server, "vif-plug", "uuid=" + vif)
    assert x.VBD.get_currently_attached(vbd_ref)
    assert x.VIF.get_currently_attached(vif_ref)
    assert run_xe(server, "vbd-plug", "uuid=" + vbd) == (
        1, "", api_error("DEVICE_ALREADY_ATTACHED", vbd))
    assert run_xe(server, "vbd-unplug", "uuid=" + vbd, "timeout=soon")[2] == \
        "Error: Failed to parse parameter 'timeout': expecting a float\n"
    ok(server, "vbd-unplug", "uuid=" + vbd)
    ok(server, "vif-unplug", "uuid=" + vif, "--force")
    assert not x.VBD.get_currently_attached(vbd_ref)
    assert not x.VIF.get_currently_attached(vif_ref)
    ok(server, "vm-pause", "vm=devices")
    assert x.VM.get_power_state(vm) == "Paused"
    ok(server, "vm-unpause", "vm=devices")
    assert x.VM.get_power_state(vm) == "Running"
    assert run_xe(server, "vm-reset-powerstate", "uuid=" + uuid) == (
        1, "", "Error: This operation is dangerous and may cause data loss. "
               "This operation must be forced (use --force).\n")
    assert x.VM.get_power_state(vm) == "Running"
    ok(server, "vm-shutdown", "uuid=" + uuid, "--force")
    ok(server, "vm-uninstall", "uuid=" + uuid, "--force")
    ok(server, "vdi-destroy", "uuid=" + vdi)


def test_vbd_unplug_waits_for_the_detach(server, x):
    # A hung guest does not let go of its disk: vbd-unplug waits up to
    # timeout= for the detach someone else makes, else says it was
    # refused.
    vm = new_vm(x, "hung", other={"simulator-hung": "true"})
    uuid = x.VM.get_uuid(vm)
    vdi = ok(server, "vdi-create", "sr-uuid=" + default_sr(x),
             "name-label=held", "virtual-size=4MiB").strip()
    ok(server, "vm-start", "uuid=" + uuid)
    # Booleans read as XAPI's CLI reads them.
    assert run_xe(server, "vbd-create", "vm-uuid=" + uuid, "vdi-uuid=" + vdi,
                  "device=1", "unpluggable=maybe") == (
        1, "", "Error: Failed to parse parameter 'unpluggable': Expected "
               "'true','t','yes','y','1','false','f','no','n','0' got "
               "maybe\n")
    vbd = ok(server, "vbd-create", "vm-uuid=" + uuid, "vdi-uuid=" + vdi,
             "device=1", "unpluggable=Yes").strip()
    vbd_ref = x.VBD.get_by_uuid(vbd)
    assert x.VBD.get_unpluggable(vbd_ref) is True
    ok(server, "vbd-plug", "uuid=" + vbd)
    try:
        x.VBD.unplug(vbd_ref)
    except XenAPI.Failure as e:
        refused = e.details
    assert refused[0] == "DEVICE_DETACH_REJECTED"
    assert run_xe(server, "vbd-unplug", "uuid=" + vbd, "timeout=0.5") == (
        1, "", api_error(refused[0], refused[1], vbd, *refused[3:]))
    assert x.VBD.get_currently_attached(vbd_ref)
    detach = threading.Timer(0.5, x.VBD.unplug_force, (vbd_ref,))
    detach.start()
    assert run_xe(server, "vbd-unplug", "uuid=" + vbd, "timeout=60") == (
        0, "", "")
    detach.join()
    assert not x.VBD.get_currently_attached(vbd_ref)
    ok(server, "vm-shutdown", "uuid=" + uuid, "--force")
    ok(server, "vm-uninstall", "uuid=" + uuid, "--force")


def test_migrate_and_revert(server, x):
    vm = new_vm(x, "mover")
    uuid = x.VM.get_uuid(vm)
    host = x.host.get_all()[0]
    assert run_xe(server, "vm-migrate", "uuid=" + uuid) == (
        1, "", "Error: No destination host specified\n")
    assert run_xe(server, "vm-migrate", "uuid=" + uuid, "host=nowhere") == (
        1, "", "Error: Host nowhere not found\n")
    assert run_xe(server, "vm-migrate", "uuid=" + uuid,
                  "vdi:%s=%s" % (uuid, uuid)) == (
        1, "Performing a storage live migration. Your VM's VDIs will be "
           "migrated with the VM.\n",
        "Error: Storage live migration requires remote-master, "
        "remote-username, and remote-password to be specified. Please see "
        "'xe help vm-migrate' for help.\n")
    # A remote master that does not answer (nothing listens on port 443
    # there): the CLI could not reach it.
    nowhere = host_address(250)
    assert run_xe(server, "vm-migrate", "uuid=" + uuid,
                  "remote-master=" + nowhere, "remote-username=root",
                  "remote-password=x") == (
        1, "Performing a storage live migration. Your VM's VDIs will be "
           "migrated with the VM.\n",
        api_error("CANNOT_CONTACT_HOST", nowhere))
    ok(server, "vm-start", "uuid=" + uuid)
    assert run_xe(server, "vm-migrate", "uuid=" + uuid,
                  "host=" + x.host.get_name_label(host), "live=maybe")[2] == \
        "Error: Failed to parse parameter 'live': Expected 'true','t'," \
        "'yes','y','1','false','f','no','n','0' got maybe\n"
    expected = as_the_api_answers(x.VM.pool_migrate, vm, host,
                                  {"live": "true"})
    assert run_xe(server, "vm-migrate", "uuid=" + uuid,
                  "host=" + x.host.get_name_label(host), "live=yes") == \
        expected
    assert x.VM.get_resident_on(vm) == host
    ok(server, "vm-shutdown", "uuid=" + uuid, "--force")
    snap = ok(server, "vm-snapshot", "uuid=" + uuid,
              "new-name-label=before").strip()
    x.VM.set_name_description(vm, "changed after the snapshot")
    assert run_xe(server, "snapshot-revert") == (
        1, "", "Error: Required parameter not found: snapshot-uuid or "
               "uuid.\n")
    assert run_xe(server, "snapshot-revert", "uuid=" + uuid) == (
        1, "", "Error: This operation can only be performed on a VM "
               "snapshot. %s is not a VM snapshot.\n" % uuid)
    ok(server, "snapshot-revert", "snapshot-uuid=" + snap)
    assert x.VM.get_name_description(vm) == ""
    ok(server, "vm-uninstall", "uuid=" + uuid, "--force")


def test_sr_probe_introduce_and_pbd_create(server, x, tmp_path):
    host = x.host.get_uuid(x.host.get_all()[0])
    location = tmp_path / "probed"
    sr = ok(server, "sr-create", "name-label=probed", "type=file",
            "device-config:location=%s" % location).strip()
    ref = x.SR.get_by_uuid(sr)
    out = ok(server, "sr-probe", "type=file",
             "device-config:location=%s" % location)
    # The answer is the call's (the space used may have moved meanwhile).
    probed = x.SR.probe(x.host.get_by_uuid(host),
                        {"location": str(location)}, "file", {}) + "\n"
    assert re.sub(r"\d+", "N", out) == re.sub(r"\d+", "N", probed)
    assert sr in out
    for pbd in x.SR.get_PBDs(ref):
        x.PBD.unplug(pbd)
    ok(server, "sr-forget", "uuid=" + sr)
    # The SR on storage comes back under its uuid, then its PBD.
    assert ok(server, "sr-introduce", "uuid=" + sr, "type=file",
              "name-label=again") == sr + "\n"
    ref = x.SR.get_by_uuid(sr)
    assert x.SR.get_name_label(ref) == "again" and x.SR.get_PBDs(ref) == []
    pbd = ok(server, "pbd-create", "host-uuid=" + host, "sr-uuid=" + sr,
             "device-config:location=%s" % location).strip()
    assert x.PBD.get_device_config(x.PBD.get_by_uuid(pbd)) == {
        "location": str(location)}
    ok(server, "pbd-plug", "uuid=" + pbd)
    assert x.PBD.get_currently_attached(x.PBD.get_by_uuid(pbd))
    ok(server, "pbd-unplug", "uuid=" + pbd)
    ok(server, "sr-destroy", "uuid=" + sr)
    assert run_xe(server, "sr-introduce", "uuid=" + sr, "type=file")[2] == (
        "Required parameter not found: name-label\nFor usage run: "
        "'xe help'\n")


def test_pool_switches_are_the_api_calls(server, x):
    pool = x.pool.get_all()[0]
    host = x.host.get_all()[0]
    [pif] = [p for p in x.PIF.get_all() if x.PIF.get_management(p)]
    assert run_xe(server, "pool-sync-database") == \
        as_the_api_answers(x.pool.sync_database)
    assert run_xe(server, "pool-ha-disable") == \
        as_the_api_answers(x.pool.disable_ha)
    assert run_xe(server, "pool-ha-enable",
                  "heartbeat-sr-uuids=nope")[2] == api_error(
        "UUID_INVALID", "SR", "nope")
    assert not x.pool.get_ha_enabled(pool)
    assert run_xe(server, "host-management-reconfigure",
                  "pif-uuid=" + x.PIF.get_uuid(pif)) == \
        as_the_api_answers(x.host.management_reconfigure, pif)
    assert x.host.get_address(host) == server.bind
    # A local command, on a master: the host's own answer.
    try:
        expected = (0, "%s\n" % str(x.host.is_in_emergency_mode()).lower(),
                    "")
    except XenAPI.Failure as e:
        expected = (1, "", api_error(*e.details))
    assert run_xe(server, "host-is-in-emergency-mode") == expected


def test_cds_disks_and_vifs_of_a_vm(server, x):
    vm = new_vm(x, "lister")
    uuid = x.VM.get_uuid(vm)
    [tools] = [sr for sr in x.SR.get_all() if x.SR.get_is_tools_sr(sr)]
    iso = x.SR.get_VDIs(tools)[0]
    iso_name, iso_uuid = x.VDI.get_name_label(iso), x.VDI.get_uuid(iso)
    assert run_xe(server, "vm-cd-eject", "uuid=" + uuid) == (
        1, "", "Error: No CDs found\n")
    assert run_xe(server, "vm-cd-insert", "uuid=" + uuid,
                  "cd-name=" + iso_name) == (
        1, "", api_error("VM_NO_EMPTY_CD_VBD", "%s (lister)" % uuid))
    cd = ok(server, "vbd-create", "vm-uuid=" + uuid, "device=3",
            "type=cd", "mode=ro").strip()
    disk = ok(server, "vdi-create", "sr-uuid=" + default_sr(x),
              "name-label=listed", "virtual-size=4MiB").strip()
    vbd = ok(server, "vbd-create", "vm-uuid=" + uuid, "vdi-uuid=" + disk,
             "device=0").strip()
    net = x.network.get_all()[0]
    vif = ok(server, "vif-create", "vm-uuid=" + uuid,
             "network-uuid=" + x.network.get_uuid(net), "device=0").strip()
    assert run_xe(server, "vm-cd-insert", "uuid=" + uuid,
                  "cd-name=no such iso") == (
        1, "", "Error: CD no such iso not found\n")
    assert ok(server, "vm-cd-list", "uuid=" + uuid) == (
        "CD 0 VBD:\n" + block(("uuid ( RO)", cd),
                              ("vm-name-label ( RO)", "lister"),
                              ("empty ( RO)", "true"),
                              ("userdevice ( RW)", "3")))
    ok(server, "vm-cd-insert", "uuid=" + uuid, "cd-name=" + iso_name)
    assert x.VBD.get_VDI(x.VBD.get_by_uuid(cd)) == iso
    out = ok(server, "vm-cd-list", "uuid=" + uuid, "vbd-params=uuid",
             "vdi-params=uuid,name-label")
    assert out == ("CD 0 VBD:\n" + block(("uuid ( RO)", cd)) +
                   "CD 0 VDI:\n" + block(("uuid ( RO)", iso_uuid),
                                         ("name-label ( RW)", iso_name)))
    ok(server, "vm-cd-eject", "uuid=" + uuid)
    assert x.VBD.get_empty(x.VBD.get_by_uuid(cd))
    ok(server, "vbd-insert", "uuid=" + cd, "vdi-uuid=" + iso_uuid)
    assert not x.VBD.get_empty(x.VBD.get_by_uuid(cd))
    ok(server, "vbd-eject", "uuid=" + cd)
    assert x.VBD.get_empty(x.VBD.get_by_uuid(cd))
    assert ok(server, "vm-disk-list", "vm=lister") == (
        "Disk 0 VBD:\n" + block(("uuid ( RO)", vbd),
                                ("vm-name-label ( RO)", "lister"),
                                ("userdevice ( RW)", "0")) +
        "Disk 0 VDI:\n" + block(("uuid ( RO)", disk),
                                ("name-label ( RW)", "listed"),
                                ("sr-name-label ( RO)", x.SR.get_name_label(
                                    x.pool.get_default_SR(
                                        x.pool.get_all()[0]))),
                                ("virtual-size ( RO)", str(4 * MIB))))
    mac = x.VIF.get_MAC(x.VIF.get_by_uuid(vif))
    assert ok(server, "vm-vif-list", "vm=lister") == block(
        ("uuid ( RO)", vif), ("device ( RO)", "0"), ("MAC ( RO)", mac),
        ("network-uuid ( RO)", x.network.get_uuid(net)),
        ("network-name-label ( RO)", x.network.get_name_label(net)),
        ("vm-name-label ( RO)", "lister"))
    ok(server, "vm-uninstall", "uuid=" + uuid, "--force")
    ok(server, "vdi-destroy", "uuid=" + disk)


def test_records_list_fields_in_xapis_order(server, x):
    vdi = ok(server, "vdi-create", "sr-uuid=" + default_sr(x),
             "name-label=ordered", "virtual-size=1MiB").strip()
    out = ok(server, "vdi-param-list", "uuid=" + vdi)
    names = [line.split(" (")[0].strip() for line in out.splitlines()
             if line.strip()]
    assert names[:11] == [
        "uuid", "name-label", "name-description", "is-a-snapshot",
        "snapshot-of", "snapshots", "snapshot-time", "allowed-operations",
        "current-operations", "sr-uuid", "sr-name-label"]
    ok(server, "vdi-destroy", "uuid=" + vdi)
    host = x.host.get_uuid(x.host.get_all()[0])
    out = ok(server, "host-param-list", "uuid=" + host)
    names = [line.split(" (")[0].strip() for line in out.splitlines()
             if line.strip()]
    assert names[:6] == ["uuid", "name-label", "name-description",
                         "allowed-operations", "current-operations",
                         "enabled"]
    # XAPI's names that keep the API's underscores.
    assert ok(server, "host-param-get", "uuid=" + host,
              "param-name=cpu_info", "param-key=vendor") == \
        x.host.get_cpu_info(x.host.get_by_uuid(host))["vendor"] + "\n"


def test_migrate_send_within_the_pool(server, x, tmp_path):
    host = x.host.get_all()[0]
    network = x.network.get_all()[0]
    other = x.SR.get_by_uuid(ok(
        server, "sr-create", "name-label=motion target", "type=file",
        "device-config:location=%s" % tmp_path).strip())
    vm = new_vm(x, "motion")
    vdi = x.VDI.get_by_uuid(ok(
        server, "vdi-create", "sr-uuid=" + default_sr(x),
        "name-label=moving", "virtual-size=2MiB").strip())
    vbd = x.VBD.get_by_uuid(ok(
        server, "vbd-create", "vm-uuid=" + x.VM.get_uuid(vm),
        "vdi-uuid=" + x.VDI.get_uuid(vdi), "device=0").strip())
    dest = x.host.migrate_receive(host, network, {})
    assert dest["host"] == host and sorted(dest) == [
        "SM", "host", "master", "session_id", "xenops"]
    failure = XenAPI.Failure
    for args, error in (
            (({"host": "OpaqueRef:elsewhere"}, {}),
             ["INVALID_VALUE", "dest", "no session_id in the destination"]),
            ((dest, {vdi: "OpaqueRef:nothing"}),
             ["HANDLE_INVALID", "SR", "OpaqueRef:nothing"])):
        try:
            x.VM.assert_can_migrate(vm, args[0], True, args[1], {}, {}, {})
        except failure as e:
            assert e.details == error
        else:
            raise AssertionError(args)
    x.VM.assert_can_migrate(vm, dest, True, {vdi: other}, {}, {}, {})
    # A halted VM's disk is copied to its new SR, the old one destroyed.
    assert x.VM.migrate_send(vm, dest, True, {vdi: other}, {}, {}, {}) == vm
    moved = x.VBD.get_VDI(vbd)
    assert x.VDI.get_SR(moved) == other and vdi not in x.VDI.get_all()
    # A running VM's disk moves too (copied with the guest paused).
    x.VM.start(vm, False, False)
    back = x.pool.get_default_SR(x.pool.get_all()[0])
    assert x.VM.migrate_send(vm, dest, True, {moved: back}, {}, {}, {}) == vm
    again = x.VBD.get_VDI(vbd)
    assert x.VDI.get_SR(again) == back and moved not in x.VDI.get_all()
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.migrate_send(vm, dest, True, {}, {}, {}, {}) == vm
    assert x.VM.get_resident_on(vm) == host
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    x.VDI.destroy(again)

"""
VM.migrate_send to another pool (XAPI's cross-pool storage motion), and
a running VM's disks moved to another SR of its pool: two
independent single-host pools (tests/support/pool.py), the real SDK on
both.  The destination's host.migrate_receive answers the ``dest`` map;
the source copies the disks into the destination's SRs, its VM record
is restored there with the same uuid, a running VM's memory follows it
and it runs on there, and only then is it gone from the source.  The
records on both sides, the disks' bytes and the simulators' ledgers are
checked; a refused or failed move leaves both pools as they were.
"""

import json
import os
import ssl
import urllib.error
import urllib.request

import pytest

from tests.support.api import failure, wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import started_pool
from tests.test_pool_forwarding import SERVER_ARGS, add_disk, local_sr, \
    memory_free
from tests.test_vm_lifecycle import MIB, new_vm, wait_task
from txxenops.backends.simledger import intervals, overlaps

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]

NULL = "OpaqueRef:NULL"
GIB = 1024 * MIB
DISK = 4 * MIB


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    yield from started_pool(str(tmp_path_factory.mktemp("xpool")), 2,
                            SERVER_ARGS)


class Side:
    """One pool: its server, SDK session and its one host."""

    def __init__(self, server):
        self.server = server
        self.session = server.session()
        self.x = self.session.xenapi
        self.host, = self.x.host.get_all()
        wait_until(lambda: self.x.host.get_enabled(self.host),
                   what="host %s enabled" % server.address)

    def network(self, label):
        return self.x.network.create({
            "name_label": label, "name_description": "", "MTU": "1500",
            "other_config": {}})

    def management_network(self):
        pif, = [p for p in self.x.host.get_PIFs(self.host)
                if self.x.PIF.get_management(p)]
        return self.x.PIF.get_network(pif)

    def url(self, path):
        return "https://%s%s&session_id=%s" % (
            self.server.address, path, self.session._session)

    def write(self, vdi, data):
        request = urllib.request.Request(
            self.url("/import_raw_vdi?vdi=%s" % vdi), data=data,
            method="PUT")
        urllib.request.urlopen(request, context=_insecure()).read()

    def read(self, vdi):
        return urllib.request.urlopen(
            self.url("/export_raw_vdi?vdi=%s&format=raw" % vdi),
            context=_insecure()).read()

    def rrd_rows(self, uuid):
        """The known memory rows of the VM's RRD here, in its finest
        archive (a row a second), or None without one."""
        request = urllib.request.Request(
            self.url("/vm_rrd?uuid=%s" % uuid),
            headers={"accept": "application/json"})
        try:
            rrd = json.load(urllib.request.urlopen(request,
                                                   context=_insecure()))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        i = [ds["name"] for ds in rrd["ds"]].index("memory")
        finest = min(rrd["rra"], key=lambda a: int(a["pdp_per_row"]))
        return sum(1 for row in finest["database"] if row[i] != "NaN")

    def ledger(self):
        return os.path.join(self.server.data_dir, "xenops")

    def disks(self):
        """The managed VDIs (a snapshot's base copy is the SR's garbage
        collector's to remove, as with XAPI's SM)."""
        return [v for v, r in self.x.VDI.get_all_records().items()
                if r["managed"]]

    def counts(self):
        x = self.x
        return (len(x.VM.get_all()), len(x.VDI.get_all()),
                len(x.VBD.get_all()), len(x.VIF.get_all()),
                len(x.network.get_all()))


def _insecure():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def sides(pools):
    out = [Side(server) for server in pools]
    yield out
    for side in out:
        side.session.xenapi.session.logout()


def guest(side, name, data, running=False, **kw):
    """A VM with one disk holding ``data`` and one VIF, started if
    ``running`` (and its guest agent heard from)."""
    x = side.x
    vm = new_vm(x, name, **kw)
    vdi = add_disk(x, vm, local_sr(x, side.host))
    side.write(vdi, data)
    vif = x.VIF.create({
        "device": "0", "network": side.management_network(), "VM": vm,
        "MAC": "", "MTU": "1500", "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    if running:
        x.VM.start(vm, False, False)
        wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL,
                   what="the guest agent of %s" % name)
    return vm, vdi, vif


def receive(there):
    return there.x.host.migrate_receive(
        there.host, there.management_network(), {})


def test_a_halted_vm_moves_to_another_pool(sides):
    here, there = sides
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "halted mover", data)
    uuid = here.x.VM.get_uuid(vm)
    mac = here.x.VIF.get_MAC(vif)
    net = there.network("arrivals")
    sr = local_sr(there.x, there.host)
    dest = receive(there)
    networks = len(there.x.network.get_all())
    here.x.message.create("MOVER_NOTE", "3", "VM", uuid, "before the move")
    here.x.VM.assert_can_migrate(vm, dest, True, {vdi: sr}, {vif: net}, {},
                                 {})
    moved = here.x.VM.migrate_send(vm, dest, True, {vdi: sr}, {vif: net},
                                   {}, {})
    # There: the same VM, its disk a copy on the SR given, its VIF on
    # the network given, with its MAC.
    y = there.x
    assert y.VM.get_by_uuid(uuid) == moved
    record = y.VM.get_record(moved)
    assert record["power_state"] == "Halted"
    assert record["name_label"] == "halted mover"
    assert record["current_operations"] == {}
    vbd, = record["VBDs"]
    copy = y.VBD.get_VDI(vbd)
    assert y.VDI.get_SR(copy) == sr
    assert there.read(copy) == data
    new_vif, = record["VIFs"]
    assert y.VIF.get_network(new_vif) == net
    assert y.VIF.get_MAC(new_vif) == mac
    assert "maps_to" not in y.VIF.get_other_config(new_vif)
    assert len(y.network.get_all()) == networks
    # Its messages went with it.
    def notes(side):
        return [(m["name"], m["priority"], m["body"])
                for m in side.x.message.get_all_records().values()
                if m["obj_uuid"] == uuid]
    assert notes(there) == [("MOVER_NOTE", "3", "before the move")]
    assert notes(here) == []
    # Here: gone, and its disk with it.
    assert failure(here.x.VM.get_by_uuid, uuid)[0] == "UUID_INVALID"
    assert vdi not in here.x.VDI.get_all()
    y.VM.destroy(moved)
    y.VDI.destroy(copy)


def test_a_vms_snapshots_go_with_it(sides):
    here, there = sides
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "with history", data)
    snapshot = here.x.VM.snapshot(vm, "yesterday")
    snapshot_vdi = here.x.VBD.get_VDI(here.x.VM.get_VBDs(snapshot)[0])
    names = (here.x.VM.get_uuid(snapshot), here.x.VDI.get_uuid(snapshot_vdi))
    net = there.network("history arrivals")
    sr = local_sr(there.x, there.host)
    # The snapshot's disk follows its disk's map entry.
    moved = here.x.VM.migrate_send(vm, receive(there), True, {vdi: sr},
                                   {vif: net}, {}, {})
    y = there.x
    old, = y.VM.get_snapshots(moved)
    record = y.VM.get_record(old)
    assert record["uuid"] == names[0]
    assert record["is_a_snapshot"] and record["snapshot_of"] == moved
    assert record["name_label"] == "yesterday"
    assert y.VIF.get_network(record["VIFs"][0]) == net
    copy = y.VBD.get_VDI(y.VM.get_VBDs(moved)[0])
    old_disk = y.VBD.get_VDI(record["VBDs"][0])
    disk = y.VDI.get_record(old_disk)
    assert disk["is_a_snapshot"] and disk["snapshot_of"] == copy
    assert disk["SR"] == sr and "maps_to" not in disk["other_config"]
    assert there.read(old_disk) == data
    assert failure(here.x.VM.get_by_uuid, names[0])[0] == "UUID_INVALID"
    assert failure(here.x.VDI.get_by_uuid, names[1])[0] == "UUID_INVALID"
    y.VM.destroy(old)
    y.VM.destroy(moved)
    for ref in (old_disk, copy):
        y.VDI.destroy(ref)


def test_refusals_leave_both_pools_as_they_were(sides):
    here, there = sides
    vm, vdi, vif = guest(here, "refused", b"\1" * DISK)
    net = there.network("refusals")
    sr = local_sr(there.x, there.host)
    dest = receive(there)
    before = (here.counts(), there.counts())

    def refused(vdi_map, vif_map, to=dest, options=None):
        a = failure(here.x.VM.assert_can_migrate, vm, to, True, vdi_map,
                    vif_map, options or {}, {})
        b = failure(here.x.VM.migrate_send, vm, to, True, vdi_map, vif_map,
                    options or {}, {})
        assert a == b, (a, b)
        assert here.x.VM.get_current_operations(vm) == {}
        return a
    assert refused({}, {vif: net}) == ["VDI_NOT_IN_MAP", vdi]
    assert refused({vdi: sr}, {}) == ["VIF_NOT_IN_MAP", vif]
    # The other pool's handles are its to judge.
    assert refused({vdi: "OpaqueRef:nowhere"}, {vif: net}) == [
        "HANDLE_INVALID", "SR", "OpaqueRef:nowhere"]
    assert refused({vdi: sr}, {vif: "OpaqueRef:nowhere"}) == [
        "HANDLE_INVALID", "network", "OpaqueRef:nowhere"]
    assert refused({vdi: sr}, {vif: net}, {"host": "OpaqueRef:elsewhere"}) \
        == ["INVALID_VALUE", "dest", "no session_id in the destination"]
    # A disabled destination.
    there.x.host.disable(there.host)
    try:
        assert refused({vdi: sr}, {vif: net}) == ["HOST_DISABLED",
                                                  there.host]
    finally:
        there.x.host.enable(there.host)
    assert (here.counts(), there.counts()) == before
    # Too big for the destination's memory.
    free = int(there.x.host.compute_free_memory(there.host))
    filler = new_vm(there.x, "filler", memory=free - GIB)
    there.x.VM.start(filler, False, False)
    big, big_vdi, big_vif = guest(here, "big", b"\2" * DISK,
                                  running=True, memory=2 * GIB)
    counts = there.counts()
    error = failure(here.x.VM.migrate_send, big, dest, True, {big_vdi: sr},
                    {big_vif: net}, {}, {})
    assert error[0] == "HOST_NOT_ENOUGH_FREE_MEMORY", error
    assert here.x.VM.get_power_state(big) == "Running"
    assert here.x.VM.get_current_operations(big) == {}
    assert there.counts() == counts
    here.x.VM.hard_shutdown(big)
    there.x.VM.hard_shutdown(filler)
    there.x.VM.destroy(filler)
    for ref, disk in ((vm, vdi), (big, big_vdi)):
        here.x.VM.destroy(ref)
        here.x.VDI.destroy(disk)
    there.x.network.destroy(net)


def test_a_running_vm_moves_and_runs_on_there(sides):
    here, there = sides
    data = os.urandom(DISK)
    # Its memory takes a second to send: time to see the mark.
    vm, vdi, vif = guest(here, "live mover", data, running=True,
                         memory=512 * MIB,
                         other={"simulator-migrate-delay": "1"})
    uuid = here.x.VM.get_uuid(vm)
    started = here.x.VM_metrics.get_start_time(here.x.VM.get_metrics(vm))
    # Its RRD has a history here, to go on there.
    ran = wait_until(lambda: (here.rrd_rows(uuid) or 0) >= 3 and
                     here.rrd_rows(uuid), what="the VM's RRD here")
    net = there.network("live arrivals")
    sr = local_sr(there.x, there.host)
    dest = receive(there)
    before = memory_free(there.x, there.host)
    vdis = len(here.disks())
    task = here.x.Async.VM.migrate_send(vm, dest, True, {vdi: sr},
                                        {vif: net}, {}, {})
    wait_until(lambda: "migrate_send" in here.x.VM.get_current_operations(
        vm).values(), what="the migrate_send mark")
    # XAPI's one operation at a time on a VM.
    error = failure(here.x.VM.pause, vm)
    assert error[:4] == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm,
                         "migrate_send"], error
    done = wait_task(here.x, task)
    assert done["status"] == "success", done["error_info"]
    y = there.x
    moved = y.VM.get_by_uuid(uuid)
    assert moved in done["result"]
    record = y.VM.get_record(moved)
    assert record["power_state"] == "Running"
    assert record["resident_on"] == there.host
    assert record["scheduled_to_be_resident_on"] == NULL
    assert record["current_operations"] == {}
    metrics = y.VM_metrics.get_record(record["metrics"])
    assert metrics["start_time"] == started
    assert metrics["memory_actual"] == str(512 * MIB)
    wait_until(lambda: memory_free(y, there.host) <= before - 512 * MIB,
               what="the domain there")
    vbd, = record["VBDs"]
    assert y.VBD.get_currently_attached(vbd)
    copy = y.VBD.get_VDI(vbd)
    new_vif, = record["VIFs"]
    assert y.VIF.get_network(new_vif) == net
    assert y.VIF.get_currently_attached(new_vif)
    for console in record["consoles"]:
        assert y.console.get_location(console).startswith(
            "https://%s/" % there.server.address)
    assert failure(here.x.VM.get_by_uuid, uuid)[0] == "UUID_INVALID"
    # Its RRD went there as the move ended, its rows from here in it.
    assert there.rrd_rows(uuid) >= ran
    assert here.rrd_rows(uuid) is None
    # Its disk gone here, and the snapshot its copy was made from.
    assert vdi not in here.x.VDI.get_all()
    assert len(here.disks()) == vdis - 1
    # The guest ran in one place at a time.
    ledgers = {s.server.address: s.ledger() for s in sides}
    assert all(any(r[0] == uuid for r in intervals(path))
               for path in ledgers.values())
    assert overlaps(ledgers) == []
    y.VM.hard_shutdown(moved)
    assert there.read(copy) == data
    y.VM.destroy(moved)
    y.VDI.destroy(copy)


def test_a_failed_move_leaves_nothing_there(sides):
    """The destination's simulator has less room than its toolstack's
    count says (a guest that ballooned up needs all it has): the memory
    is refused after the disks were copied and the VM imported there.
    Those are destroyed again, and the VM runs on here as it was."""
    here, there = sides
    y = there.x
    vdis = len(here.disks())
    free = int(y.host.compute_free_memory(there.host))
    filler = new_vm(y, "filler", memory=free - 2 * GIB)
    y.VM.start(filler, False, False)
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "balloon", data, memory=8 * GIB)
    here.x.VM.set_memory_limits(vm, str(256 * MIB), str(8 * GIB),
                                str(256 * MIB), str(8 * GIB))
    here.x.VM.start(vm, False, False)
    wait_until(lambda: here.x.VM.get_guest_metrics(vm) != NULL,
               what="agent")
    domid = here.x.VM.get_domid(vm)
    uuid = here.x.VM.get_uuid(vm)
    net = there.network("failed arrivals")
    sr = local_sr(y, there.host)
    dest = receive(there)
    counts = there.counts()
    there_free = memory_free(y, there.host)
    error = failure(here.x.VM.migrate_send, vm, dest, True, {vdi: sr},
                    {vif: net}, {}, {})
    assert error[:4] == ["VM_MIGRATE_FAILED", vm, here.host, there.host], \
        error
    # Nothing left there.
    assert failure(y.VM.get_by_uuid, uuid)[0] == "UUID_INVALID"
    assert there.counts() == counts
    assert memory_free(y, there.host) == there_free
    # Here as it was: running (not paused), its disk whole.
    record = here.x.VM.get_record(vm)
    assert record["power_state"] == "Running"
    assert record["resident_on"] == here.host
    assert record["domid"] == domid
    assert record["current_operations"] == {}
    assert here.x.VBD.get_VDI(record["VBDs"][0]) == vdi
    assert len(here.disks()) == vdis + 1    # no snapshot left
    here.x.VM.hard_shutdown(vm)
    assert here.read(vdi) == data
    here.x.VM.destroy(vm)
    here.x.VDI.destroy(vdi)
    y.VM.hard_shutdown(filler)
    y.VM.destroy(filler)


def test_a_running_vms_disk_moves_to_another_sr_of_its_pool(sides,
                                                             tmp_path):
    """Within the pool: copied from a snapshot, the guest paused for what
    it wrote since and the switch, and it runs on (the same domain)."""
    here, _ = sides
    x = here.x
    data = os.urandom(DISK)
    vm, vdi, _ = guest(here, "sr mover", data, running=True)
    other = x.SR.create(here.host, {"location": str(tmp_path)}, "0",
                        "second", "", "file", "user", False, {})
    domid = x.VM.get_domid(vm)
    dest = receive(here)
    vdis = len(here.disks())
    assert x.VM.migrate_send(vm, dest, True, {vdi: other}, {}, {}, {}) == vm
    # The copy in place of the disk; its snapshot gone.
    assert len(here.disks()) == vdis
    record = x.VM.get_record(vm)
    assert record["power_state"] == "Running"
    assert record["domid"] == domid
    assert record["current_operations"] == {}
    vbd, = record["VBDs"]
    copy = x.VBD.get_VDI(vbd)
    assert x.VDI.get_SR(copy) == other
    assert x.VBD.get_currently_attached(vbd)
    assert vdi not in x.VDI.get_all()
    x.VM.hard_shutdown(vm)
    assert here.read(copy) == data
    x.VM.destroy(vm)
    x.VDI.destroy(copy)
    for pbd in x.SR.get_PBDs(other):
        x.PBD.unplug(pbd)
    x.SR.forget(other)


def test_a_refused_import_there_leaves_nothing_there(sides):
    """The other pool already holds a newer record of the VM (its
    metadata restored there before): the import is refused after the
    disk was copied, the copy is destroyed, the VM stays here."""
    here, there = sides
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "known there", data)
    uuid = here.x.VM.get_uuid(vm)
    metadata = urllib.request.urlopen(
        here.url("/export_metadata?uuid=%s" % uuid),
        context=_insecure()).read()
    urllib.request.urlopen(urllib.request.Request(
        there.url("/import_metadata?restore=true&force=true"),
        data=metadata, method="PUT"), context=_insecure()).read()
    planted = there.x.VM.get_by_uuid(uuid)
    net = there.network("known arrivals")
    sr = local_sr(there.x, there.host)
    counts = there.counts()
    error = failure(here.x.VM.migrate_send, vm, receive(there), True,
                    {vdi: sr}, {vif: net}, {}, {})
    assert error[0] == "VM_TO_IMPORT_IS_NOT_NEWER_VERSION", error
    assert there.counts() == counts
    assert there.x.VM.get_by_uuid(uuid) == planted
    assert here.x.VM.get_record(vm)["current_operations"] == {}
    assert here.x.VBD.get_VDI(here.x.VM.get_VBDs(vm)[0]) == vdi
    assert here.read(vdi) == data
    there.x.VM.destroy(planted)
    here.x.VM.destroy(vm)
    here.x.VDI.destroy(vdi)


def test_a_cancelled_move_leaves_nothing_there(sides):
    """Cancelled while the memory is sent (the disk copied, the VM
    imported there): both undone, the guest runs on here."""
    here, there = sides
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "cancelled", data, running=True,
                         other={"simulator-migrate-delay": "5"})
    uuid = here.x.VM.get_uuid(vm)
    domid = here.x.VM.get_domid(vm)
    net = there.network("cancelled arrivals")
    sr = local_sr(there.x, there.host)
    dest = receive(there)
    counts = there.counts()
    task = here.x.Async.VM.migrate_send(vm, dest, True, {vdi: sr},
                                        {vif: net}, {}, {})
    wait_until(lambda: uuid in [there.x.VM.get_uuid(v)
                                for v in there.x.VM.get_all()],
               what="the VM imported there")
    here.x.task.cancel(task)
    done = wait_task(here.x, task)
    assert done["status"] == "cancelled", done
    assert there.counts() == counts
    record = here.x.VM.get_record(vm)
    assert record["power_state"] == "Running"
    assert record["domid"] == domid
    assert record["current_operations"] == {}
    here.x.VM.hard_shutdown(vm)
    assert here.read(vdi) == data
    here.x.VM.destroy(vm)
    here.x.VDI.destroy(vdi)


def test_a_suspended_vm_arrives_suspended_and_resumes_there(sides):
    here, there = sides
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "sleeper", data, running=True)
    here.x.VM.suspend(vm)
    image = here.x.VM.get_suspend_VDI(vm)
    uuid = here.x.VM.get_uuid(vm)
    net = there.network("sleeper arrivals")
    sr = local_sr(there.x, there.host)
    y = there.x
    # The image goes to the other pool's default SR: its local SR here.
    assert y.pool.get_default_SR(y.pool.get_all()[0]) == sr
    moved = here.x.VM.migrate_send(vm, receive(there), True, {vdi: sr},
                                   {vif: net}, {}, {})
    assert y.VM.get_by_uuid(uuid) == moved
    assert y.VM.get_power_state(moved) == "Suspended"
    assert y.VDI.get_SR(y.VM.get_suspend_VDI(moved)) == sr
    for ref in (vdi, image):
        assert ref not in here.x.VDI.get_all()
    y.VM.resume(moved, False, False)
    assert y.VM.get_power_state(moved) == "Running"
    assert y.VM.get_resident_on(moved) == there.host
    copy = y.VBD.get_VDI(y.VM.get_VBDs(moved)[0])
    y.VM.hard_shutdown(moved)
    assert there.read(copy) == data
    y.VM.destroy(moved)
    y.VDI.destroy(copy)


def test_the_incoming_vm_cannot_be_started_there(sides):
    """While its memory arrives, the VM imported there is not the other
    pool's client's to start (as XAPI's xenopsd, which holds the incoming
    domain, refuses it); the move goes on."""
    here, there = sides
    y = there.x
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "incoming", data, running=True,
                         other={"simulator-migrate-delay": "1"})
    uuid = here.x.VM.get_uuid(vm)
    net = there.network("incoming arrivals")
    sr = local_sr(y, there.host)
    task = here.x.Async.VM.migrate_send(vm, receive(there), True, {vdi: sr},
                                        {vif: net}, {}, {})
    def imported():
        found = [v for v, r in y.VM.get_all_records().items()
                 if r["uuid"] == uuid and
                 r["scheduled_to_be_resident_on"] == there.host]
        return found[0] if found else None
    incoming = wait_until(imported, what="the VM imported there")
    refused = ["VM_BAD_POWER_STATE", incoming, "halted", "paused"]
    assert failure(y.VM.start, incoming, False, False) == refused
    assert failure(y.VM.start_on, incoming, there.host, False, False) == \
        refused
    assert y.VM.get_current_operations(incoming) == {}
    done = wait_task(here.x, task)
    assert done["status"] == "success", done["error_info"]
    record = y.VM.get_record(incoming)
    assert record["power_state"] == "Running"
    y.VM.hard_shutdown(incoming)
    copy = y.VBD.get_VDI(record["VBDs"][0])
    y.VM.destroy(incoming)
    y.VDI.destroy(copy)


def test_a_halted_vm_is_copied_to_another_pool(sides):
    """copy=true: a new VM there (its snapshots left out), the VM here
    as it was; only a halted VM, and only to another pool."""
    here, there = sides
    x, y = here.x, there.x
    data = os.urandom(DISK)
    vm, vdi, vif = guest(here, "copied", data)
    snapshot = x.VM.snapshot(vm, "kept here")
    uuid = x.VM.get_uuid(vm)
    net = there.network("copies")
    sr = local_sr(y, there.host)
    dest = receive(there)
    x.message.create("COPY_NOTE", "3", "VM", uuid, "stays here")
    options = {"copy": "true"}
    before = there.counts()
    x.VM.assert_can_migrate(vm, dest, True, {vdi: sr}, {vif: net}, options,
                            {})
    made = x.VM.migrate_send(vm, dest, True, {vdi: sr}, {vif: net}, options,
                             {})
    record = y.VM.get_record(made)
    assert record["uuid"] != uuid
    assert record["name_label"] == "copied"
    assert record["power_state"] == "Halted"
    assert record["current_operations"] == {}
    assert record["snapshots"] == []
    copy = y.VBD.get_VDI(record["VBDs"][0])
    assert y.VDI.get_SR(copy) == sr and there.read(copy) == data
    assert y.VIF.get_network(record["VIFs"][0]) == net
    # Only the VM, its disk, VBD and VIF are new there.
    assert there.counts() == tuple(n + 1 for n in before[:4]) + before[4:]
    # Here as it was, its snapshot and messages too.
    assert x.VM.get_record(vm)["current_operations"] == {}
    assert x.VM.get_snapshots(vm) == [snapshot]
    assert here.read(vdi) == data
    assert any(m["name"] == "COPY_NOTE" and m["obj_uuid"] == uuid
               for m in x.message.get_all_records().values())
    # Not within the pool; not of a running VM.
    error = failure(x.VM.migrate_send, vm, receive(here), True, {}, {},
                    options, {})
    assert error[0] == "OPERATION_NOT_ALLOWED", error
    x.VM.start(vm, False, False)
    counts = there.counts()
    for call in (x.VM.assert_can_migrate, x.VM.migrate_send):
        assert failure(call, vm, dest, True, {vdi: sr}, {vif: net}, options,
                       {}) == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    assert there.counts() == counts
    assert x.VM.get_current_operations(vm) == {}
    x.VM.hard_shutdown(vm)
    y.VM.destroy(made)
    y.VDI.destroy(copy)
    snapshot_vdi = x.VBD.get_VDI(x.VM.get_VBDs(snapshot)[0])
    for ref in (snapshot, vm):
        x.VM.destroy(ref)
    for ref in (snapshot_vdi, vdi):
        x.VDI.destroy(ref)

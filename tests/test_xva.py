"""
GET /export and PUT /import against a real server: a VM with two disks
(data written through /import_raw_vdi) goes out as an XVA and comes back
as a new VM whose disks read the same bytes (/export_raw_vdi), with curl
and with the XenAPI SDK's session, plain, gzip and zstd; an XVA written
here from the format's description (tarfile, hashlib, xxhash; not the
server's exporter) imports too; and refused imports (a bad checksum, a cut
archive, a bad session, a missing SR, a running VM's export) leave no VM,
no VDI and no pending task behind.
"""

import gzip
import hashlib
import http.client
import io
import os
import random
import subprocess
import tarfile
import time
import urllib.parse

import pytest
import xxhash
import zstandard

from tests.support.api import failure, wait_until
from tests import test_vdi_transfer as transfer
from tests.test_vdi_transfer import curl, make_raw, new_vdi, task_of, url
from tests.test_vm_lifecycle import add_vif, new_vm
from txxapi.wire.xmlrpc import decode_value, encode_value

MIB = 1 << 20
NULL = "OpaqueRef:NULL"
SIZES = (6 * MIB + 4096, 3 * MIB)

# The VDI data path's module fixtures: a server of this module's own, a
# session on it (x: its xenapi, sid: its ref); the same tools needed.
pytestmark = transfer.pytestmark
server, api, x, sid = transfer.server, transfer.api, transfer.x, transfer.sid


# --- helpers -------------------------------------------------------------------

def put_disk(server, sid, vdi, path):
    code, headers, _ = curl("-T", str(path), url(
        server, "/import_raw_vdi", session_id=sid, vdi=vdi))
    assert code == 200, headers


def disk_bytes(server, sid, vdi, work, size):
    out = work / ("%s.raw" % vdi[10:18])
    code, headers, _ = curl("-o", str(out), url(
        server, "/export_raw_vdi", session_id=sid, vdi=vdi))
    assert code == 200, headers
    return out.read_bytes()[:size]


@pytest.fixture
def source(x, server, sid, tmp_path):
    """A halted VM with a VIF and two disks holding known data:
    {vm, vdis, images}."""
    vm = new_vm(x, "xva-source")
    add_vif(x, vm)
    vdis, images = [], []
    for n, size in enumerate(SIZES):
        vdi = new_vdi(x, size, "disk %d" % n)
        # Data in the first chunk, one in the middle, the last bytes.
        image = make_raw(tmp_path / ("src%d.raw" % n), size, [
            (100, 5000), (2 * MIB + 7, 3000), (size - 512, 512)], seed=n)
        put_disk(server, sid, vdi, image)
        x.VBD.create({
            "VM": vm, "VDI": vdi, "userdevice": str(n), "bootable": n == 0,
            "mode": "RW", "type": "Disk", "unpluggable": False,
            "empty": False, "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}})
        vdis.append(vdi)
        images.append(open(image, "rb").read())
    yield {"vm": vm, "vdis": vdis, "images": images}
    for ref in (vm,):
        if ref in x.VM.get_all():
            x.VM.destroy(ref)
    for vdi in vdis:
        if vdi in x.VDI.get_all():
            x.VDI.destroy(vdi)


def counts(x):
    return len(x.VM.get_all()), len(x.VDI.get_all())


def imported_vms(rec):
    value = decode_value(rec["result"].encode())
    assert isinstance(value, list)
    return value


def disks_of(x, vm):
    vbds = sorted(x.VBD.get_all_records_where(
        'field "VM"="%s"' % vm).values(), key=lambda r: r["userdevice"])
    return [r["VDI"] for r in vbds if r["type"] == "Disk"]


def check_copy(x, server, sid, work, new, source):
    rec = x.VM.get_record(new)
    assert rec["power_state"] == "Halted"
    assert rec["uuid"] != x.VM.get_uuid(source["vm"])
    assert rec["current_operations"] == {}
    assert "start" in rec["allowed_operations"]
    new_disks = disks_of(x, new)
    assert len(new_disks) == 2
    for vdi, old, image, size in zip(new_disks, source["vdis"],
                                     source["images"], SIZES):
        assert vdi != old
        assert int(x.VDI.get_virtual_size(vdi)) >= size
        assert disk_bytes(server, sid, vdi, work, size) == image
    vifs = x.VM.get_VIFs(new)
    assert len(vifs) == 1
    assert x.VIF.get_MAC(vifs[0]) != x.VIF.get_MAC(
        x.VM.get_VIFs(source["vm"])[0])
    # The network found here by its name, not made again.
    assert x.VIF.get_network(vifs[0]) == x.VIF.get_network(
        x.VM.get_VIFs(source["vm"])[0])


def destroy_vm_and_disks(x, vm):
    disks = disks_of(x, vm)
    x.VM.destroy(vm)
    for vdi in disks:
        x.VDI.destroy(vdi)


def members_of(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as t:
        return [(m.name, t.extractfile(m).read() if m.isfile() else b"")
                for m in t]


# --- round trips -----------------------------------------------------------------

def test_round_trip_with_curl(x, server, sid, source, tmp_path):
    xva = tmp_path / "vm.xva"
    code, headers, _ = curl("-o", str(xva), url(
        server, "/export", https=True, session_id=sid,
        uuid=x.VM.get_uuid(source["vm"])))
    assert code == 200, headers
    assert 'filename="export.xva"' in headers
    task, rec = task_of(x, headers)
    assert rec["status"] == "success", rec["error_info"]
    assert rec["name_label"] == "VM.export"
    assert x.VM.get_current_operations(source["vm"]) == {}

    members = members_of(xva.read_bytes())
    assert members[0][0] == "ova.xml"
    header = decode_value(members[0][1])
    assert header["version"]["export_vsn"] == 2
    classes = sorted(o["class"] for o in header["objects"])
    for cls in ("VM", "VBD", "VDI", "SR", "VIF", "network"):
        assert cls in classes
    vm_obj = [o for o in header["objects"] if o["class"] == "VM"][0]
    assert vm_obj["snapshot"]["uuid"] == x.VM.get_uuid(source["vm"])
    ids = {o["id"] for o in header["objects"]}
    assert set(vm_obj["snapshot"]["VBDs"]) <= ids
    # Chunks: each with its XXH64, the zero ones left out, first and last
    # always there.
    chunks = members[1:]
    names = [n for n, _ in chunks]
    prefixes = sorted({n.split("/")[0] for n in names})
    assert len(prefixes) == 2
    for i in range(0, len(chunks), 2):
        (name, data), (check, digest) = chunks[i], chunks[i + 1]
        assert check == name + ".xxhash"
        assert digest.decode() == "%016X" % xxhash.xxh64_intdigest(data)
    by_disk = {p: [int(n.split("/")[1]) for n in names[::2]
                   if n.startswith(p + "/")] for p in prefixes}
    # Chunks 0 and 2 and the one of the last written bytes hold data; the
    # VDI's last chunk is always there.  (A VDI may be larger than asked.)
    expected = []
    for vdi, size in zip(source["vdis"], SIZES):
        last = (int(x.VDI.get_virtual_size(vdi)) - 1) // MIB
        expected.append(sorted({0, 2, (size - 1) // MIB, last}))
    assert sorted(by_disk.values()) == sorted(expected)

    before = counts(x)
    code, headers, _ = curl("-T", str(xva), url(
        server, "/import", session_id=sid,
        sr_id=x.VDI.get_SR(source["vdis"][0])))
    assert code == 200, headers
    task, rec = task_of(x, headers)
    assert rec["status"] == "success", rec["error_info"]
    assert rec["other_config"].get("object_creation") == "complete"
    assert rec["result"].startswith("<value><array><data><value>OpaqueRef:")
    [new] = imported_vms(rec)
    assert counts(x) == (before[0] + 1, before[1] + 2)
    check_copy(x, server, sid, tmp_path, new, source)
    destroy_vm_and_disks(x, new)


def _sdk_export(server, sid, vm, compression, **extra):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port,
                                      timeout=60)
    query = "session_id=%s&ref=%s" % (sid, vm)
    if compression:
        query += "&use_compression=" + compression
    query += "".join("&%s=%s" % kv for kv in extra.items())
    conn.request("GET", "/export?" + query)
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, data[-2000:]
    conn.close()
    return data


def _sdk_import(x, server, sid, data, **query):
    """PUT /import as XenCenter does: a task made first, the body sent
    with its length, the task waited for."""
    task = x.task.create("import", "")
    query = "&".join("%s=%s" % kv for kv in dict(
        session_id=sid, task_id=task, **query).items())
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port,
                                      timeout=60)
    conn.putrequest("PUT", "/import?" + query)
    conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    try:
        conn.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass    # refused before all of it was read: the answer tells
    try:
        resp = conn.getresponse()
        status = resp.status
        resp.read()
    except (ConnectionResetError, http.client.RemoteDisconnected):
        status = None
    conn.close()
    wait_until(lambda: x.task.get_status(task) != "pending",
               what="the import task")
    return status, task, x.task.get_record(task)


@pytest.mark.parametrize("compression,magic", [
    ("zstd", b"\x28\xb5\x2f\xfd"), ("gzip", b"\x1f\x8b"),
    ("true", b"\x1f\x8b")])
def test_round_trip_compressed_with_the_sdk(x, server, sid, source,
                                            tmp_path, compression, magic):
    data = _sdk_export(server, sid, source["vm"], compression)
    assert data.startswith(magic)
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(data) \
        if compression == "zstd" else gzip.decompress(data)
    assert members_of(plain)[0][0] == "ova.xml"
    status, task, rec = _sdk_import(x, server, sid, data)
    assert status == 200
    assert rec["status"] == "success", rec["error_info"]
    [new] = imported_vms(rec)
    check_copy(x, server, sid, tmp_path, new, source)
    destroy_vm_and_disks(x, new)


def test_restore_keeps_the_uuid_and_macs(x, server, sid, source, tmp_path):
    vm = source["vm"]
    uuid, mac = x.VM.get_uuid(vm), x.VIF.get_MAC(x.VM.get_VIFs(vm)[0])
    data = _sdk_export(server, sid, vm, None)
    # The VM is still there, and no newer than the export.
    status, task, rec = _sdk_import(x, server, sid, data, restore="true")
    assert rec["error_info"][0] == "VM_TO_IMPORT_IS_NOT_NEWER_VERSION"
    before = counts(x)
    x.VM.destroy(vm)
    status, task, rec = _sdk_import(x, server, sid, data, restore="true")
    assert rec["status"] == "success", rec["error_info"]
    [new] = imported_vms(rec)
    assert x.VM.get_uuid(new) == uuid
    assert x.VIF.get_MAC(x.VM.get_VIFs(new)[0]) == mac
    assert counts(x) == (before[0], before[1] + 2)
    destroy_vm_and_disks(x, new)


# --- an XVA made here --------------------------------------------------------------

def _snapshot_vm(name):
    return {
        "uuid": "0f1e2d3c-0000-4000-8000-00000000abcd", "name_label": name,
        "name_description": "hand made", "user_version": "1",
        "is_a_template": False, "power_state": "Running",
        "memory_static_max": str(256 * MIB),
        "memory_dynamic_max": str(256 * MIB),
        "memory_dynamic_min": str(256 * MIB),
        "memory_static_min": str(256 * MIB), "VCPUs_params": {},
        "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "restart",
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
        "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "dc"},
        "platform": {"acpi": "1"}, "PCI_bus": "",
        "other_config": {"mac_seed": "11111111-2222-4333-8444-555555555555"},
        "recommendations": "", "affinity": NULL, "VBDs": ["Ref:2"],
        "VIFs": ["Ref:5"], "resident_on": NULL, "suspend_VDI": NULL}


def hand_made_xva(size, chunks, checksum="sha1", vsn=2, corrupt=None,
                  name="hand-made"):
    """An XVA from the format's description: ova.xml, then the disk's
    non-zero chunks, each followed by its checksum member."""
    objects = [
        {"class": "VM", "id": "Ref:0", "snapshot": _snapshot_vm(name)},
        {"class": "SR", "id": "Ref:1", "snapshot": {
            "uuid": "5e5e5e5e-0000-4000-8000-000000000001",
            "name_label": "elsewhere", "content_type": "user",
            "type": "ext", "VDIs": ["Ref:3"], "PBDs": []}},
        {"class": "VBD", "id": "Ref:2", "snapshot": {
            "uuid": "b0b0b0b0-0000-4000-8000-000000000002", "VM": "Ref:0",
            "VDI": "Ref:3", "userdevice": "0", "bootable": True,
            "mode": "RW", "type": "Disk", "unpluggable": False,
            "empty": False, "currently_attached": True, "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {}}},
        {"class": "VDI", "id": "Ref:3", "snapshot": {
            "uuid": "d1d1d1d1-0000-4000-8000-000000000003",
            "name_label": "hand disk", "name_description": "",
            "SR": "Ref:1", "virtual_size": str(size), "type": "system",
            "sharable": False, "read_only": False, "other_config": {},
            "xenstore_data": {}, "sm_config": {}, "tags": [],
            "location": "d1d1d1d1-0000-4000-8000-000000000003"}},
        {"class": "network", "id": "Ref:4", "snapshot": {
            "uuid": "7e7e7e7e-0000-4000-8000-000000000004",
            "name_label": "a network nobody here has", "bridge": "xapi77",
            "MTU": "1500", "other_config": {}}},
        {"class": "VIF", "id": "Ref:5", "snapshot": {
            "uuid": "f1f1f1f1-0000-4000-8000-000000000005",
            "device": "0", "network": "Ref:4", "VM": "Ref:0",
            "MAC": "aa:bb:cc:dd:ee:01", "MTU": "1500", "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {}}},
    ]
    doc = {"version": {"hostname": "elsewhere", "date": "2026-01-01",
                       "product_version": "8.2.1", "product_brand": "XCP-ng",
                       "build_number": "x", "xapi_major": "1",
                       "xapi_minor": "20", "export_vsn": str(vsn)},
           "objects": objects}
    out = io.BytesIO()
    t = tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT)

    def add(name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

    add("ova.xml", encode_value(doc).encode())
    table = {}
    for number, data in chunks:
        name = "Ref:3/%08d" % number
        if checksum == "sha1":
            digest, ext = hashlib.sha1(data).hexdigest(), ".checksum"
        else:
            digest, ext = "%016X" % xxhash.xxh64_intdigest(data), ".xxhash"
        table[name] = digest
        if corrupt == number:
            data = bytes([data[0] ^ 1]) + data[1:]
        add(name, data)
        add(name + ext, digest.encode())
    if vsn < 2:
        add("checksum", encode_value(table).encode())
    t.close()
    return out.getvalue()


def test_an_xva_made_by_hand_imports(x, server, sid, tmp_path):
    size = 4 * MIB + 1000
    rnd = random.Random(7)
    first, third, last = (rnd.randbytes(MIB), rnd.randbytes(MIB),
                          rnd.randbytes(1000))
    data = hand_made_xva(size, [(0, first), (2, third), (4, last)])
    before = counts(x)
    status, task, rec = _sdk_import(x, server, sid, gzip.compress(data))
    assert rec["status"] == "success", rec["error_info"]
    [vm] = imported_vms(rec)
    assert counts(x) == (before[0] + 1, before[1] + 1)
    r = x.VM.get_record(vm)
    assert r["power_state"] == "Halted"
    assert r["uuid"] != "0f1e2d3c-0000-4000-8000-00000000abcd"
    assert r["other_config"]["mac_seed"] != \
        "11111111-2222-4333-8444-555555555555"
    assert r["HVM_boot_params"] == {"order": "dc"}
    [vdi] = disks_of(x, vm)
    assert x.VDI.get_name_label(vdi) == "hand disk"
    expected = first + bytes(MIB) + third + bytes(MIB) + last
    assert disk_bytes(server, sid, vdi, tmp_path, size) == expected
    [vif] = x.VM.get_VIFs(vm)
    net = x.VIF.get_network(vif)
    # No network of that name or bridge here: a new one.
    assert x.network.get_name_label(net) == "a network nobody here has"
    assert x.VIF.get_MAC(vif) != "aa:bb:cc:dd:ee:01"
    destroy_vm_and_disks(x, vm)
    x.network.destroy(net)

    # XAPI's current form (xxhash), zstd, and the old form with its
    # table of checksums at the end.
    for body in (zstandard.ZstdCompressor().compress(hand_made_xva(
            size, [(0, first), (4, last)], checksum="xxhash")),
            hand_made_xva(size, [(0, first), (4, last)], vsn=1)):
        status, task, rec = _sdk_import(x, server, sid, body)
        assert rec["status"] == "success", rec["error_info"]
        [vm] = imported_vms(rec)
        [vdi] = disks_of(x, vm)
        assert disk_bytes(server, sid, vdi, tmp_path, size) == \
            first + bytes(3 * MIB) + last
        net = x.VIF.get_network(x.VM.get_VIFs(vm)[0])
        destroy_vm_and_disks(x, vm)
        x.network.destroy(net)


# --- refusals ------------------------------------------------------------------------

def assert_nothing_left(x, before, task=None):
    assert counts(x) == before
    names = [n for n in (x.network.get_name_label(r)
                         for r in x.network.get_all())
             if n == "a network nobody here has"]
    assert names == []
    if task is not None:
        assert x.task.get_status(task) == "failure"
    assert all(r["status"] != "pending" for r in
               x.task.get_all_records().values()
               if r["name_label"] in ("VM.import", "import"))


def test_refused_imports_leave_nothing_behind(x, server, sid, tmp_path):
    size = 3 * MIB
    chunk = random.Random(1).randbytes(MIB)
    before = counts(x)

    # A chunk whose checksum does not match.
    data = hand_made_xva(size, [(0, chunk), (2, chunk)], corrupt=2)
    status, task, rec = _sdk_import(x, server, sid, data)
    assert rec["error_info"][0] == "IMPORT_ERROR"
    assert "checksum failed" in rec["error_info"][1]
    assert_nothing_left(x, before, task)

    # The old form's table disagrees with the data.
    data = hand_made_xva(size, [(0, chunk), (2, chunk)], vsn=1, corrupt=2)
    status, task, rec = _sdk_import(x, server, sid, data)
    assert rec["error_info"][0] == "IMPORT_ERROR"
    assert_nothing_left(x, before, task)

    # An archive cut short: complete as a body, incomplete as an XVA.
    whole = hand_made_xva(size, [(0, chunk), (2, chunk)])
    status, task, rec = _sdk_import(x, server, sid, whole[:len(whole) // 2])
    assert rec["error_info"] == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert_nothing_left(x, before, task)

    # A client that goes away in the middle.
    task = x.task.create("import", "")
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port)
    conn.putrequest("PUT", "/import?session_id=%s&task_id=%s" % (sid, task))
    conn.putheader("Content-Length", str(len(whole)))
    conn.endheaders()
    conn.send(whole[:len(whole) * 3 // 4])
    time.sleep(0.5)
    conn.close()
    wait_until(lambda: x.task.get_status(task) != "pending",
               what="the abandoned import")
    assert x.task.get_error_info(task) == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert_nothing_left(x, before, task)

    # A cancelled import, half way.
    task = x.task.create("import", "")
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port)
    conn.putrequest("PUT", "/import?session_id=%s&task_id=%s" % (sid, task))
    conn.putheader("Content-Length", str(len(whole)))
    conn.endheaders()
    conn.send(whole[:len(whole) // 2])
    wait_until(lambda: "cancel" in x.task.get_allowed_operations(task),
               what="the import to be cancellable")
    x.task.cancel(task)
    wait_until(lambda: x.task.get_status(task) == "cancelled",
               what="the import to be cancelled")
    conn.close()
    assert x.task.get_error_info(task) == ["TASK_CANCELLED", task]
    assert counts(x) == before

    # Forced: the bad checksum is let through.
    data = hand_made_xva(size, [(0, chunk), (2, chunk)], corrupt=2)
    status, task, rec = _sdk_import(x, server, sid, data, force="true")
    assert rec["status"] == "success", rec["error_info"]
    [vm] = imported_vms(rec)
    destroy_vm_and_disks(x, vm)
    x.network.destroy([n for n in x.network.get_all() if
                       x.network.get_name_label(n) ==
                       "a network nobody here has"][0])

    # Not a tar at all; a tar without ova.xml first.
    status, task, rec = _sdk_import(x, server, sid, b"\x07" * 4096)
    assert rec["error_info"][0] == "IMPORT_ERROR"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo("Ref:3/00000000")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    status, task, rec = _sdk_import(x, server, sid, out.getvalue())
    assert rec["error_info"] == ["IMPORT_ERROR_UNEXPECTED_FILE", "ova.xml",
                                 "Ref:3/00000000"]
    assert_nothing_left(x, before, task)

    # A bad session: 401 before anything is read, nothing made.
    code, headers, body = curl("-T", "-", url(
        server, "/import", session_id="OpaqueRef:bogus"))
    assert code == 401
    assert 'Basic realm="VM.import"' in headers
    # A missing SR: the task fails with it.
    status, task, rec = _sdk_import(x, server, sid, whole,
                                    sr_id="OpaqueRef:nosuch")
    # (a 500, unless the close of a refused upload cut it off)
    assert status in (500, None)
    assert rec["error_info"] == ["HANDLE_INVALID", "SR", "OpaqueRef:nosuch"]
    # HTTP chunked encoding: XAPI's 403.
    task = x.task.create("import", "")
    with open(tmp_path / "x.xva", "wb") as f:
        f.write(whole)
    code, headers, _ = curl("-H", "Transfer-Encoding: chunked", "-T",
                            str(tmp_path / "x.xva"), url(
                                server, "/import", session_id=sid,
                                task_id=task))
    assert code == 403
    assert x.task.get_error_info(task) == [
        "IMPORT_ERROR_CANNOT_HANDLE_CHUNKED"]
    assert_nothing_left(x, before)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_an_import_onto_a_full_sr_leaves_nothing_behind(x, server, sid):
    """An SR on a filesystem of 1 MiB (a tmpfs) takes the VDI, thinly,
    then runs out of room as the chunks arrive: XAPI's VDI_IO_ERROR,
    and neither the VM nor its disk remain."""
    chunk = random.Random(2).randbytes(MIB)
    before = counts(x)
    mount = os.path.join(server.base, "tiny")
    os.makedirs(mount)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                    mount], check=True)
    try:
        tiny = x.SR.create(x.host.get_all()[0],
                           {"location": os.path.join(mount, "sr")}, "0",
                           "tiny", "", "file", "user", False, {})
        data = hand_made_xva(3 * MIB, [(0, chunk), (2, chunk)])
        _, task, rec = _sdk_import(x, server, sid, data, sr_id=tiny)
        assert rec["error_info"][0] == "VDI_IO_ERROR"
        assert "No space left on device" in " ".join(rec["error_info"])
        assert_nothing_left(x, before, task)
        assert x.SR.get_VDIs(tiny) == []
        for pbd in x.SR.get_PBDs(tiny):
            x.PBD.unplug(pbd)
        x.SR.destroy(tiny)
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def test_a_running_vm_is_not_exported(x, server, sid, source, tmp_path):
    vm = source["vm"]
    x.VM.start(vm, False, False)
    try:
        code, headers, body = curl("-o", str(tmp_path / "r.xva"), url(
            server, "/export", session_id=sid, ref=vm))
        assert code == 500
        task, rec = task_of(x, headers) if "task-id" in headers else \
            (None, None)
        tasks = [r for r in x.task.get_all_records().values()
                 if r["name_label"] == "VM.export"
                 and r["status"] == "failure"]
        assert tasks and tasks[-1]["error_info"] == [
            "VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
        assert x.VM.get_current_operations(vm) == {}
    finally:
        x.VM.hard_shutdown(vm)
    assert failure(x.VM.get_record, "OpaqueRef:nosuch")[0] == \
        "HANDLE_INVALID"


# --- metadata --------------------------------------------------------------------------

def test_metadata_export_and_import_relink_the_disks(x, server, sid, source,
                                                     tmp_path):
    vm = source["vm"]
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port)
    conn.request("GET", "/export_metadata?session_id=%s&uuid=%s"
                 % (sid, x.VM.get_uuid(vm)))
    resp = conn.getresponse()
    assert resp.status == 200
    assert int(resp.getheader("Content-Length")) > 0
    data = resp.read()
    conn.close()
    [(name, xml)] = [m for m in members_of(data)]
    assert name == "ova.xml"
    before = counts(x)
    x.VM.destroy(vm)           # the disks stay
    status, task, rec = _sdk_import_metadata(x, server, sid, data)
    assert rec["status"] == "success", rec["error_info"]
    [new] = imported_vms(rec)
    assert counts(x) == before
    assert disks_of(x, new) == source["vdis"]
    source["vm"] = new


def test_a_metadata_dry_run_checks_and_makes_nothing(x, server, sid, source):
    """dry_run=true: the import's checks run and their errors are the
    import's, but no object is made or replaced; a clean dry run
    answers no VM (only default templates it would reuse)."""
    vm = source["vm"]
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port)
    conn.request("GET", "/export_metadata?session_id=%s&uuid=%s"
                 % (sid, x.VM.get_uuid(vm)))
    data = conn.getresponse().read()
    conn.close()

    def everything():
        return {cls: sorted(getattr(x, cls).get_all())
                for cls in ("VM", "VDI", "VBD", "VIF", "network",
                            "VM_metrics", "VM_guest_metrics")}
    before = everything()
    record = x.VM.get_record(vm)
    _, _, rec = _sdk_import_metadata(x, server, sid, data, dry_run="true")
    assert rec["status"] == "success", rec["error_info"]
    assert imported_vms(rec) == []
    assert everything() == before
    # A restore meets the VM itself, no older than the export.
    _, _, rec = _sdk_import_metadata(x, server, sid, data, dry_run="true",
                                     restore="true")
    version = str(record["version"])
    assert rec["error_info"] == ["VM_TO_IMPORT_IS_NOT_NEWER_VERSION", vm,
                                 version, version]
    assert everything() == before
    assert x.VM.get_record(vm) == record


def test_metadata_with_snapshots_and_vhd_parents(x, server, sid, source):
    """export_metadata takes the VM's snapshots unless
    export_snapshots=false, and with include_vhd_parents=true the VDIs
    its disks' images grow from."""
    vm = source["vm"]
    snap = x.VM.snapshot(vm, "metadata point")
    try:
        def exported(**flags):
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port)
            conn.request("GET", "/export_metadata?" + urllib.parse.urlencode(
                dict(session_id=sid, uuid=x.VM.get_uuid(vm), **flags)))
            resp = conn.getresponse()
            assert resp.status == 200
            [(_, xml)] = members_of(resp.read())
            conn.close()
            found = {}
            for obj in decode_value(xml)["objects"]:
                found.setdefault(obj["class"], []).append(obj["snapshot"])
            return found
        both = {v["uuid"] for v in exported()["VM"]}
        assert both == {x.VM.get_uuid(vm), x.VM.get_uuid(snap)}
        alone = exported(export_snapshots="false")
        assert [v["uuid"] for v in alone["VM"]] == [x.VM.get_uuid(vm)]
        plain = exported(export_snapshots="false")["VDI"]
        parents = {v["sm_config"]["vhd-parent"] for v in plain
                   if "vhd-parent" in v["sm_config"]}
        known = {p for p in parents if p in {
            x.VDI.get_uuid(r) for r in x.VDI.get_all()}}
        # (the VM's own disks leave them out)
        assert known and not known & {v["uuid"] for v in plain}, parents
        with_parents = {v["uuid"] for v in exported(
            export_snapshots="false", include_vhd_parents="true")["VDI"]}
        assert with_parents == {v["uuid"] for v in plain} | known
    finally:
        for vbd in x.VM.get_VBDs(snap):
            vdi = x.VBD.get_VDI(vbd)
            x.VBD.destroy(vbd)
            x.VDI.destroy(vdi)
        x.VM.destroy(snap)


def _sdk_import_metadata(x, server, sid, data, **query):
    task = x.task.create("import", "")
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port)
    conn.request("PUT", "/import_metadata?" + urllib.parse.urlencode(
        dict(session_id=sid, task_id=task, **query)), body=data)
    # The client goes once it has the answer's head: the body is all
    # sent, so the import goes on.
    status = conn.getresponse().status
    conn.close()
    wait_until(lambda: x.task.get_status(task) != "pending",
               what="the metadata import")
    return status, task, x.task.get_record(task)


def export_then_import(x, server, sid, vm, disks, **query):
    """The VM an export of ``vm`` streaming ``disks`` disks imports as."""
    data = _sdk_export(server, sid, vm, None, **query)
    names = [n for n, _ in members_of(data)]
    assert len({n.split("/")[0] for n in names[1:]}) == disks
    status, task, rec = _sdk_import(x, server, sid, data)
    assert rec["status"] == "success", rec["error_info"]
    [new] = imported_vms(rec)
    return new


def test_a_cd_stays_behind_and_a_suspended_vm_keeps_its_image(
        x, server, sid, source, tmp_path):
    vm = source["vm"]
    isos = [v for v, r in x.VDI.get_all_records().items()
            if x.SR.get_content_type(r["SR"]) == "iso"]
    assert isos
    x.VBD.create({
        "VM": vm, "VDI": isos[0], "userdevice": "3", "bootable": False,
        "mode": "RO", "type": "CD", "unpluggable": True, "empty": False,
        "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    size = int(x.VDI.get_virtual_size(image))
    saved = disk_bytes(server, sid, image, tmp_path, size)
    before = counts(x)
    # The two disks go; neither the ISO nor (power state not kept) the
    # suspend image.
    new = export_then_import(x, server, sid, vm, 2)
    # Without preserve_power_state the copy is Halted, with no image.
    assert x.VM.get_power_state(new) == "Halted"
    cds = [r for r in x.VBD.get_all_records_where(
        'field "VM"="%s"' % new).values() if r["type"] == "CD"]
    assert [r["VDI"] for r in cds] == [isos[0]]
    destroy_vm_and_disks(x, new)

    new = export_then_import(x, server, sid, vm, 3,
                             preserve_power_state="true")
    assert x.VM.get_power_state(new) == "Suspended"
    new_image = x.VM.get_suspend_VDI(new)
    assert new_image != image
    assert disk_bytes(server, sid, new_image, tmp_path, size) == saved
    assert counts(x) == (before[0] + 1, before[1] + 3)
    x.VM.resume(new, False, False)
    x.VM.hard_shutdown(new)
    destroy_vm_and_disks(x, new)
    x.VM.hard_shutdown(vm)

"""
Changed-block tracking against a real server, in Xen Orchestra's delta
backup flow: enable_cbt, a snapshot, writes, a second snapshot,
list_changed_blocks between them (XAPI's base64 bitmap of 64 KiB
blocks), the changed blocks read over NBD and applied onto the first
backup to rebuild the second, data_destroy leaving the log behind, the
history kept whole when a snapshot between is deleted and across a
restart, and XAPI's refusals.
"""

import base64
import os
import struct
import time

import pytest

from tests.support.api import failure
from tests.support.servers import RunningServer, free_port
from tests.test_nbd import nbd_connect, nbd_request, purpose
from tests.test_vm_lifecycle import new_vm
from txxenops.backends.simwrites import working_set
from tests.test_vdi_transfer import (
    api, curl, export, import_file, make_raw, new_vdi, same, task_of, url,
    x)

# The session fixtures of the transfer tests, on this module's server.
FIXTURES = (api, x)

MIB = 1 << 20
BLOCK = 64 << 10
SIZE = 16 * MIB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("cbt"))
    s = RunningServer(os.path.join(base, "data"), nbd_port=free_port())
    s.start()
    yield s
    s.stop()


def write_blocks(server, x, sid, vdi, writes):
    """Write (offset, bytes) pieces into the VDI with vhd-tool's chunked
    body, so only they are written."""
    body = b"".join(struct.pack("<QI", off, len(data)) + data
                    for off, data in writes) + struct.pack("<QI", 0, 0)
    path = os.path.join(server.data_dir, "..", "chunks")
    with open(path, "wb") as f:
        f.write(body)
    code, headers, _ = curl("-T", path, url(
        server, "/import_raw_vdi", session_id=sid, vdi=vdi, chunked="true"))
    assert code == 200
    return task_of(x, headers)[1]


def changed(x, a, b):
    """Indices of the blocks list_changed_blocks reports set."""
    bits = base64.b64decode(x.VDI.list_changed_blocks(a, b))
    assert len(bits) == SIZE // BLOCK // 8
    return [i for i in range(len(bits) * 8)
            if bits[i >> 3] & (0x80 >> (i & 7))]


@pytest.fixture
def tracked(x, api, server, tmp_path):
    vdi = new_vdi(x, SIZE, "tracked")
    src = make_raw(tmp_path / "full.raw", SIZE, [(0, SIZE)], seed=11)
    assert import_file(server, api._session, vdi, src)[0] == 200
    x.VDI.enable_cbt(vdi)
    return vdi, src


def test_delta_backup_flow(x, api, server, tracked, tmp_path):
    vdi, src = tracked
    sid = api._session
    assert x.VDI.get_cbt_enabled(vdi)
    first = x.VDI.snapshot(vdi, {})
    assert x.VDI.get_cbt_enabled(first)
    backup = export(server, sid, first, tmp_path / "backup1.raw")[0]
    assert same(backup, src)
    # Three writes: inside one block, across two, at the very end.
    rec = write_blocks(server, x, sid, vdi, [
        (3 * BLOCK + 100, b"a" * 10), (40 * BLOCK - 5, b"b" * 10),
        (SIZE - 512, b"c" * 512)])
    assert rec["status"] == "success", rec["error_info"]
    second = x.VDI.snapshot(vdi, {})
    expected = [3, 39, 40, SIZE // BLOCK - 1]
    assert changed(x, first, second) == expected
    assert changed(x, second, vdi) == []
    assert changed(x, first, vdi) == expected
    assert changed(x, first, first) == []
    # Read just those blocks over NBD and patch the first backup.
    net = x.network.get_all()[0]
    purpose(x, net, "insecure_nbd")
    try:
        [record] = x.VDI.get_nbd_info(second)
        with nbd_connect(record) as sock, open(backup, "r+b") as f:
            for block in expected:
                error, data = nbd_request(sock, 0, block * BLOCK, BLOCK)
                assert error == 0
                f.seek(block * BLOCK)
                f.write(data)
    finally:
        purpose(x, net, None)
    assert same(backup, export(server, sid, second,
                               tmp_path / "second.raw")[0])
    # The older snapshot is reduced to its log: still a point to list
    # from, no longer data.
    assert "vhd-parent" in x.VDI.get_sm_config(first)
    x.VDI.data_destroy(first)
    assert x.VDI.get_type(first) == "cbt_metadata"
    # It no longer holds on to the data it shared.
    assert "vhd-parent" not in x.VDI.get_sm_config(first)
    assert changed(x, first, second) == expected
    assert failure(x.VDI.get_nbd_info, first) == [
        "VDI_INCOMPATIBLE_TYPE", first, "cbt_metadata"]
    assert failure(x.VDI.snapshot, first, {})[0] == "VDI_INCOMPATIBLE_TYPE"
    assert failure(x.VDI.clone, first, {})[0] == "VDI_INCOMPATIBLE_TYPE"


def test_deleting_a_point_between_keeps_the_history(x, api, server,
                                                   tracked):
    vdi, _ = tracked
    sid = api._session
    s1 = x.VDI.snapshot(vdi, {})
    write_blocks(server, x, sid, vdi, [(5 * BLOCK, b"x" * BLOCK)])
    s2 = x.VDI.snapshot(vdi, {})
    write_blocks(server, x, sid, vdi, [(9 * BLOCK, b"y")])
    s3 = x.VDI.snapshot(vdi, {})
    assert changed(x, s1, s2) == [5] and changed(x, s2, s3) == [9]
    x.VDI.destroy(s2)
    assert changed(x, s1, s3) == [5, 9]
    # Backwards is no interval: a storage error, not an internal one.
    assert failure(x.VDI.list_changed_blocks, s3, s1)[0].startswith(
        "SR_BACKEND_FAILURE")


def test_a_writer_the_log_cannot_follow_marks_every_block(x, tracked):
    """VDI.copy into a tracked VDI writes past its log: every block
    counts as changed, so the next incremental backup is a whole one."""
    vdi, _ = tracked
    s1 = x.VDI.snapshot(vdi, {})
    source = new_vdi(x, SIZE, "copied in")
    x.VDI.copy(source, x.VDI.get_SR(vdi), "OpaqueRef:NULL", vdi)
    assert changed(x, s1, vdi) == list(range(SIZE // BLOCK))


def test_refusals(x, api, server, tracked):
    vdi, _ = tracked
    plain = new_vdi(x, SIZE, "untracked")
    snap = x.VDI.snapshot(plain, {})
    assert failure(x.VDI.list_changed_blocks, snap, plain) == [
        "VDI_NO_CBT_METADATA", snap]
    assert failure(x.VDI.data_destroy, plain) == [
        "OPERATION_NOT_ALLOWED", "VDI is not a snapshot: " + plain]
    assert failure(x.VDI.data_destroy, snap) == ["VDI_NO_CBT_METADATA",
                                                 snap]
    tracked_snap = x.VDI.snapshot(vdi, {})
    assert failure(x.VDI.enable_cbt, tracked_snap) == [
        "OPERATION_NOT_ALLOWED", "VDI is a snapshot: " + tracked_snap]
    x.VDI.disable_cbt(vdi)
    x.VDI.disable_cbt(vdi)
    assert not x.VDI.get_cbt_enabled(vdi)
    assert failure(x.VDI.list_changed_blocks, tracked_snap, vdi) == [
        "VDI_NO_CBT_METADATA", vdi]


def test_a_vm_marks_the_blocks_its_guest_writes(x, api, server, tracked):
    """The simulated guest writes at known addresses (a working set of
    blocks of its own, txxenops.backends.simwrites): the log has those
    and no others, split at a snapshot taken while it runs."""
    vdi, _ = tracked
    s1 = x.VDI.snapshot(vdi, {})
    vm, vbd = writer(x, vdi)
    x.VM.start(vm, False, False)
    ring = set(working_set(x.VM.get_uuid(vm), x.VBD.get_device(vbd), SIZE))
    assert 0 < len(ring) < SIZE // BLOCK
    time.sleep(0.6)
    s2 = x.VDI.snapshot(vdi, {})
    time.sleep(0.6)
    x.VM.hard_shutdown(vm)
    before, after = set(changed(x, s1, s2)), set(changed(x, s2, vdi))
    assert before and after and before | after <= ring
    assert set(changed(x, s1, vdi)) == before | after
    # Uploads, which mark what they write, leave a fresh interval exact.
    s3 = x.VDI.snapshot(vdi, {})
    write_blocks(server, x, api._session, vdi,
                 [(2 * BLOCK, b"u")])
    assert changed(x, s3, vdi) == [2]


def writer(x, vdi, load="1.0"):
    """A busy VM with ``vdi`` as its disk: (vm, vbd)."""
    vm = new_vm(x, "cbt writer", 64 * MIB,
                other={"simulator-cpu-load": load})
    vbd = x.VBD.create({
        "VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True,
        "mode": "RW", "type": "Disk", "unpluggable": False, "empty": False,
        "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})
    return vm, vbd


def test_a_log_started_under_a_running_guest(x):
    """The guest's writes from the log's start on are in it."""
    vdi = new_vdi(x, SIZE, "tracked late")
    vm, vbd = writer(x, vdi)
    x.VM.start(vm, False, False)
    x.VDI.enable_cbt(vdi)
    s1 = x.VDI.snapshot(vdi, {})
    time.sleep(0.5)
    x.VM.hard_shutdown(vm)
    ring = set(working_set(x.VM.get_uuid(vm), x.VBD.get_device(vbd), SIZE))
    written = set(changed(x, s1, vdi))
    assert written and written <= ring


def test_a_log_disabled_under_a_running_guest(x, tracked):
    """The guest's writes have nowhere to go: its disk is let go all the
    same (it can be destroyed)."""
    vdi, _ = tracked
    vm, _ = writer(x, vdi)
    x.VM.start(vm, False, False)
    time.sleep(0.5)
    x.VDI.disable_cbt(vdi)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)
    assert vdi not in x.VDI.get_all()


def test_logs_survive_a_restart(x, api, server, tracked):
    """An upload's blocks, and a running guest's: the toolstack killed
    with -9 between two snapshots, the guest writing on.  Each interval
    holds just what the guest wrote in it: the next stretch of its
    working set (the block written across a snapshot in both), neither
    the whole disk nor blocks of the interval before."""
    vdi, _ = tracked
    sid = api._session
    s1 = x.VDI.snapshot(vdi, {})
    write_blocks(server, x, sid, vdi, [(7 * BLOCK, b"z" * 3)])
    busy = new_vdi(x, SIZE, "tracked busy")
    x.VDI.enable_cbt(busy)
    b1 = x.VDI.snapshot(busy, {})
    vm, vbd = writer(x, busy, load="0.4")
    x.VM.start(vm, False, False)
    ring = working_set(x.VM.get_uuid(vm), x.VBD.get_device(vbd), SIZE)
    time.sleep(1.0)
    b2 = x.VDI.snapshot(busy, {})
    server.kill()
    server.start()
    session = server.session(https=False)
    try:
        y = session.xenapi
        assert y.VDI.get_cbt_enabled(vdi)
        assert changed(y, s1, vdi) == [7]
        assert y.VM.get_power_state(vm) == "Running"
        time.sleep(0.5)
        b3 = y.VDI.snapshot(busy, {})
        y.VM.hard_shutdown(vm)
        before, after = set(changed(y, b1, b2)), set(changed(y, b2, b3))
        a = len(before)
        assert 0 < a and before == set(ring[:a])
        start = a - 1 if ring[a - 1] in after else a
        assert len(after) > 1 and start + len(after) < len(ring)
        assert after == set(ring[start:start + len(after)])
    finally:
        session.xenapi.session.logout()

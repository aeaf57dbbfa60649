"""
The storage drivers against real qemu-img images in temporary directories:
file SR life cycle, VDI operations, snapshot trees and GC, space checks,
the ISO library, activation locks on a shared SR, and the transfer
helpers the HTTP handlers use.
"""

import io
import json
import os
import random
import shutil
import struct
import subprocess

import pytest
from zope.interface.verify import verifyObject

from txstorage import AttachInfo, transfer, vhd
from txstorage.drivers import (DRIVERS, FileSRDriver, ISOSRDriver,
                               SharedFileSRDriver)
from txstorage.errors import (SRFull, SRNotEmpty, StorageError,
                              Unimplemented, VDIInUse, VDIMissing)
from txstorage.interfaces import IChangedBlockTracking, ISRDriver
from txstorage.types import probe_xml

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img is not installed")

MiB = 1 << 20
SR = "0e8c0f4e-2d5b-4b6e-8a51-3f1f5c2a9d11"


@pytest.fixture
def sr(tmp_path):
    d = FileSRDriver(host="host-a")
    dc = {"location": str(tmp_path / "sr")}
    d.sr_create(SR, dc)
    d.sr_attach(SR, dc)
    yield d, dc
    for sr_ in list(d._srs.values()):
        sr_.attached.clear()


def read(d, vdi, offset, length):
    ai = d.vdi_attach(SR, vdi, False)
    try:
        with transfer.open_raw_reader(ai) as r:
            return r.pread(offset, length)
    finally:
        d.vdi_detach(SR, vdi)


def write(d, vdi, offset, data):
    ai = d.vdi_attach(SR, vdi, True)
    try:
        with transfer.open_raw_writer(ai) as w:
            w.pwrite(offset, data)
    finally:
        d.vdi_detach(SR, vdi)


def test_drivers_provide_the_interface():
    for cls in DRIVERS.values():
        drv = cls()
        assert verifyObject(ISRDriver, drv)
        if "VDI_CONFIG_CBT" in drv.capabilities:
            assert verifyObject(IChangedBlockTracking, drv)
        assert drv.required_api_version == "1.0"
        assert set(drv.features) == {c.split("/")[0]
                                     for c in drv.capabilities}
    f = FileSRDriver()
    assert f.sm_type == "file" and "location" in f.configuration
    assert {"SR_PROBE", "SR_UPDATE", "VDI_SNAPSHOT", "VDI_CLONE",
            "VDI_RESIZE"} <= set(f.capabilities)
    assert ISOSRDriver().content_type == "iso"
    assert SharedFileSRDriver().shared is True


def test_sr_create_attach_probe_update(sr, tmp_path):
    d, dc = sr
    assert os.path.isdir(dc["location"])
    with pytest.raises(StorageError) as e:
        d.sr_create("other", dc)                       # not empty
    assert e.value.xapi_code == "SR_BACKEND_FAILURE_42"
    with pytest.raises(StorageError) as e:
        d.sr_create("other", {})
    assert e.value.code == 94
    found = d.sr_probe(dc)
    assert [s.uuid for s in found] == [SR]
    assert "<UUID>%s</UUID>" % SR in probe_xml(found)
    assert d.sr_probe({"location": str(tmp_path / "nothing")}) == []
    info = d.sr_update(SR)
    st = os.statvfs(dc["location"])
    assert info.physical_size == st.f_blocks * st.f_frsize
    assert 0 < info.physical_utilisation <= info.physical_size
    assert info.virtual_allocation == 0
    d.sr_detach(SR)
    with pytest.raises(StorageError) as e:
        d.sr_scan(SR)
    assert e.value.code == 47
    d.sr_attach(SR, dc)
    with pytest.raises(StorageError):
        d.sr_attach("another-uuid", dc)               # holds SR, not that


def test_vdi_create_resize_delete(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 10 * MiB + 1, name_label="data")
    assert v.virtual_size == 12 * MiB                  # 2 MiB rounding
    assert v.sm_config["image-format"] == "qcow2"
    assert os.path.exists(os.path.join(dc["location"], v.uuid + ".qcow2"))
    raw = d.vdi_create(SR, "raw-disk", 4 * MiB, sm_config={"type": "raw"})
    assert raw.sm_config["type"] == "raw"
    with pytest.raises(StorageError) as e:
        d.vdi_create(SR, v.uuid, MiB)
    assert e.value.code == 43
    scanned = {i.uuid: i for i in d.sr_scan(SR)}
    assert set(scanned) == {v.uuid, "raw-disk"}
    assert scanned[v.uuid].name_label == "data"
    assert d.sr_update(SR).virtual_allocation == 16 * MiB

    write(d, v.uuid, 11 * MiB, b"tail")
    r = d.vdi_resize(SR, v.uuid, 20 * MiB)
    assert r.virtual_size == 20 * MiB
    assert read(d, v.uuid, 11 * MiB, 4) == b"tail"
    with pytest.raises(StorageError) as e:
        d.vdi_resize(SR, v.uuid, 4 * MiB)
    assert e.value.code == 79                          # no shrinking
    assert d.vdi_resize(SR, "raw-disk", 6 * MiB).virtual_size == 6 * MiB

    with pytest.raises(VDIMissing) as e:
        d.vdi_attach(SR, "no-such-vdi", False)
    assert e.value.xapi_error("OpaqueRef:s", "OpaqueRef:v") == (
        "VDI_MISSING", ["OpaqueRef:s", "OpaqueRef:v"])
    d.vdi_activate(SR, v.uuid, True)
    with pytest.raises(VDIInUse):
        d.vdi_delete(SR, v.uuid)
    d.vdi_deactivate(SR, v.uuid)
    d.vdi_delete(SR, v.uuid)
    d.vdi_delete(SR, v.uuid)                           # idempotent
    with pytest.raises(SRNotEmpty):
        d.sr_delete(SR, dc)
    d.vdi_delete(SR, "raw-disk")
    assert d.sr_scan(SR) == []
    d.sr_delete(SR, dc)
    assert not os.path.exists(dc["location"])


def test_snapshot_write_clone(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 16 * MiB)
    write(d, v.uuid, 0, b"A" * MiB)
    snap = d.vdi_snapshot(SR, v.uuid)
    assert snap.is_snapshot and snap.snapshot_of == v.uuid
    base = snap.parent
    assert base and snap.sm_config["vhd-parent"] == base
    infos = {i.uuid: i for i in d.sr_scan(SR)}
    assert infos[v.uuid].parent == base
    assert infos[base].hidden and infos[base].read_only
    assert not infos[base].managed
    with pytest.raises(StorageError):
        d.vdi_attach(SR, base, True)                   # bases are RO

    write(d, v.uuid, 0, b"B" * MiB)                    # VM keeps writing
    assert read(d, snap.uuid, 0, 4) == b"AAAA"
    assert read(d, v.uuid, 0, 4) == b"BBBB"

    clone = d.vdi_clone(SR, snap.uuid)
    assert not clone.is_snapshot and not clone.read_only
    write(d, clone.uuid, 4 * MiB, b"C" * 10)
    assert read(d, clone.uuid, 0, 4) == b"AAAA"
    assert read(d, clone.uuid, 4 * MiB, 10) == b"C" * 10
    assert read(d, snap.uuid, 4 * MiB, 10) == bytes(10)
    # The snapshot became a hidden base too; the tree is now 2 deep.
    infos = {i.uuid: i for i in d.sr_scan(SR)}
    assert infos[clone.uuid].parent == infos[snap.uuid].parent
    assert infos[infos[snap.uuid].parent].parent == base


def _allocated(directory):
    """Bytes the files below ``directory`` occupy on disk."""
    total = 0
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_gc_coalesces_and_returns_space(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 32 * MiB)
    data = random.Random(1).randbytes(8 * MiB)
    write(d, v.uuid, 0, data)
    snap = d.vdi_snapshot(SR, v.uuid)
    write(d, v.uuid, 0, data[::-1])                    # rewrite everything
    # The SR's own files: the filesystem's figures move with whatever else
    # the machine is doing.
    used = _allocated(dc["location"])
    d.vdi_delete(SR, snap.uuid)
    # Until the GC runs the garbage still counts, as upstream.
    assert sum(i.physical_utilisation for i in d.sr_scan(SR)) >= 16 * MiB
    result = d.sr_gc(SR)
    assert result.coalesced == [(snap.parent, v.uuid)]
    assert result.reclaimed >= 7 * MiB
    infos = d.sr_scan(SR)
    assert [i.uuid for i in infos] == [v.uuid] and infos[0].parent is None
    assert read(d, v.uuid, 0, 8 * MiB) == data[::-1]
    assert _allocated(dc["location"]) < used
    assert d.sr_gc(SR).removed == []                   # nothing left
    # Leftovers of a crash are swept too.
    stray = os.path.join(dc["location"], "0000dead.meta")
    old_tmp = os.path.join(dc["location"], ".x.12345678.qcow2.tmp")
    for p in (stray, old_tmp):
        open(p, "w").close()
    os.utime(old_tmp, (0, 0))
    d.sr_gc(SR)
    assert not os.path.exists(stray) and not os.path.exists(old_tmp)
    # A small child over a big base: the child is pushed up instead.
    snap = d.vdi_snapshot(SR, v.uuid)
    write(d, v.uuid, 20 * MiB, b"small")
    d.vdi_delete(SR, snap.uuid)
    assert d.sr_gc(SR).coalesced == [(snap.parent, v.uuid)]
    assert [i.uuid for i in d.sr_scan(SR)] == [v.uuid]
    assert read(d, v.uuid, 0, 8 * MiB) == data[::-1]
    assert read(d, v.uuid, 20 * MiB, 5) == b"small"


def test_gc_keeps_bases_in_use_and_pulls_small_parents(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 8 * MiB)
    write(d, v.uuid, 0, b"p" * MiB)
    s1 = d.vdi_snapshot(SR, v.uuid)
    write(d, v.uuid, 2 * MiB, b"c" * (4 * MiB))        # child bigger
    d.vdi_activate(SR, v.uuid, True)
    d.vdi_delete(SR, s1.uuid)
    r = d.sr_gc(SR)
    assert r.coalesced == [] and r.skipped             # leaf is active
    d.vdi_deactivate(SR, v.uuid)
    r = d.sr_gc(SR)
    assert r.coalesced == [(s1.parent, v.uuid)]
    assert read(d, v.uuid, 0, 2) == b"pp"
    assert read(d, v.uuid, 2 * MiB, 2) == b"cc"


def test_sr_full(tmp_path):
    d = FileSRDriver()
    dc = {"location": str(tmp_path / "small")}
    d.sr_create(SR, dc, physical_size=64 * MiB)
    d.sr_attach(SR, dc)
    assert d.sr_update(SR).physical_size == 64 * MiB
    d.vdi_create(SR, None, 40 * MiB)
    with pytest.raises(SRFull) as e:
        d.vdi_create(SR, None, 100 * MiB)
    err = e.value
    assert err.code == 44 and err.needed == 100 * MiB
    assert 0 < err.available <= 64 * MiB
    assert err.xapi_error() == ("SR_FULL", [str(100 * MiB),
                                            str(err.available)])
    assert err.xapi_code == "SR_BACKEND_FAILURE_44"
    # A filesystem-sized SR: more than the disk can hold.
    d2 = FileSRDriver()
    dc2 = {"location": str(tmp_path / "big")}
    d2.sr_create("sr2", dc2)
    d2.sr_attach("sr2", dc2)
    with pytest.raises(SRFull):
        d2.vdi_create("sr2", None, 1 << 60)
    v = d2.vdi_create("sr2", None, MiB)
    with pytest.raises(SRFull):
        d2.vdi_resize("sr2", v.uuid, 1 << 60)
    # Thin provisioning only needs room for the metadata.
    d3 = FileSRDriver(thin_provisioning=True)
    d3.sr_attach(SR, dc)
    assert "THIN_PROVISIONING" in d3.capabilities
    d3.vdi_create(SR, None, 100 * MiB)


def test_iso_sr(tmp_path):
    lib = tmp_path / "isos"
    lib.mkdir()
    (lib / "debian.iso").write_bytes(b"\x01" * 4096)
    (lib / "tools.IMG").write_bytes(b"\x02" * 1024)
    (lib / "readme.txt").write_text("not an image")
    (lib / "dir.iso").mkdir()
    d = ISOSRDriver()
    dc = {"location": str(lib)}
    d.sr_attach(SR, dc)
    vdis = {v.location: v for v in d.sr_scan(SR)}
    assert set(vdis) == {"debian.iso", "tools.IMG"}
    deb = vdis["debian.iso"]
    assert deb.read_only and deb.virtual_size == 4096
    assert deb.name_label == "debian.iso"
    assert deb.uuid == ISOSRDriver.vdi_uuid_of(SR, "debian.iso")
    ai = d.vdi_attach(SR, deb.uuid, False)
    assert ai.format == "raw" and ai.read_only
    assert open(ai.path, "rb").read(2) == b"\x01\x01"
    assert d.vdi_attach(SR, "tools.IMG", False).virtual_size == 1024
    with pytest.raises(StorageError):
        d.vdi_attach(SR, deb.uuid, True)
    with pytest.raises(Unimplemented):
        d.vdi_create(SR, None, MiB)
    with pytest.raises(VDIMissing):
        d.vdi_attach(SR, "gone.iso", False)
    (lib / "new.iso").write_bytes(b"x")
    assert len(d.sr_scan(SR)) == 3
    info = d.sr_update(SR)
    assert info.virtual_allocation == info.physical_size
    with open(ai.path, "rb") as f:
        assert transfer.open_raw_reader(ai).pread(0, 4096) == f.read()


def test_shared_sr_activation_locks(tmp_path):
    mount = tmp_path / "nfs"
    mount.mkdir()
    dc = {"location": str(mount)}
    a = SharedFileSRDriver(host="host-a")
    b = SharedFileSRDriver(host="host-b")
    a.sr_create(SR, dc)
    assert os.path.isdir(mount / SR)                   # per-SR subdir
    a.sr_attach(SR, dc)
    b.sr_attach(SR, dc)
    assert [s.uuid for s in b.sr_probe(dc)] == [SR]
    v = a.vdi_create(SR, None, 4 * MiB)
    assert [i.uuid for i in b.sr_scan(SR)] == [v.uuid]

    a.vdi_activate(SR, v.uuid, True)
    holders = json.load(open(mount / SR / (v.uuid + ".active")))
    assert holders == {"host-a": "RW"}
    with pytest.raises(VDIInUse) as e:
        b.vdi_activate(SR, v.uuid, True)
    assert "host-a" in e.value.message
    with pytest.raises(VDIInUse):
        b.vdi_activate(SR, v.uuid, False)              # not while RW
    a.vdi_activate(SR, v.uuid, True)                   # idempotent
    a.vdi_deactivate(SR, v.uuid)
    b.vdi_activate(SR, v.uuid, True)
    b.vdi_deactivate(SR, v.uuid)
    a.vdi_activate(SR, v.uuid, False)
    b.vdi_activate(SR, v.uuid, False)                  # RO + RO is fine
    with pytest.raises(VDIInUse):
        a.vdi_activate(SR, v.uuid, True)
    with pytest.raises(VDIInUse):
        b.vdi_delete(SR, v.uuid)
    a.vdi_deactivate(SR, v.uuid)
    b.vdi_deactivate(SR, v.uuid)
    assert not os.path.exists(mount / SR / (v.uuid + ".active"))
    # Host A restarts: its activations are void.
    a.vdi_activate(SR, v.uuid, True)
    assert a.sr_reset_host(SR) == [v.uuid]
    b.vdi_activate(SR, v.uuid, True)
    b.vdi_deactivate(SR, v.uuid)
    b.vdi_delete(SR, v.uuid)
    a.sr_delete(SR, dc)
    assert not os.path.exists(mount / SR)


def test_generate_config_and_introduce(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 2 * MiB)
    cfg = d.vdi_generate_config(SR, v.uuid)
    other = FileSRDriver()
    ai = other.vdi_attach_from_config(cfg)
    assert ai.path.endswith(v.uuid + ".qcow2") and not ai.read_only
    # An image copied in by hand is adopted under a new uuid.
    src = os.path.join(dc["location"], "dropped.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", src, "6M"],
                   check=True)
    got = d.vdi_introduce(SR, "4b5f8a8e-0000-4000-8000-000000000001",
                          "dropped.qcow2")
    assert got.uuid == "4b5f8a8e-0000-4000-8000-000000000001"
    assert got.virtual_size == 6 * MiB
    with pytest.raises(VDIMissing):
        d.vdi_introduce(SR, None, "absent.qcow2")


# -- transfer ----------------------------------------------------------------

def test_raw_import_export_and_truncation(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 8 * MiB)
    ai = d.vdi_attach(SR, v.uuid, True)
    body = bytearray(8 * MiB)
    body[MiB:2 * MiB] = random.Random(2).randbytes(MiB)
    body[7 * MiB:7 * MiB + 5] = b"hello"
    chunks = [bytes(body[i:i + 300000]) for i in range(0, len(body),
                                                       300000)]
    assert transfer.import_raw(ai, chunks, len(body)) == len(body)
    assert b"".join(transfer.export_raw(ai)) == bytes(body)
    # Only the data was stored: zero runs stay holes.
    assert transfer.allocated_extents(ai) == [(MiB, MiB),
                                              (7 * MiB, 64 << 10)]
    # A truncated upload leaves the previous content in place.
    with pytest.raises(StorageError, match="truncated"):
        transfer.import_raw(ai, [b"\xff" * MiB], 8 * MiB)
    assert read(d, v.uuid, 7 * MiB, 5) == b"hello"
    assert read(d, v.uuid, 0, 4) == bytes(4)
    # An upload over existing data replaces zeros too.
    transfer.import_raw(ai, [bytes(8 * MiB)], 8 * MiB)
    assert read(d, v.uuid, 7 * MiB, 5) == bytes(5)
    assert not [n for n in os.listdir(dc["location"])
                if n.startswith(".import")]
    with pytest.raises(StorageError):
        transfer.import_raw(ai, [bytes(9 * MiB)])      # beyond the end
    d.vdi_detach(SR, v.uuid)


def test_vhd_import_and_corrupt_upload(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 6 * MiB)
    ai = d.vdi_attach(SR, v.uuid, True)
    disk = bytearray(6 * MiB)
    disk[2 * MiB:3 * MiB] = b"v" * MiB
    data = b"".join(vhd.stream_vhd(
        6 * MiB, lambda i: bytes(disk[i * 2 * MiB:(i + 1) * 2 * MiB])))
    pieces = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    transfer.import_vhd(ai, pieces)
    assert read(d, v.uuid, 2 * MiB, 4) == b"vvvv"
    # Corrupt and truncated uploads leave the VDI as it was.
    bad = bytearray(data)
    bad[60] ^= 1
    with pytest.raises(vhd.VHDError):
        transfer.import_vhd(ai, [bytes(bad)])
    with pytest.raises(vhd.VHDError, match="truncated"):
        transfer.import_vhd(ai, pieces[:-3])
    assert read(d, v.uuid, 2 * MiB, 4) == b"vvvv"
    too_big = b"".join(vhd.stream_vhd(16 * MiB, lambda i: b"x" * 2 * MiB,
                                      plan=False, candidates=[0]))
    with pytest.raises(StorageError, match="larger"):
        transfer.import_vhd(ai, [too_big])
    d.vdi_detach(SR, v.uuid)


def test_vhd_export_with_base(sr, tmp_path):
    d, dc = sr
    v = d.vdi_create(SR, None, 12 * MiB)
    write(d, v.uuid, 0, b"1" * (5 * MiB))
    snap = d.vdi_snapshot(SR, v.uuid)
    write(d, v.uuid, 3 * MiB, b"2" * 100)              # block 1
    write(d, v.uuid, 4 * MiB, bytes(MiB))              # block 2 -> zeros
    write(d, v.uuid, 10 * MiB, b"3")                   # block 5
    ai = d.vdi_attach(SR, v.uuid, False)
    sai = d.vdi_attach(SR, snap.uuid, False)
    assert transfer.candidate_blocks(ai, sai) == [1, 2, 5]
    full = b"".join(transfer.export_vhd(ai))
    diff = b"".join(transfer.export_vhd(ai, base=sai))
    with transfer.open_raw_reader(ai) as r:
        want = r.pread(0, 12 * MiB)
    with transfer.open_raw_reader(sai) as r:
        base = r.pread(0, 12 * MiB)
    got = bytearray(12 * MiB)
    for off, data in vhd.iter_vhd(_bytes_io(full)):
        got[off:off + len(data)] = data
    assert bytes(got) == want
    got = bytearray(base)
    for off, data in vhd.iter_vhd(_bytes_io(diff)):
        got[off:off + len(data)] = data
    assert bytes(got) == want
    assert _blocks(full) == [0, 1, 5]                  # block 2: zeros
    assert _blocks(diff) == [1, 2, 5]                  # 2 became zeros
    # qemu agrees with the full export.
    out = tmp_path / "full.vhd"
    out.write_bytes(full)
    back = tmp_path / "full.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw",
                    str(out), str(back)], check=True)
    assert back.read_bytes() == want
    # Importing the differential onto a copy of the snapshot gives v.
    c = d.vdi_clone(SR, snap.uuid)
    cai = d.vdi_attach(SR, c.uuid, True)
    transfer.import_vhd(cai, [diff])
    assert read(d, c.uuid, 0, 12 * MiB) == want


def test_chunked_import(sr):
    d, dc = sr
    v = d.vdi_create(SR, None, 4 * MiB)
    ai = d.vdi_attach(SR, v.uuid, True)
    body = (struct.pack("<QI", MiB, 5) + b"abcde"
            + struct.pack("<QI", 3 * MiB, 3) + b"xyz"
            + struct.pack("<QI", 0, 0))
    pieces = [body[i:i + 3] for i in range(0, len(body), 3)]
    transfer.import_chunked(ai, pieces)
    assert read(d, v.uuid, MiB, 5) == b"abcde"
    assert read(d, v.uuid, 3 * MiB, 3) == b"xyz"
    with pytest.raises(StorageError, match="truncated"):
        transfer.import_chunked(ai, [body[:-12] + struct.pack(
            "<QI", 0, 1) + b"Q"])
    d.vdi_detach(SR, v.uuid)


def _bytes_io(b):
    return io.BytesIO(b)


def _blocks(vhd_bytes):
    reader = vhd.VHDStreamReader()
    reader.feed(vhd_bytes[:8192])
    return sorted(idx for _, idx in reader._blocks)


def _qemu_io(path, *commands):
    args = ["qemu-io", "-f", "qcow2"]
    for c in commands:
        args += ["-c", c]
    subprocess.run(args + [path], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("qemu-io") is None,
                    reason="qemu-io is not installed")
def test_qcow2_chains_are_read_from_the_files_as_qemu_nbd_reads_them(
        tmp_path):
    base, top = str(tmp_path / "base.qcow2"), str(tmp_path / "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base,
                    str(10 * MiB)], check=True)
    _qemu_io(base, "write -P 1 0 1M", "write -P 2 2M 64k",
             "write -P 7 9M 1M")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                    "base.qcow2", "-F", "qcow2", top], check=True)
    # Data over data, zeroes over data, data in a hole, an odd length.
    _qemu_io(top, "write -P 3 512k 128k", "write -z 9M 64k",
             "write -P 5 3M 100k")
    ai = AttachInfo(sr_uuid=SR, vdi_uuid="top", path=top, format="qcow2",
                    read_only=True, virtual_size=10 * MiB)
    served = transfer._NBDReader(top, "qcow2")
    try:
        whole = served.pread(0, served.size)
    finally:
        served.close()
    rnd = random.Random(7)
    with transfer.open_raw_reader(ai) as mapped:
        assert isinstance(mapped._impl, transfer._MappedReader)
        assert mapped.size == len(whole) == 10 * MiB
        assert mapped.pread(0, mapped.size) == whole
        for _ in range(200):
            offset = rnd.randrange(mapped.size)
            length = rnd.randrange(3 * MiB)
            assert mapped.pread(offset, length) == \
                whole[offset:offset + length]
        assert b"".join(transfer.export_raw(ai, chunk_size=256 << 10)) \
            == whole

    # A compressed cluster has no place in the file: qemu-nbd reads it.
    _qemu_io(base, "write -c -P 9 4M 64k")
    with transfer.open_raw_reader(ai) as reader:
        assert isinstance(reader._impl, transfer._NBDReader)
        assert reader.pread(4 * MiB, 64 << 10) == b"\x09" * (64 << 10)


def test_an_untracked_writer_makes_every_block_count(tmp_path):
    """A write through the log marks its blocks; a writer the log cannot
    follow (a VM's disk on a backend that does not say where it writes)
    marks them all, so the next incremental copy is whole, not wrong."""
    from txstorage import cbt
    d = FileSRDriver()
    dc = {"location": str(tmp_path / "sr")}
    d.sr_create(SR, dc)
    d.sr_attach(SR, dc)
    v = d.vdi_create(SR, None, 4 * MiB)
    assert d.vdi_cbt_log(SR, v.uuid) is None
    d.vdi_enable_cbt(SR, v.uuid)
    s1 = d.vdi_snapshot(SR, v.uuid)
    info = d.vdi_attach(SR, v.uuid, True)
    # The driver names the log an attach hands its writer.
    assert info.cbt_log and d.vdi_cbt_log(SR, v.uuid) == info.cbt_log
    cbt.mark(info.cbt_log, [(64 * 1024 + 5, 1)])
    d.vdi_detach(SR, v.uuid)
    s2 = d.vdi_snapshot(SR, v.uuid)

    def changed(a, b):
        bits = d.vdi_list_changed_blocks(SR, a.uuid, b.uuid)
        return [i for i in range(len(bits) * 8)
                if bits[i >> 3] & (0x80 >> (i & 7))]
    assert changed(s1, s2) == [1]
    d.vdi_cbt_untracked_writer(SR, v.uuid)
    s3 = d.vdi_snapshot(SR, v.uuid)
    every = list(range(4 * MiB // (64 * 1024)))
    assert changed(s2, s3) == every and changed(s1, s3) == every
    assert changed(s1, s2) == [1]

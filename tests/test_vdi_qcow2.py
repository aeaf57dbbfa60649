"""
format=qcow2 on PUT /import_raw_vdi and GET /export_raw_vdi against a
real server, checked with real qemu-img (info, check, compare, convert,
map, rebase): sparse images out, images qemu made (v2 and v3, other
cluster sizes, internal snapshots whose tables come after their data) in,
differential exports against a snapshot that apply onto it, and refused
images that leave the VDI as it was.
"""

import json
import os
import shutil
import subprocess

import pytest

from tests import test_vdi_transfer as transfer
from tests.test_vdi_transfer import (
    MIB, api, curl, export, import_file, make_raw, new_vdi, qemu_img, same,
    server, sid, task_of, url, x)

# The server and session fixtures of the raw and VHD tests, shared.
FIXTURES = (api, server, sid, x)

SIZE = 42 * MIB
CLUSTER = 64 << 10

pytestmark = [transfer.pytestmark, pytest.mark.skipif(
    not shutil.which("qemu-io"), reason="needs qemu-io")]


def info(path):
    return json.loads(qemu_img("info", "--output=json", path))


def data_clusters(path):
    """Disk offsets of the clusters qemu-img map says the image holds."""
    out = set()
    for e in json.loads(qemu_img("map", "--output=json", path)):
        if e["data"] and e.get("depth", 0) == 0:
            out.update(range(e["start"], e["start"] + e["length"], CLUSTER))
    return out


def to_qcow2(src, dst, *options):
    qemu_img("convert", "-f", "raw", "-O", "qcow2", *options, src, dst)
    return str(dst)


def test_qcow2_out_is_a_sparse_image_qemu_accepts(x, server, sid, tmp_path):
    vdi = new_vdi(x, SIZE)
    src = make_raw(tmp_path / "a.raw", SIZE, [
        (MIB, 3 * MIB + 7), (20 * MIB, 4096), (SIZE - 1000, 1000)])
    assert import_file(server, sid, vdi, src)[0] == 200
    out, headers = export(server, sid, vdi, tmp_path / "a.qcow2", "qcow2",
                          https=True)
    assert "content-type:application/x-qemu-disk" in headers
    assert 'filename="%s.qcow2"' % x.VDI.get_uuid(vdi) in headers
    assert task_of(x, headers)[1]["status"] == "success"
    meta = info(out)
    assert meta["format"] == "qcow2" and meta["virtual-size"] == SIZE
    assert meta["cluster-size"] == CLUSTER
    assert meta["format-specific"]["data"]["compat"] == "1.1"
    qemu_img("check", out)
    qemu_img("compare", "-f", "raw", "-F", "qcow2", src, out)
    back = str(tmp_path / "back.raw")
    qemu_img("convert", "-f", "qcow2", "-O", "raw", out, back)
    assert same(src, back)
    # Only the clusters with data are in the image.
    assert len(data_clusters(out)) == 48 + 1 + 1 + 1
    assert os.path.getsize(out) < 5 * MIB


@pytest.mark.parametrize("options", [
    (), ("-o", "compat=0.10"), ("-o", "cluster_size=4096"),
    ("-o", "cluster_size=2M,preallocation=metadata")],
    ids=["v3", "v2", "4k-clusters", "2m-preallocated"])
def test_qcow2_made_by_qemu_in(x, server, sid, tmp_path, options):
    vdi = new_vdi(x, SIZE)
    src = make_raw(tmp_path / "b.raw", SIZE, [
        (0, 512), (2 * MIB + 512, MIB), (17 * MIB, 5 * MIB),
        (SIZE - 512, 512)], seed=2)
    img = to_qcow2(src, tmp_path / "b.qcow2", *options)
    code, headers, _ = import_file(server, sid, vdi, img, "QCOW2")
    assert code == 200
    rec = task_of(x, headers)[1]
    assert rec["status"] == "success", rec["error_info"]
    assert rec["result"] == "<value>%s</value>" % vdi
    assert same(export(server, sid, vdi, tmp_path / "b.out")[0], src)


def test_tables_after_their_data_and_our_own_images_in(x, server, sid,
                                                      tmp_path):
    src = make_raw(tmp_path / "c.raw", SIZE, [(0, 8 * MIB)], seed=3)
    img = to_qcow2(src, tmp_path / "c.qcow2")
    # An internal snapshot, then a write: the copied L2 table is placed
    # after the data clusters it still maps.
    qemu_img("snapshot", "-c", "before", img)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    "write -P 0x5a %d 65536" % (3 * MIB), img],
                   check=True, capture_output=True)
    expected = tmp_path / "c2.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", img, str(expected))
    vdi = new_vdi(x, SIZE)
    assert import_file(server, sid, vdi, img, "qcow2")[0] == 200
    out = export(server, sid, vdi, tmp_path / "c.out")[0]
    assert same(out, str(expected))
    # Our export goes back in as it came out.
    mine = export(server, sid, vdi, tmp_path / "c.qcow2.out", "qcow2")[0]
    other = new_vdi(x, SIZE)
    code, headers, _ = import_file(server, sid, other, mine, "qcow2")
    assert task_of(x, headers)[1]["status"] == "success"
    assert same(export(server, sid, other, tmp_path / "c3.out")[0],
                str(expected))


def test_differential_qcow2_applies_onto_the_base(x, server, sid, tmp_path):
    vdi = new_vdi(x, SIZE)
    base = make_raw(tmp_path / "base.raw", SIZE, [(0, 8 * MIB)], seed=4)
    assert import_file(server, sid, vdi, base)[0] == 200
    snap = x.VDI.snapshot(vdi, {})
    changed = bytearray(open(base, "rb").read())
    changed[3 * MIB + 10:3 * MIB + 1000] = os.urandom(990)
    changed[26 * MIB:26 * MIB + 4096] = b"\x07" * 4096
    changed[5 * MIB:5 * MIB + CLUSTER] = bytes(CLUSTER)    # became zero
    new = tmp_path / "new.raw"
    new.write_bytes(bytes(changed))
    assert import_file(server, sid, vdi, str(new))[0] == 200
    diff, _ = export(server, sid, vdi, tmp_path / "diff.qcow2", "qcow2",
                     base=x.VDI.get_uuid(snap))
    qemu_img("check", diff)
    assert data_clusters(diff) == {3 * MIB, 5 * MIB, 26 * MIB}
    # With the base under it, qemu reads the new disk from it.
    base_out, _ = export(server, sid, snap, tmp_path / "snap.raw")
    assert same(base_out, base)
    qemu_img("rebase", "-u", "-b", base_out, "-F", "raw", diff)
    qemu_img("compare", "-f", "raw", "-F", "qcow2", str(new), diff)
    # Uploaded onto a copy of the base, it makes the new disk.
    qemu_img("rebase", "-u", "-b", "", diff)
    copy = new_vdi(x, SIZE)
    assert import_file(server, sid, copy, base)[0] == 200
    assert import_file(server, sid, copy, diff, "qcow2")[0] == 200
    assert same(export(server, sid, copy, tmp_path / "rebuilt.raw")[0],
                str(new))


def test_refused_qcow2_uploads_leave_the_vdi_as_it_was(x, server, sid,
                                                       tmp_path):
    vdi = new_vdi(x, SIZE)
    src = make_raw(tmp_path / "d.raw", SIZE, [(4 * MIB, 4 * MIB)], seed=5)
    assert import_file(server, sid, vdi, src)[0] == 200
    other = make_raw(tmp_path / "e.raw", SIZE, [(0, SIZE)], seed=6)
    img = to_qcow2(other, tmp_path / "e.qcow2")
    data = open(img, "rb").read()

    def refused(body, why):
        path = tmp_path / "bad.qcow2"
        path.write_bytes(body)
        code, headers, page = import_file(server, sid, vdi, str(path),
                                          "qcow2")
        assert code == 200 and b"HTTP/1.1 500 Internal Error" in page
        rec = task_of(x, headers)[1]
        assert rec["status"] == "failure"
        assert rec["error_info"][:2] == ["VDI_IO_ERROR", "Device I/O errors"]
        assert why in rec["error_info"][-1]
        assert same(export(server, sid, vdi, tmp_path / "check.raw")[0],
                    src)

    refused(b"QFI\x00" + data[4:], "not a qcow2")
    refused(data[:len(data) // 2], "truncated")
    refused(data[:100], "truncated")
    text = tmp_path / "text.raw"
    text.write_bytes(b"compressible " * (SIZE // 13) + bytes(SIZE % 13))
    compressed = to_qcow2(str(text), tmp_path / "z.qcow2", "-c")
    refused(open(compressed, "rb").read(), "compressed")
    # A qcow2 body needs a VDI to go into.
    code, _, _ = curl("-T", img, url(server, "/import_raw_vdi",
                                     session_id=sid, format="qcow2",
                                     sr_id=x.VDI.get_SR(vdi)))
    assert code == 400


def test_an_image_past_two_tib_goes_in_and_out(x, server, sid, tmp_path):
    """qcow2 carries what VHD cannot: a 3 TiB disk, data at its very
    end, in and out sparse (thin VDI, a few MiB on the wire)."""
    size = 3 << 40
    vdi = new_vdi(x, size)
    img = str(tmp_path / "big.qcow2")
    qemu_img("create", "-f", "qcow2", img, str(size))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    "write -P 0x5a %d 65536" % (size - 65536), img],
                   check=True, capture_output=True)
    code, headers, _ = import_file(server, sid, vdi, img, "qcow2")
    assert code == 200
    assert task_of(x, headers)[1]["status"] == "success"
    out = export(server, sid, vdi, tmp_path / "out.qcow2", "qcow2")[0]
    assert info(out)["virtual-size"] == size
    assert os.path.getsize(out) < 8 * MIB
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", img, out)
    x.VDI.destroy(vdi)

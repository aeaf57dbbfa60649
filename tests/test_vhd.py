"""
The VHD codec against qemu-img: what we write qemu reads back byte for
byte, what qemu writes we read, differential exports apply onto their
base, and damaged streams are refused with VHDError.
"""

import hashlib
import io
import json
import random
import shutil
import struct
import subprocess
import uuid

import pytest

from txstorage import vhd
from txstorage.vhd import (DEFAULT_BLOCK_SIZE, SECTOR, VHDError,
                           VHDStreamReader)

MiB = 1 << 20
BS = DEFAULT_BLOCK_SIZE

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img is not installed")


def qemu_img(*args):
    return subprocess.run(("qemu-img",) + args, check=True,
                          capture_output=True, text=True).stdout


def make_raw(path, size, writes):
    """A sparse raw file of `size` with (offset, bytes) written."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in writes:
            f.seek(off)
            f.write(data)
    return path


def write_vhd(src, dst, size, **kw):
    with open(src, "rb") as f, open(dst, "wb") as out:
        for chunk in vhd.stream_vhd(size, vhd.file_block_reader(f, size),
                                    **kw):
            out.write(chunk)
    return dst


def apply_stream(data, size, base=None, piece=65536):
    """Decode a VHD byte string fed in pieces; the disk it describes."""
    disk = bytearray(base if base is not None else bytes(size))
    reader = VHDStreamReader()
    for i in range(0, len(data), piece):
        for off, d in reader.feed(data[i:i + piece]):
            disk[off:off + len(d)] = d
    for off, d in reader.finish():
        disk[off:off + len(d)] = d
    return bytes(disk), reader


def allocated_blocks(vhd_bytes):
    reader = VHDStreamReader()
    reader.feed(vhd_bytes[:vhd.FOOTER_SIZE + vhd.HEADER_SIZE
                          + 4 * 4096 + SECTOR])
    return sorted(idx for _, idx in reader._blocks)


def sample_disk(tmp_path, size=24 * MiB):
    rnd = random.Random(7)
    writes = [(3 * MiB, rnd.randbytes(MiB)),             # block 1
              (10 * MiB + 123, b"hello" * 1000),          # block 5
              (size - 4096, b"\x01" * 4096),               # last block
              (14 * MiB, bytes(2 * MiB))]                  # zeros, block 7
    return make_raw(str(tmp_path / "src.raw"), size, writes), size


# -- writer ------------------------------------------------------------------

@needs_qemu
def test_writer_output_is_read_by_qemu(tmp_path):
    src, size = sample_disk(tmp_path)
    out = write_vhd(src, str(tmp_path / "out.vhd"), size)
    info = json.loads(qemu_img("info", "--output=json", "-f", "vpc", out))
    assert info["format"] == "vpc"
    assert info["virtual-size"] == size
    back = str(tmp_path / "back.raw")
    qemu_img("convert", "-f", "vpc", "-O", "raw", out, back)
    qemu_img("compare", "-f", "raw", "-F", "raw", src, back)
    assert _md5(src) == _md5(back)


@needs_qemu
def test_writer_odd_size_round_trips(tmp_path):
    size = 5 * MiB + 3 * SECTOR
    src = make_raw(str(tmp_path / "odd.raw"), size,
                   [(size - SECTOR, b"\x7f" * SECTOR), (0, b"boot")])
    out = write_vhd(src, str(tmp_path / "odd.vhd"), size)
    back = str(tmp_path / "odd.back")
    qemu_img("convert", "-f", "vpc", "-O", "raw", out, back)
    assert _md5(src) == _md5(back)
    disk, _ = apply_stream(open(out, "rb").read(), size)
    assert disk == open(src, "rb").read()


def test_zero_blocks_are_absent(tmp_path):
    src, size = sample_disk(tmp_path)
    out = write_vhd(src, str(tmp_path / "s.vhd"), size)
    data = open(out, "rb").read()
    # Blocks 1, 5 and the last hold data; block 7 was written with zeros.
    assert allocated_blocks(data) == [1, 5, size // BS - 1]
    w = vhd.VHDWriter(size, [1, 5, size // BS - 1])
    assert len(data) == w.total_size
    # footer copy, header, one sector of BAT, 3 x (bitmap + block), footer
    assert len(data) == 512 + 1024 + 512 + 3 * (512 + BS) + 512


def test_writer_is_incremental():
    size = 8 * MiB
    w = vhd.VHDWriter(size, [2, 0])
    head = w.header()
    assert head[:8] == b"conectix" and len(head) % SECTOR == 0
    with pytest.raises(VHDError):
        w.block(2, b"x")              # out of order
    parts = w.block(0, b"a" * 100)
    assert sum(len(p) for p in parts) == SECTOR + BS
    with pytest.raises(VHDError):
        w.footer()                    # block 2 still owed
    w.block(2, b"b" * BS)
    total = len(head) + 2 * (SECTOR + BS) + len(w.footer())
    assert total == w.total_size


def test_empty_disk_has_no_blocks():
    chunks = list(vhd.stream_vhd(64 * MiB, lambda i: bytes(BS)))
    data = b"".join(chunks)
    assert allocated_blocks(data) == []
    disk, reader = apply_stream(data, 64 * MiB)
    assert reader.virtual_size == 64 * MiB and disk == bytes(64 * MiB)


# -- reader ------------------------------------------------------------------

@needs_qemu
def test_reads_qemu_dynamic_vhd(tmp_path):
    src, size = sample_disk(tmp_path)
    q = str(tmp_path / "q.vhd")
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
             src, q)
    data = open(q, "rb").read()
    # qemu rounds the size up to a CHS geometry.
    vsize = VHDStreamReader()
    vsize.feed(data[:4096])
    assert vsize.virtual_size >= size
    disk, reader = apply_stream(data, vsize.virtual_size, piece=77777)
    assert disk[:size] == open(src, "rb").read()
    assert disk[size:] == bytes(len(disk) - size)
    assert reader.disk_type == vhd.DISK_DYNAMIC
    with open(q, "rb") as f:
        footer, header = vhd.read_info(f)
    assert footer.creator_app == b"qemu" and header.block_size == BS


@needs_qemu
def test_reads_qemu_fixed_vhd(tmp_path):
    size = 4 * MiB
    src = make_raw(str(tmp_path / "f.raw"), size, [(MiB, b"fixed" * 99)])
    q = str(tmp_path / "f.vhd")
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o",
             "subformat=fixed,force_size=on", src, q)
    disk, reader = apply_stream(open(q, "rb").read(), size, piece=1000)
    assert disk == open(src, "rb").read()
    assert reader.disk_type == vhd.DISK_FIXED


def test_differencing_disk_yields_only_present_sectors():
    size = 4 * MiB
    parent = uuid.uuid4()
    # Block 1 of a differencing disk with sectors 0-1 and 7 present.
    bitmap = bytearray(vhd.bitmap_size(BS))
    bitmap[0] = 0b11000001
    block = bytes(bitmap) + b"\xaa" * BS
    table = 1536
    entries = 2
    first = table + SECTOR
    bat = struct.pack(">II", 0xFFFFFFFF, first // SECTOR)
    footer = vhd.Footer(current_size=size, disk_type=vhd.DISK_DIFFERENCING,
                        data_offset=512, uuid=uuid.uuid4().bytes).pack()
    header = vhd.Header(table_offset=table, max_table_entries=entries,
                        parent_uuid=parent.bytes,
                        parent_name="parent.vhd").pack()
    data = (footer + header + bat.ljust(SECTOR, b"\0") + block + footer)
    base = b"\x11" * size
    disk, reader = apply_stream(data, size, base=base, piece=333)
    assert reader.parent_uuid == str(parent)
    assert reader.parent_name == "parent.vhd"
    want = bytearray(base)
    for s in (0, 1, 7):
        off = BS + s * SECTOR
        want[off:off + SECTOR] = b"\xaa" * SECTOR
    assert disk == bytes(want)


def test_dynamic_partial_bitmap_reads_zeros():
    size = 2 * MiB
    bitmap = bytearray(vhd.bitmap_size(BS))
    bitmap[0] = 0b10000000          # only sector 0 present
    footer = vhd.Footer(current_size=size, disk_type=vhd.DISK_DYNAMIC,
                        data_offset=512).pack()
    header = vhd.Header(table_offset=1536, max_table_entries=1).pack()
    bat = struct.pack(">I", 2048 // SECTOR).ljust(SECTOR, b"\0")
    data = footer + header + bat + bytes(bitmap) + b"\xbb" * BS + footer
    disk, _ = apply_stream(data, size, base=b"\xcc" * size)
    assert disk[:SECTOR] == b"\xbb" * SECTOR
    assert disk[SECTOR:] == bytes(size - SECTOR)


# -- differential (base=) exports --------------------------------------------

@needs_qemu
def test_base_export_applies_onto_base(tmp_path):
    size = 16 * MiB
    rnd = random.Random(3)
    base_writes = [(0, rnd.randbytes(6 * MiB)), (12 * MiB, b"z" * MiB)]
    base = make_raw(str(tmp_path / "base.raw"), size, base_writes)
    new = str(tmp_path / "new.raw")
    shutil.copy(base, new)
    with open(new, "r+b") as f:
        f.seek(2 * MiB + 5)
        f.write(b"changed")                  # block 1 changes
        f.seek(12 * MiB)
        f.write(bytes(MiB))                  # block 6 becomes zero
        f.seek(14 * MiB)
        f.write(b"new data")                 # block 7 gains data
    with open(new, "rb") as fn, open(base, "rb") as fb:
        chunks = vhd.stream_vhd(size, vhd.file_block_reader(fn, size),
                                read_base_block=vhd.file_block_reader(
                                    fb, size))
        diff = b"".join(chunks)
    assert allocated_blocks(diff) == [1, 6, 7]
    disk, _ = apply_stream(diff, size, base=open(base, "rb").read())
    assert disk == open(new, "rb").read()
    # qemu reads the same blocks out of it.
    out = str(tmp_path / "diff.vhd")
    open(out, "wb").write(diff)
    back = str(tmp_path / "diff.raw")
    qemu_img("convert", "-f", "vpc", "-O", "raw", out, back)
    got = open(back, "rb").read()
    assert got[2 * MiB:4 * MiB] == open(new, "rb").read()[2 * MiB:4 * MiB]
    assert got[:2 * MiB] == bytes(2 * MiB)


# -- damage ------------------------------------------------------------------

def _good_vhd(size=6 * MiB):
    rnd = random.Random(5)
    disk = bytearray(size)
    disk[MiB:2 * MiB] = rnd.randbytes(MiB)
    disk[5 * MiB:5 * MiB + 10] = b"0123456789"
    return b"".join(vhd.stream_vhd(
        size, lambda i: bytes(disk[i * BS:(i + 1) * BS]))), bytes(disk)


def test_good_stream_round_trips():
    data, disk = _good_vhd()
    got, _ = apply_stream(data, len(disk), piece=4097)
    assert got == disk


def test_corrupt_footer_cookie():
    data, _ = _good_vhd()
    bad = b"XXXXXXXX" + data[8:-512] + b"XXXXXXXX" + data[-504:]
    with pytest.raises(VHDError, match="footer"):
        apply_stream(bad, 6 * MiB)


def test_bad_footer_checksum():
    data, _ = _good_vhd()
    bad = bytearray(data)
    bad[48 + 7] ^= 0x02                # current size, checksum untouched
    with pytest.raises(VHDError, match="checksum"):
        apply_stream(bytes(bad), 6 * MiB)


def test_bad_header_checksum():
    data, _ = _good_vhd()
    bad = bytearray(data)
    bad[512 + 32] ^= 0x01              # block size
    with pytest.raises(VHDError, match="checksum"):
        apply_stream(bytes(bad), 6 * MiB)


@pytest.mark.parametrize("cut", [100, 1000, 1536 + 10, 3 * MiB, -512, -1])
def test_truncated_stream(cut):
    data, _ = _good_vhd()
    with pytest.raises(VHDError, match="truncated"):
        apply_stream(data[:cut], 6 * MiB)


def test_block_overlapping_bat_is_refused():
    size = 2 * MiB
    footer = vhd.Footer(current_size=size, disk_type=vhd.DISK_DYNAMIC,
                        data_offset=512).pack()
    header = vhd.Header(table_offset=1536, max_table_entries=1).pack()
    bat = struct.pack(">I", 1).ljust(SECTOR, b"\0")   # block at byte 512
    with pytest.raises(VHDError, match="overlaps"):
        VHDStreamReader().feed(footer + header + bat + bytes(MiB))


def test_not_a_vhd():
    with pytest.raises(VHDError):
        apply_stream(b"\x00" * (3 * MiB), 3 * MiB)


def test_iter_vhd_reads_a_file_object():
    data, disk = _good_vhd()
    got = bytearray(len(disk))
    for off, d in vhd.iter_vhd(io.BytesIO(data), chunk_size=10000):
        got[off:off + len(d)] = d
    assert bytes(got) == disk


def test_size_limits():
    with pytest.raises(VHDError):
        vhd.VHDWriter(vhd.MAX_VHD_SIZE + BS, [])
    with pytest.raises(VHDError):
        vhd.VHDWriter(1000, [])


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()

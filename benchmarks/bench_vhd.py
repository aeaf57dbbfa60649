"""
Throughput of the pure-Python VHD codec against qemu-img doing the same
conversions, on a 1 GiB dense image and a 4 GiB sparse one (5% data):

  write  raw -> dynamic VHD: txstorage.vhd.stream_vhd (zero blocks
         dropped) vs qemu-img convert -O vpc -o subformat=dynamic
  read   dynamic VHD -> raw: txstorage.vhd.VHDStreamReader fed 64 KiB
         pieces, writes applied with pwrite, vs qemu-img convert -O raw
  and the data paths the HTTP handlers use on a qcow2 VDI:
  export transfer.export_vhd (qemu-nbd + planning pass + writer)
  import transfer.import_vhd (reader + overlay via qemu-nbd + swap)

Also measures the image-format choice for the file SR: qcow2 vs vpc
(VHD) for qemu-img convert from raw.

    python3 benchmarks/bench_vhd.py [--dir DIR] [--dense-mib N]
        [--sparse-mib N]

MB/s are virtual bytes per second (MB = 10^6 B).  Run on a real disk;
the source images are in the page cache after they are made.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from txstorage import transfer, vhd  # noqa: E402
from txstorage.types import AttachInfo  # noqa: E402

MiB = 1 << 20
BS = vhd.DEFAULT_BLOCK_SIZE


def make_dense(path, size):
    rnd = random.Random(1)
    with open(path, "wb") as f:
        for _ in range(size // (8 * MiB)):
            f.write(rnd.randbytes(8 * MiB))


def make_sparse(path, size, fraction=0.05):
    rnd = random.Random(2)
    nblocks = size // BS
    with open(path, "wb") as f:
        f.truncate(size)
        for idx in rnd.sample(range(nblocks), int(nblocks * fraction)):
            f.seek(idx * BS)
            f.write(rnd.randbytes(BS))


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def qemu(*args):
    subprocess.run(("qemu-img",) + args, check=True,
                   stdout=subprocess.DEVNULL)


def our_write(src, dst, size):
    with open(src, "rb") as f, open(dst, "wb") as out:
        # Like qemu, skip the file's holes without reading them.
        blocks = vhd.blocks_of_extents(vhd.file_data_extents(f, size))
        for chunk in vhd.stream_vhd(size, vhd.file_block_reader(f, size),
                                    candidates=blocks):
            out.write(chunk)


def our_read(src, dst, size):
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        reader = vhd.VHDStreamReader()
        with open(src, "rb") as f:
            for piece in iter(lambda: f.read(64 << 10), b""):
                for off, data in reader.feed(piece):
                    os.pwrite(fd, data, off)
        for off, data in reader.finish():
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def same(a, b):
    return subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F",
                           "raw", a, b]).returncode == 0


def row(label, size, seconds, extra=""):
    print("  %-44s %7.2f s %8.0f MB/s %s"
          % (label, seconds, size / seconds / 1e6, extra))


def bench_image(workdir, name, size, maker):
    print("\n%s: %d MiB" % (name, size // MiB))
    src = os.path.join(workdir, name + ".raw")
    maker(src, size)
    ours = os.path.join(workdir, name + ".ours.vhd")
    theirs = os.path.join(workdir, name + ".qemu.vhd")
    t = timed(lambda: our_write(src, ours, size))
    row("write raw->vhd  txstorage.vhd", size, t,
        "(%d MiB out)" % (os.path.getsize(ours) // MiB))
    t = timed(lambda: qemu("convert", "-f", "raw", "-O", "vpc", "-o",
                           "subformat=dynamic", src, theirs))
    row("write raw->vhd  qemu-img convert", size, t,
        "(%d MiB out)" % (os.path.getsize(theirs) // MiB))
    back = os.path.join(workdir, name + ".back.raw")
    t = timed(lambda: our_read(ours, back, size))
    ok = same(src, back)
    row("read  vhd->raw  txstorage.vhd", size, t, "identical=%s" % ok)
    os.unlink(back)
    t = timed(lambda: qemu("convert", "-f", "vpc", "-O", "raw", ours, back))
    row("read  vhd->raw  qemu-img convert", size, t,
        "identical=%s" % same(src, back))

    # Through a qcow2 VDI, as the HTTP handlers do.
    img = os.path.join(workdir, name + ".qcow2")
    qemu("convert", "-f", "raw", "-O", "qcow2", src, img)
    ai = AttachInfo(sr_uuid="sr", vdi_uuid=name, path=img, format="qcow2",
                    read_only=False, virtual_size=size)
    out = os.path.join(workdir, name + ".export.vhd")

    def export(detect_zeros):
        with open(out, "wb") as f:
            for chunk in transfer.export_vhd(ai, detect_zeros=detect_zeros):
                f.write(chunk)
    t = timed(lambda: export(False))
    row("export qcow2 VDI -> vhd, map only", size, t)
    t = timed(lambda: export(True))
    row("export qcow2 VDI -> vhd, + zero detection", size, t)
    dst = os.path.join(workdir, name + ".import.qcow2")
    qemu("create", "-f", "qcow2", dst, str(size))
    dai = AttachInfo(sr_uuid="sr", vdi_uuid=name + "-in", path=dst,
                     format="qcow2", read_only=False, virtual_size=size)

    def imp():
        with open(out, "rb") as f:
            transfer.import_vhd(dai, iter(lambda: f.read(64 << 10), b""))
    t = timed(imp)
    check = os.path.join(workdir, name + ".check.raw")
    qemu("convert", "-f", "qcow2", "-O", "raw", dst, check)
    row("import vhd -> qcow2 VDI (transfer)", size, t,
        "identical=%s" % same(src, check))

    # The file SR's image format: qcow2 or vpc, both from raw by qemu-img.
    for fmt in ("qcow2", "vpc"):
        target = os.path.join(workdir, name + ".fmt." + fmt)
        t = timed(lambda: qemu("convert", "-f", "raw", "-O", fmt, src,
                               target))
        row("format raw->%s qemu-img convert" % fmt, size, t,
            "(%d MiB on disk)" % (os.stat(target).st_blocks * 512 // MiB))
    for f in os.listdir(workdir):
        if f.startswith(name + "."):
            os.unlink(os.path.join(workdir, f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--dense-mib", type=int, default=1024)
    ap.add_argument("--sparse-mib", type=int, default=4096)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-vhd-", dir=args.dir)
    try:
        print("python %s, %s" % (sys.version.split()[0], subprocess.run(
            ["qemu-img", "--version"], capture_output=True,
            text=True).stdout.splitlines()[0]))
        bench_image(workdir, "dense", args.dense_mib * MiB, make_dense)
        bench_image(workdir, "sparse", args.sparse_mib * MiB, make_sparse)
        # vpc cannot be a backing file's child: no snapshot trees.
        base = os.path.join(workdir, "b.vhd")
        qemu("create", "-f", "vpc", base, "64M")
        r = subprocess.run(["qemu-img", "create", "-f", "vpc", "-b", base,
                            "-F", "vpc", os.path.join(workdir, "c.vhd")],
                           capture_output=True, text=True)
        print("\nvpc child of a backing file: %s"
              % (r.stderr.strip().splitlines()[-1] if r.returncode
                 else "supported"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

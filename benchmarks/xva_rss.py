"""
Item xva_rss: the server's memory stays flat however big the VM it
streams.  One server exports and imports (XVA, plain and zstd, and the
raw disk on the way in) a 256 MiB VM, then a 4 GiB and a 16 GiB one (1
and 4 GiB with --quick), each a sixteenth incompressible data spread
over the disk and holes between; its peak RSS after each big VM is
reported against its peak after the small one (a ratio near 1: the
stream's buffers do not grow with the disk).
"""

import os

from benchmarks import common
from benchmarks.xva import GIB, MIB, Target

ITEM = "xva_rss"
DATA_BLOCK = 4 * MIB


def spread_image(path, size, data):
    """A sparse image of ``size`` with ``data`` bytes of random blocks
    spread evenly across it (the first and the last block included)."""
    block = os.urandom(DATA_BLOCK)
    count = max(2, data // DATA_BLOCK)
    stride = (size - DATA_BLOCK) // (count - 1)
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(count):
            f.seek(i * stride)
            f.write(block)
    return path


def round_trip(url, session, sr, path, size, label):
    """The disk in raw, the VM out and back in as XVA (plain, zstd); the
    objects removed after."""
    target = Target(url, session, sr, path, size, label)
    xva = path + ".xva"
    for compression in (None, "zstd"):
        target.save(xva, compression)
        target.xva_import(xva)
        os.unlink(xva)
    target.call("VM.destroy", target.vm)
    target.call("VDI.destroy", target.vdi)


def run(ctx):
    sizes = ((1 * GIB, 4 * GIB) if ctx.quick else (4 * GIB, 16 * GIB))
    work = os.path.join(ctx.base, "xva_rss")
    os.makedirs(work)
    server = common.LoadServer(os.path.join(work, "data"))
    server.start()
    try:
        url = server.http_url
        session, sr = common.local_sr_session(url)
        peaks = []
        for size in (256 * MIB,) + sizes:
            # A sixteenth of each disk is data, the rest holes.
            path = spread_image(os.path.join(work, "disk.img"), size,
                                size // 16)
            round_trip(url, session, sr, path, size, "%d" % size)
            os.unlink(path)
            peaks.append(common.rss_mib(server.proc.pid, "VmHWM"))
        for size, peak in zip(sizes, peaks[1:]):
            ctx.results.add(
                ITEM, "txxapi peak RSS after a %g GiB VM out and in (XVA, "
                "raw)" % (size / GIB), peak, "MiB", peaks[0],
                "after a 256 MiB one")
    finally:
        server.stop()

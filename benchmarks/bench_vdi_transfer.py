"""
Throughput of the VDI data paths of a real server: PUT /import_raw_vdi and
GET /export_raw_vdi with curl, raw and VHD, over HTTP and HTTPS, for a
dense image (every block written) and a sparse one (5% data), with the
server's peak resident memory during each transfer.

    python3 benchmarks/bench_vdi_transfer.py [--dir DIR] [--dense-mib N]
        [--sparse-mib N] [--repeats N] [--json FILE]

Defaults: a 1 GiB dense and a 4 GiB sparse image.  MB/s are virtual bytes
of the disk per second of wall time (MB = 10^6 B); "wire" is what curl
moved.  The local SR lives in the data dir under --dir: run on a real
disk.  The ceiling (curl against nginx on the same images) is the
benchmark harness's data path item (python -m benchmarks).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from tests.support.servers import LoadServer  # noqa: E402

MIB = 1 << 20


def make_images(directory, dense_size, sparse_size):
    """{kind: (raw path, vhd path, size)}."""
    rnd = random.Random(1)
    dense = os.path.join(directory, "dense.raw")
    with open(dense, "wb") as f:
        for _ in range(dense_size // (8 * MIB)):
            f.write(rnd.randbytes(8 * MIB))
    sparse = os.path.join(directory, "sparse.raw")
    with open(sparse, "wb") as f:
        f.truncate(sparse_size)
        # 1 MiB of data in every 20 MiB: 5%.
        for off in range(0, sparse_size, 20 * MIB):
            f.seek(off)
            f.write(rnd.randbytes(MIB))
    images = {}
    for kind, raw, size in (("dense", dense, dense_size),
                            ("sparse", sparse, sparse_size)):
        vhd = raw[:-4] + ".vhd"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc",
                        "-o", "subformat=dynamic,force_size=on", raw, vhd],
                       check=True)
        images[kind] = (raw, vhd, size)
    return images


class RSSWatch:
    """Peak resident memory of a process while the block runs."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def curl(args):
    """(seconds, bytes moved) of one curl transfer that must succeed."""
    start = time.monotonic()
    out = subprocess.run(
        ["curl", "-sS", "-k", "--fail", "-o", "/dev/null", "-w",
         "%{size_download} %{size_upload}"] + args,
        capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - start
    if out.returncode:
        raise RuntimeError("curl %s: %s" % (" ".join(args), out.stderr))
    down, up = (int(float(x)) for x in out.stdout.split())
    return seconds, max(down, up)


def measure(server, session, images, repeats):
    x = session.xenapi
    sid = session._session
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    rows = []
    for kind, (raw, vhd, size) in sorted(images.items()):
        for scheme, base in (("http", server.http_url),
                             ("https", server.https_url)):
            for fmt, path in (("raw", raw), ("vhd", vhd)):
                vdi = x.VDI.create({
                    "name_label": "bench", "name_description": "",
                    "SR": sr, "virtual_size": str(size), "type": "user",
                    "sharable": False, "read_only": False,
                    "other_config": {}, "xenstore_data": {},
                    "sm_config": {}, "tags": []})
                query = "session_id=%s&vdi=%s&format=%s" % (sid, vdi, fmt)
                for direction in ("import", "export"):
                    best = None
                    for _ in range(repeats):
                        with RSSWatch(server.proc.pid) as rss:
                            if direction == "import":
                                secs, moved = curl([
                                    "-T", path,
                                    base + "/import_raw_vdi?" + query])
                            else:
                                secs, moved = curl([
                                    base + "/export_raw_vdi?" + query])
                        if best is None or secs < best[0]:
                            best = (secs, moved, rss.peak)
                    secs, moved, peak = best
                    rows.append({
                        "direction": direction, "image": kind,
                        "size": size, "format": fmt, "transport": scheme,
                        "seconds": round(secs, 3),
                        "virtual_MBps": round(size / secs / 1e6, 1),
                        "wire_MBps": round(moved / secs / 1e6, 1),
                        "peak_rss_MiB": round(peak / MIB, 1)})
                    print_row(rows[-1])
                x.VDI.destroy(vdi)
    return rows


def print_row(r):
    print("%-6s %-6s %5d MiB %-4s %-5s %8.1f MB/s  wire %8.1f MB/s  "
          "%6.2f s  server RSS peak %6.1f MiB" % (
              r["direction"], r["image"], r["size"] // MIB, r["format"],
              r["transport"], r["virtual_MBps"], r["wire_MBps"],
              r["seconds"], r["peak_rss_MiB"]), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="work directory (a temporary one)")
    p.add_argument("--dense-mib", type=int, default=1024)
    p.add_argument("--sparse-mib", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-vdi-", dir=args.dir)
    try:
        images = make_images(work, args.dense_mib * MIB,
                             args.sparse_mib * MIB)
        server = LoadServer(os.path.join(work, "data"),
                               extra_args=["--simulator-op-time", "0"])
        server.start()
        try:
            session = server.session(https=False)
            idle = RSSWatch(server.proc.pid)
            print("server RSS before: %.1f MiB" % (idle._rss() / MIB))
            rows = measure(server, session, images, args.repeats)
        finally:
            server.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

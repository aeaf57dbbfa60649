"""
Item nbd: reading a VDI over NBD, as backup tools do.  nbdcopy (four
connections) reads a dense disk from txxapi's NBD server, plain and with
TLS, against qemu-nbd serving the same image file read-only, against
the raw data path (GET /export_raw_vdi with curl, HTTP and HTTPS), and
against a second txxapi that serves each connection's reads one at a
time (--nbd-requests-in-flight 1), all in the same run.  Then an incremental backup: 1 % of the disk's 64 KiB blocks
changed between two snapshots, VDI.list_changed_blocks plus NBD reads of
those blocks, against a full raw export of the later snapshot.
"""

import base64
import os
import random
import socket
import struct
import subprocess
import time

from benchmarks import common
from benchmarks.datapath import Daemon, best_of, curl

ITEM = "nbd"
REPEATS = 3
MIB = 1 << 20
GIB = 1 << 30
BLOCK = 64 << 10


def _nbdcopy(uri, extra=()):
    """Seconds one nbdcopy of the export to null: takes (four
    connections unless ``extra`` says otherwise)."""
    started = time.monotonic()
    out = subprocess.run(["nbdcopy", "--connections=4"] + list(extra) +
                         [uri, "null:"], capture_output=True, text=True,
                         timeout=1800)
    if out.returncode:
        raise RuntimeError("nbdcopy %s: %s" % (uri, out.stderr))
    return time.monotonic() - started


def _uri(record, scheme="nbd", query=""):
    from urllib.parse import quote
    return "%s://%s:%d/%s%s" % (scheme, record["address"],
                                int(record["port"]),
                                quote(record["exportname"], safe=""), query)


def _recv(sock, n):
    out = bytearray()
    while len(out) < n:
        piece = sock.recv(min(n - len(out), 4 * MIB))
        if not piece:
            raise RuntimeError("NBD connection closed")
        out += piece
    return bytes(out)


def read_blocks(record, blocks, depth=16):
    """Read the blocks over one NBD connection, ``depth`` requests in
    flight (what an incremental backup client does)."""
    with socket.create_connection((record["address"], int(record["port"])),
                                  timeout=60) as sock:
        _recv(sock, 18)
        sock.sendall(struct.pack(">I", 3))
        name = record["exportname"].encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data))
                     + data)
        while True:
            _, _, reply, n = struct.unpack(">QIII", _recv(sock, 20))
            _recv(sock, n)
            if reply == 1:
                break
            if reply != 3:
                raise RuntimeError("NBD_OPT_GO refused: %#x" % reply)
        sent = done = 0
        while done < len(blocks):
            while sent < len(blocks) and sent - done < depth:
                sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, sent,
                                         blocks[sent] * BLOCK, BLOCK))
                sent += 1
            _, error, _ = struct.unpack(">IIQ", _recv(sock, 16))
            if error:
                raise RuntimeError("NBD read error %d" % error)
            _recv(sock, BLOCK)
            done += 1


class Disk:
    def __init__(self, url, session, sr, path, size):
        self.url, self.session, self.size = url, session, size
        self.vdi = self.call("VDI.create", {
            "name_label": "bench nbd", "name_description": "", "SR": sr,
            "virtual_size": str(size), "type": "user", "sharable": False,
            "read_only": False, "other_config": {}, "xenstore_data": {},
            "sm_config": {}, "tags": []})
        curl(["-T", path, self.raw_url(self.vdi)])

    def call(self, method, *args):
        return common.jsonrpc(self.url, method,
                              [self.session] + list(args))[0]

    def raw_url(self, vdi, base=None):
        return "%s/%s_raw_vdi?session_id=%s&vdi=%s" % (
            base or self.url, "import" if base is None else "export",
            self.session, vdi)

    def export_rate(self, vdi, base):
        return curl([self.raw_url(vdi, base)]) / 1e9


def _tls_uri(call, vdi, net, work):
    """An nbds:// URI of the VDI with the host's certificate saved for
    nbdcopy to check; the network's purpose is nbd until the caller
    removes it."""
    call("network.add_purpose", net, "nbd")
    [record] = call("VDI.get_nbd_info", vdi)
    certs = os.path.join(work, "pki")
    os.makedirs(certs, exist_ok=True)
    with open(os.path.join(certs, "ca-cert.pem"), "w") as f:
        f.write(record["cert"])
    return _uri(record, "nbds", "?tls-certificates=" + certs)


class OneAtATime:
    """A second server, reading one request of a connection at a time,
    with the same disk: the baseline of overlapping reads, measured in
    turns with the main server so both see the same machine load."""

    def __init__(self, work, path, size):
        self.work = os.path.join(work, "serial")
        self.server = common.LoadServer(
            os.path.join(self.work, "data"),
            extra_args=["--nbd-requests-in-flight", "1"],
            nbd_port=common.free_port())
        self.server.start()
        try:
            session, sr = common.local_sr_session(self.server.http_url)
            self.disk = Disk(self.server.http_url, session, sr, path, size)
            self.net = self.disk.call("network.get_all")[0]
        except Exception:
            self.server.stop()
            raise

    def plain_uri(self):
        self.disk.call("network.add_purpose", self.net, "insecure_nbd")
        [record] = self.disk.call("VDI.get_nbd_info", self.disk.vdi)
        return _uri(record)

    def tls_uri(self):
        self.disk.call("network.remove_purpose", self.net, "insecure_nbd")
        return _tls_uri(self.disk.call, self.disk.vdi, self.net, self.work)

    def stop(self):
        self.server.stop()


def in_turns(n, fn, baseline):
    """Best of n runs of each, alternating."""
    got, base = [], []
    for _ in range(n):
        got.append(fn())
        base.append(baseline())
    return max(got), max(base)


def run(ctx):
    size = 256 * MIB if ctx.quick else 2 * GIB
    work = os.path.join(ctx.base, "nbd")
    os.makedirs(work)
    path = os.path.join(work, "dense.img")
    chunk = os.urandom(4 * MIB)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
    results = ctx.results
    serial = OneAtATime(work, path, size)
    server = common.LoadServer(os.path.join(work, "data"),
                               nbd_port=common.free_port())
    try:
        server.start()
        url = server.http_url
        session, sr = common.local_sr_session(url)
        disk = Disk(url, session, sr, path, size)
        call = disk.call
        net = call("network.get_all")[0]
        label = "%g GiB dense disk" % (size / GIB)
        gbps = (lambda seconds: size / seconds / 1e9)

        raw_http = best_of(REPEATS, lambda: disk.export_rate(
            disk.vdi, server.http_url))
        raw_https = best_of(REPEATS, lambda: disk.export_rate(
            disk.vdi, server.https_url))
        call("network.add_purpose", net, "insecure_nbd")
        [record] = call("VDI.get_nbd_info", disk.vdi)
        serial_uri = serial.plain_uri()
        plain, serial_plain = in_turns(
            REPEATS, lambda: gbps(_nbdcopy(_uri(record))),
            lambda: gbps(_nbdcopy(serial_uri)))
        results.add(ITEM, "NBD read (nbdcopy) of a %s" % label, plain,
                    "GB/s", raw_http, "raw export, HTTP")
        results.add(ITEM, "NBD read of a %s, reads overlapping" % label,
                    plain, "GB/s", serial_plain, "one at a time")
        # One connection: its reads overlap or nothing does.
        one = ["--connections=1"]
        single, serial_single = in_turns(
            REPEATS, lambda: gbps(_nbdcopy(_uri(record), one)),
            lambda: gbps(_nbdcopy(serial_uri, one)))
        results.add(ITEM, "NBD read of a %s, 1 connection, overlapping"
                    % label, single, "GB/s", serial_single, "one at a time")
        # qemu-nbd serving the very image file, read-only.
        image = [os.path.join(root, name) for root, _, names in
                 os.walk(os.path.join(server.data_dir, "sr"))
                 for name in names
                 if name == call("VDI.get_uuid", disk.vdi) + ".qcow2"][0]
        port = common.free_port()
        with Daemon(["qemu-nbd", "-r", "-t", "-e", "8", "-f", "qcow2",
                     "-b", "127.0.0.1", "-p", str(port), "-x", "bench",
                     image], port, os.path.join(work, "qemu-nbd.log")):
            qemu = best_of(REPEATS, lambda: gbps(_nbdcopy(
                "nbd://127.0.0.1:%d/bench" % port)))
        results.add(ITEM, "NBD read of a %s against qemu-nbd" % label,
                    plain, "GB/s", qemu, "qemu-nbd, same image")
        call("network.remove_purpose", net, "insecure_nbd")
        uri = _tls_uri(call, disk.vdi, net, work)
        serial_uri = serial.tls_uri()
        tls, serial_tls = in_turns(REPEATS, lambda: gbps(_nbdcopy(uri)),
                                   lambda: gbps(_nbdcopy(serial_uri)))
        serial.stop()
        results.add(ITEM, "NBD read over TLS of a %s" % label, tls, "GB/s",
                    raw_https, "raw export, HTTPS")
        results.add(ITEM, "NBD read over TLS of a %s, reads overlapping"
                    % label, tls, "GB/s", serial_tls, "one at a time")
        call("network.remove_purpose", net, "nbd")

        # Incremental: 1 % of the blocks changed between two snapshots.
        call("VDI.enable_cbt", disk.vdi)
        first = call("VDI.snapshot", disk.vdi, {})
        nblocks = size // BLOCK
        changed = sorted(random.Random(5).sample(range(nblocks),
                                                 max(1, nblocks // 100)))
        body = os.path.join(work, "changes")
        with open(body, "wb") as f:
            for block in changed:
                f.write(struct.pack("<QI", block * BLOCK, BLOCK))
                f.write(os.urandom(BLOCK))
            f.write(struct.pack("<QI", 0, 0))
        curl(["-T", body, disk.raw_url(disk.vdi) + "&chunked=true"])
        second = call("VDI.snapshot", disk.vdi, {})
        call("network.add_purpose", net, "insecure_nbd")
        [record] = call("VDI.get_nbd_info", second)

        def incremental():
            started = time.monotonic()
            bits = base64.b64decode(call("VDI.list_changed_blocks", first,
                                         second))
            blocks = [i for i in range(len(bits) * 8)
                      if bits[i >> 3] & (0x80 >> (i & 7))]
            if blocks != changed:
                raise RuntimeError("list_changed_blocks: %d blocks, %d "
                                   "changed" % (len(blocks), len(changed)))
            read_blocks(record, blocks)
            return time.monotonic() - started
        quickest = min(incremental() for _ in range(REPEATS))
        full = best_of(REPEATS, lambda: disk.export_rate(
            second, server.http_url))
        # As rates of the disk's size: how fast the backup of it is done.
        results.add(ITEM, "incremental backup (CBT + NBD, 1 %% changed) "
                    "of a %s" % label, gbps(quickest), "GB/s", full,
                    "full raw export")
        call("network.remove_purpose", net, "insecure_nbd")
        results.add(ITEM, "txxapi peak RSS during the reads",
                    common.rss_mib(server.proc.pid, "VmHWM"), "MiB")
    finally:
        server.stop()
        serial.stop()
        os.unlink(path)

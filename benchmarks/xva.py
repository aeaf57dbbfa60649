"""
Item xva: whole-VM backup, GET /export and PUT /import of a VM, each
against the raw data path of the same disk in the same run (GET
/export_raw_vdi, PUT /import_raw_vdi), for a dense disk and a sparse one,
plain and compressed (zstd, gzip), over HTTP with curl.  Rates are the
disk's virtual bytes per second of wall time (what a backup of that disk
takes), so a sparse export that skips its holes can beat a raw one that
sends them.  The checksums an XVA carries are measured apart: XXH64 (what
the export writes) and SHA-1 (what old XVAs carry), on 1 MiB chunks, in
this process.  VM.import from a URL (the server fetching the XVA from a
file server on loopback) is measured against PUT /import of the same
file.
"""

import functools
import hashlib
import http.server
import os
import subprocess
import threading
import time

import xxhash

from benchmarks import common
from benchmarks.datapath import best_of, make_images

ITEM = "xva"
# Exports are short: the best of a few, raw and XVA alike, so the ratio
# compares what each can do rather than the machine's other load.
REPEATS = 3
MIB = 1 << 20
GIB = 1 << 30


def _curl(args, timeout=1800):
    started = time.monotonic()
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null"] + args,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError("curl %s: %s" % (" ".join(args), out.stderr))
    return time.monotonic() - started


def _download(url, path):
    started = time.monotonic()
    out = subprocess.run(["curl", "-sS", "--fail", "-o", path, url],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError("curl %s: %s" % (url, out.stderr))
    return time.monotonic() - started


class Target:
    """A VM with one disk holding an image, on a server."""

    def __init__(self, url, session, sr, path, size, kind):
        self.url, self.session, self.sr = url, session, sr
        self.size = size
        call = self.call
        self.vdi = call("VDI.create", {
            "name_label": "bench " + kind, "name_description": "",
            "SR": sr, "virtual_size": str(size), "type": "user",
            "sharable": False, "read_only": False, "other_config": {},
            "xenstore_data": {}, "sm_config": {}, "tags": []})
        self.query = "?session_id=%s" % session
        _curl(["-T", path, url + "/import_raw_vdi" + self.query +
               "&vdi=" + self.vdi])
        mem = str(256 * MIB)
        self.vm = call("VM.create", {
            "name_label": "bench " + kind, "name_description": "",
            "user_version": "1", "is_a_template": False,
            "affinity": "OpaqueRef:NULL", "memory_static_max": mem,
            "memory_dynamic_max": mem, "memory_dynamic_min": mem,
            "memory_static_min": mem, "VCPUs_params": {}, "VCPUs_max": "1",
            "VCPUs_at_startup": "1", "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart",
            "actions_after_crash": "restart", "PV_bootloader": "",
            "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
            "PV_bootloader_args": "", "PV_legacy_args": "",
            "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {},
            "PCI_bus": "", "other_config": {}, "recommendations": ""})
        call("VBD.create", {
            "VM": self.vm, "VDI": self.vdi, "userdevice": "0",
            "bootable": True, "mode": "RW", "type": "Disk",
            "unpluggable": False, "empty": False, "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {}})

    def call(self, method, *args):
        return common.jsonrpc(self.url, method,
                              [self.session] + list(args))[0]

    def rate(self, seconds):
        return self.size / seconds / 1e9

    def raw_export(self):
        return self.rate(_curl([self.url + "/export_raw_vdi" + self.query +
                                "&vdi=" + self.vdi]))

    def raw_import(self, path):
        return self.rate(_curl(["-T", path, self.url + "/import_raw_vdi" +
                                self.query + "&vdi=" + self.vdi]))

    def export_url(self, compression):
        url = self.url + "/export" + self.query + "&ref=" + self.vm
        return url + ("&use_compression=" + compression if compression
                      else "")

    def xva_export(self, compression=None):
        """Timed to /dev/null, as the raw export is."""
        return self.rate(_curl([self.export_url(compression)]))

    def save(self, path, compression=None):
        _download(self.export_url(compression), path)

    def xva_import(self, path):
        """Upload, then wait for the task (the data is in when it ends)."""
        return self._timed_import(lambda: _curl([
            "-T", path, self.url + "/import" + self.query + "&sr_id=" +
            self.sr]))

    def url_import(self, url):
        """VM.import: the server fetches the XVA at ``url``."""
        return self._timed_import(lambda: self.call(
            "VM.import", url, self.sr, False, False))

    def _timed_import(self, fn):
        before = set(self.call("VM.get_all"))
        started = time.monotonic()
        fn()
        seconds = time.monotonic() - started
        for vm in set(self.call("VM.get_all")) - before:
            vdis = [self.call("VBD.get_VDI", vbd)
                    for vbd in self.call("VM.get_VBDs", vm)]
            self.call("VM.destroy", vm)
            for vdi in vdis:
                self.call("VDI.destroy", vdi)
        return self.rate(seconds)


def hash_rates(total):
    """GB/s of XXH64 and SHA-1 over 1 MiB chunks, and of a plain copy of
    the same chunks (the floor any per-chunk work stands on)."""
    chunk = os.urandom(MIB)
    n = max(1, total // MIB)
    out = {}
    for name, fn in (("copy", bytearray), ("xxh64", xxhash.xxh64_intdigest),
                     ("sha1", lambda d: hashlib.sha1(d).digest())):
        started = time.perf_counter()
        for _ in range(n):
            fn(chunk)
        out[name] = n * MIB / (time.perf_counter() - started) / 1e9
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def file_server(directory):
    """An HTTP server of ``directory`` on loopback, in a thread."""
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=directory))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run(ctx):
    dense = 256 * MIB if ctx.quick else 2 * GIB
    sparse = 1 * GIB if ctx.quick else 8 * GIB
    work = os.path.join(ctx.base, "xva")
    os.makedirs(work)
    images = make_images(work, dense, sparse)
    results = ctx.results
    rates = hash_rates(256 * MIB if ctx.quick else 2 * GIB)
    for name in ("xxh64", "sha1"):
        results.add(ITEM, "%s of 1 MiB chunks, one core" % name,
                    rates[name], "GB/s", rates["copy"], "a copy of them")
    results.add(ITEM, "xxh64 against sha1", rates["xxh64"], "GB/s",
                rates["sha1"], "sha1")
    server = common.LoadServer(os.path.join(work, "data"))
    files = file_server(work)
    server.start()
    try:
        url = server.http_url
        session, sr = common.local_sr_session(url)
        for kind, (path, size) in images.items():
            target = Target(url, session, sr, path, size, kind)
            label = "%g GiB %s disk" % (size / GIB, kind)
            raw_out = best_of(REPEATS, target.raw_export)
            raw_in = target.raw_import(path)
            xva = os.path.join(work, kind + ".xva")
            for compression in (None, "zstd", "gzip"):
                name = "XVA export" + (", %s" % compression
                                       if compression else "")
                rate = best_of(REPEATS,
                               lambda: target.xva_export(compression))
                target.save(xva, compression)
                results.add(ITEM, "%s of a %s" % (name, label), rate,
                            "GB/s", raw_out, "raw export")
                if compression is None:
                    results.add(ITEM, "XVA size of a %s" % label,
                                os.path.getsize(xva) / MIB, "MiB",
                                size / MIB, "the disk")
                imported = target.xva_import(xva)
                results.add(ITEM, "XVA import%s of a %s" % (
                    ", %s" % compression if compression else "", label),
                    imported, "GB/s", raw_in, "raw import")
                if compression is None:
                    fetched = target.url_import("http://127.0.0.1:%d/%s" % (
                        files.server_address[1], os.path.basename(xva)))
                    results.add(ITEM, "VM.import from a URL of a %s" % label,
                                fetched, "GB/s", imported, "PUT /import")
                os.unlink(xva)
        results.add(ITEM, "txxapi peak RSS during the transfers",
                    common.rss_mib(server.proc.pid, "VmHWM"), "MiB")
    finally:
        server.stop()
        files.shutdown()
        files.server_close()
        for path, _ in images.values():
            os.unlink(path)

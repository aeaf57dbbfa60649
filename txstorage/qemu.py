"""
The qemu tools the drivers and data paths lean on: qemu-img for image
metadata (create, info, map, resize, commit, rebase), qemu-nbd plus a small
NBD client for byte-level access to qcow2 images (qemu-img cannot read or
write through a pipe), and a direct parser of qcow2 headers so a scan does
not need one process per image.
"""

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

from txstorage.errors import StorageError

QEMU_IMG = "qemu-img"
QEMU_NBD = "qemu-nbd"

# Metadata-only commands finish fast; data-moving ones scale with the image.
SHORT_TIMEOUT = 120
LONG_TIMEOUT = 6 * 3600


def available():
    return shutil.which(QEMU_IMG) is not None


def run(args, error="SMGeneral", timeout=SHORT_TIMEOUT, what=None):
    """Run a qemu tool; failures become StorageError(error) carrying the
    command's stderr."""
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise StorageError.named(
            error, "%s timed out after %ss" % (what or args[0], timeout),
            _text(e.stderr))
    except OSError as e:
        raise StorageError.named(error, "cannot run %s: %s" % (args[0], e))
    if proc.returncode != 0:
        raise StorageError.named(
            error, "%s failed (exit %d)" % (what or " ".join(args[:2]),
                                            proc.returncode),
            _text(proc.stderr))
    return _text(proc.stdout)


def _text(b):
    if not b:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


# -- qemu-img -----------------------------------------------------------------

def img_create(path, fmt, size=None, backing=None, backing_fmt=None,
               options=None, error="VDICreate"):
    args = [QEMU_IMG, "create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-b", backing, "-F", backing_fmt or "qcow2"]
    if options:
        args += ["-o", ",".join("%s=%s" % kv for kv in options.items())]
    args.append(path)
    if size is not None:
        args.append(str(int(size)))
    run(args, error, what="qemu-img create")


def img_info(path, fmt=None, chain=False, error="VDILoad"):
    args = [QEMU_IMG, "info", "-U", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    if chain:
        args.append("--backing-chain")
    args.append(path)
    return json.loads(run(args, error, what="qemu-img info"))


def img_map(path, fmt=None, error="SMGeneral"):
    """qemu-img map entries: dicts with start, length, depth, present,
    zero, data (depth 0 is the top image of the chain)."""
    args = [QEMU_IMG, "map", "-U", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    args.append(path)
    return json.loads(run(args, error, timeout=LONG_TIMEOUT,
                          what="qemu-img map"))


def img_resize(path, fmt, size, error="VDIResize"):
    run([QEMU_IMG, "resize", "-q", "-f", fmt, path, str(int(size))], error,
        what="qemu-img resize")


def img_commit(path, fmt="qcow2", error="SMGeneral"):
    """Write the top image's data into its backing file; -d keeps the top
    image intact so a crash leaves two consistent files."""
    run([QEMU_IMG, "commit", "-q", "-d", "-f", fmt, path], error,
        timeout=LONG_TIMEOUT, what="qemu-img commit")


def img_rebase(path, backing, backing_fmt="qcow2", unsafe=False,
               fmt="qcow2", error="SMGeneral"):
    """Point path at a new backing file ("" for none).  Safe mode first
    copies into path whatever differs between the old and new chains."""
    args = [QEMU_IMG, "rebase", "-q", "-f", fmt]
    if unsafe:
        args.append("-u")
    args += ["-b", backing]
    if backing:
        args += ["-F", backing_fmt]
    args.append(path)
    run(args, error, timeout=SHORT_TIMEOUT if unsafe else LONG_TIMEOUT,
        what="qemu-img rebase")


def img_measure_empty(size, fmt="qcow2"):
    """Bytes an empty image of virtual size `size` needs on disk."""
    out = run([QEMU_IMG, "measure", "--output=json", "-O", fmt,
               "--size", str(int(size))], what="qemu-img measure")
    return int(json.loads(out)["required"])


# -- qcow2 headers ------------------------------------------------------------

QCOW2_MAGIC = b"QFI\xfb"


def read_qcow2_header(path):
    """(virtual_size, backing_file or None) of a qcow2 image, or None if
    the file is not qcow2.  Reads two small pieces of the file."""
    with open(path, "rb") as f:
        head = f.read(32)
        if len(head) < 32 or head[:4] != QCOW2_MAGIC:
            return None
        _, bf_offset, bf_size, _, size = struct.unpack(">IQIIQ", head[4:32])
        backing = None
        if bf_offset and bf_size:
            f.seek(bf_offset)
            backing = f.read(bf_size).decode("utf-8", "replace")
        return size, backing


# -- NBD ----------------------------------------------------------------------

NBD_MAGIC = 0x4E42444D41474943          # "NBDMAGIC"
NBD_OPTS_MAGIC = 0x49484156454F5054     # "IHAVEOPT"
NBD_REQUEST_MAGIC = 0x25609513
NBD_REPLY_MAGIC = 0x67446698
NBD_FLAG_FIXED_NEWSTYLE = 1
NBD_FLAG_NO_ZEROES = 2
NBD_OPT_EXPORT_NAME = 1
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_FLUSH = 0, 1, 2, 3
NBD_CMD_WRITE_ZEROES = 6
# qemu-nbd accepts up to 32 MiB per request; stay well inside that.
NBD_MAX_REQUEST = 4 << 20


class NBDError(StorageError):
    def __init__(self, message, err=0):
        self.errno = err
        StorageError.__init__(self, 202, message, name="SMGeneral")


class NBDClient:
    """A blocking fixed-newstyle NBD client over a Unix socket."""

    WRITE_DEPTH = 4

    def __init__(self, sock):
        self._sock = sock
        # Room for a whole request in the socket: fewer wakeups each way.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, NBD_MAX_REQUEST)
        self._handle = 0
        # Writes are not waited for one by one: up to WRITE_DEPTH are in
        # flight, and any other command first collects their replies.
        self._inflight = set()
        self.size = None
        self._handshake()

    def _recv(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._sock.recv_into(view[got:])
            if k == 0:
                raise NBDError("NBD server closed the connection")
            got += k
        return buf

    def _handshake(self):
        magic, opts, flags = struct.unpack(">QQH", self._recv(18))
        if magic != NBD_MAGIC or opts != NBD_OPTS_MAGIC:
            raise NBDError("not a newstyle NBD server")
        if not flags & NBD_FLAG_FIXED_NEWSTYLE:
            raise NBDError("NBD server is not fixed-newstyle")
        no_zeroes = flags & NBD_FLAG_NO_ZEROES
        self._sock.sendall(struct.pack(
            ">I", NBD_FLAG_FIXED_NEWSTYLE | no_zeroes))
        self._sock.sendall(struct.pack(">QII", NBD_OPTS_MAGIC,
                                       NBD_OPT_EXPORT_NAME, 0))
        self.size, self.flags = struct.unpack(">QH", self._recv(10))
        if not no_zeroes:
            self._recv(124)

    def _send(self, cmd, offset, length, payload=None, flags=0):
        self._handle += 1
        self._sock.sendall(struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, flags,
                                       cmd, self._handle, offset, length))
        if payload is not None:
            self._sock.sendall(payload)
        return self._handle

    def _drain(self, keep=0):
        """Collect write replies until at most `keep` are pending."""
        while len(self._inflight) > keep:
            magic, err, handle = struct.unpack(">IIQ", self._recv(16))
            if magic != NBD_REPLY_MAGIC or handle not in self._inflight:
                raise NBDError("bad NBD reply")
            self._inflight.discard(handle)
            if err:
                raise NBDError("NBD write failed: %s" % os.strerror(err),
                               err)

    def _write_request(self, cmd, offset, length, payload=None):
        self._inflight.add(self._send(cmd, offset, length, payload))
        self._drain(self.WRITE_DEPTH - 1)

    def _request(self, cmd, offset, length):
        self._drain()
        handle = self._send(cmd, offset, length)
        if cmd == NBD_CMD_DISC:
            return None
        magic, err, got = struct.unpack(">IIQ", self._recv(16))
        if magic != NBD_REPLY_MAGIC or got != handle:
            raise NBDError("bad NBD reply")
        if err:
            raise NBDError("NBD request failed: %s" % os.strerror(err), err)
        if cmd == NBD_CMD_READ:
            return self._recv(length)
        return None

    def pread(self, offset, length):
        """length bytes at offset (clipped to the export's end)."""
        length = max(0, min(length, self.size - offset))
        if length <= NBD_MAX_REQUEST:
            return bytes(self._request(NBD_CMD_READ, offset, length))
        out = bytearray()
        while length:
            n = min(length, NBD_MAX_REQUEST)
            out += self._request(NBD_CMD_READ, offset, n)
            offset += n
            length -= n
        return bytes(out)

    def pread_many(self, requests, depth=2):
        """Data of each (offset, length) request, in order, with up to
        `depth` requests in flight (qemu-nbd works on the next while we
        take the previous).  Lengths must fit one request."""
        self._drain()
        requests = iter(requests)
        pending = []                       # handles, oldest first
        early = {}                         # replies that overtook others
        wanted = {}
        exhausted = False
        while True:
            while not exhausted and len(pending) < depth:
                try:
                    offset, length = next(requests)
                except StopIteration:
                    exhausted = True
                    break
                length = max(0, min(length, self.size - offset))
                self._handle += 1
                self._sock.sendall(struct.pack(
                    ">IHHQQI", NBD_REQUEST_MAGIC, 0, NBD_CMD_READ,
                    self._handle, offset, length))
                pending.append(self._handle)
                wanted[self._handle] = length
            if not pending:
                return
            head = pending[0]
            while head not in early:
                magic, err, handle = struct.unpack(">IIQ", self._recv(16))
                if magic != NBD_REPLY_MAGIC or handle not in wanted:
                    raise NBDError("bad NBD reply")
                if err:
                    raise NBDError("NBD read failed: %s"
                                   % os.strerror(err), err)
                early[handle] = bytes(self._recv(wanted.pop(handle)))
            pending.pop(0)
            yield early.pop(head)

    def pwrite(self, offset, data):
        view = memoryview(data)
        while len(view):
            n = min(len(view), NBD_MAX_REQUEST)
            self._write_request(NBD_CMD_WRITE, offset, n, view[:n])
            offset += n
            view = view[n:]

    def write_zeroes(self, offset, length):
        while length:
            n = min(length, 1 << 30)
            self._write_request(NBD_CMD_WRITE_ZEROES, offset, n)
            offset += n
            length -= n

    def flush(self):
        self._request(NBD_CMD_FLUSH, 0, 0)

    def close(self):
        if self._sock is None:
            return
        try:
            self._request(NBD_CMD_DISC, 0, 0)
        except (OSError, NBDError):
            pass
        self._sock.close()
        self._sock = None


class NBDExport:
    """A private qemu-nbd serving one image on a Unix socket, and a client
    connected to it.  qemu-nbd exits when the client disconnects."""

    def __init__(self, path, fmt, read_only=True, start_timeout=30):
        self._dir = tempfile.mkdtemp(prefix="txs-nbd-")
        sockpath = os.path.join(self._dir, "s")
        args = [QEMU_NBD, "--socket=" + sockpath, "--aio=threads",
                "--discard=unmap"]
        if read_only:
            # Without image locking, so a VDI another process holds open
            # writable (a running VM) can still be read.
            args += ["--read-only", "--image-opts",
                     "driver=%s,file.driver=file,file.locking=off,"
                     "file.filename=%s" % (fmt, path.replace(",", ",,"))]
        else:
            # Writable exports serve scratch overlays: flushes are skipped
            # (twice the write speed) and close() fsyncs the file instead.
            args += ["--cache=unsafe", "--format=" + fmt, path]
        self._path = path
        self._read_only = read_only
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self.client = None
        try:
            self.client = NBDClient(self._connect(sockpath, start_timeout))
        except BaseException:
            self.close()
            raise
        self.size = self.client.size

    def _connect(self, sockpath, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = _text(self._proc.stderr.read())
                raise StorageError.named(
                    "VDIUnavailable", "qemu-nbd exited (%d)"
                    % self._proc.returncode, err)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sockpath)
                return s
            except OSError as e:
                s.close()
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                    raise
            if time.monotonic() > deadline:
                raise StorageError.named("VDIUnavailable",
                                         "qemu-nbd did not start")
            time.sleep(0.005)

    def close(self, sync=False):
        """Disconnect and reap qemu-nbd; sync=True then makes what it
        wrote durable (writable exports skip flushes)."""
        served = self.client is not None
        if served:
            self.client.close()
            self.client = None
        if self._proc is not None:
            if not served and self._proc.poll() is None:
                self._proc.terminate()
            try:
                self._proc.wait(timeout=SHORT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc.stderr.close()
            failed = self._proc.returncode != 0
            self._proc = None
            if served and sync and not self._read_only:
                if failed:
                    raise StorageError.named("VDILoad",
                                             "qemu-nbd failed on close")
                fd = os.open(self._path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

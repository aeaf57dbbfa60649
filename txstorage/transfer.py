"""
Moving disk contents in and out of VDIs, for the HTTP handlers
(/import_raw_vdi, /export_raw_vdi).  Everything here blocks: run it in a
thread.

Reads of raw images, and of qcow2 images whose data clusters all have a
place in a file (qemu-img map gives it; compressed clusters have none),
go straight to the files.  Other reads, and all writes, go through a
private qemu-nbd (qemu-img cannot read or write a pipe).

Imports never touch the VDI until the upload is complete and valid: the
data goes into a temporary qcow2 overlay on top of the VDI, and commit()
folds it in -- by renaming the overlay over the VDI when the VDI's own
layer is empty (a fresh VDI: no copy at all), else with qemu-img commit.
A truncated or corrupt upload is aborted and the overlay deleted.  The
overlay is flushed to disk in the background as it grows, so the sync
that makes a commit durable has little left to do.
"""

import bisect
import os
import struct
import threading
import uuid as uuidlib
from array import array

from txstorage import cbt, qcow2, qemu, vhd
from txstorage.errors import StorageError
from txstorage.files import unlink
from txstorage.vhd import DEFAULT_BLOCK_SIZE, VHDError

# Granularity of zero detection on writes: the qcow2 cluster size.
ZERO_GRAIN = 64 << 10
# Bytes written to an import's overlay between background flushes.
WRITEBACK_EVERY = 64 << 20


# -- reading ------------------------------------------------------------------

class _FileReader:
    # pread on a file descriptor: callers may read from several threads.
    concurrent = True

    def __init__(self, path, size):
        self._fd = os.open(path, os.O_RDONLY)
        self.size = size

    def pread(self, offset, length):
        length = max(0, min(length, self.size - offset))
        out = os.pread(self._fd, length, offset)
        if len(out) < length:
            # A raw image shorter than its recorded size reads as zeros.
            out += bytes(length - len(out))
        return out

    def pread_many(self, requests):
        for offset, length in requests:
            yield self.pread(offset, length)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _NBDReader:
    # One NBD connection: one read at a time.
    concurrent = False

    def __init__(self, path, fmt):
        self._export = qemu.NBDExport(path, fmt, read_only=True)
        self.size = self._export.size

    def pread(self, offset, length):
        return self._export.client.pread(offset, length)

    def pread_many(self, requests):
        return self._export.client.pread_many(requests)

    def close(self):
        self._export.close()


class _MappedReader:
    """A qcow2 chain read at the file offsets qemu-img map reports, with
    no qemu-nbd between: the image is held read-only for the reader's
    life, so its clusters stay where the map saw them."""

    concurrent = True

    def __init__(self, paths, entries, size):
        self._starts = [e["start"] for e in entries]
        self._entries = entries
        self.size = size
        self._fds = []
        try:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                self._fds.append(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, attach_info, entries):
        """The reader, or None when some data has no place in a file
        (compressed clusters) or the map names a layer we cannot see."""
        paths = _chain(attach_info)
        data = [e for e in entries if e["data"] and not e["zero"]]
        if any("offset" not in e or e.get("compressed")
               or e["depth"] >= len(paths) for e in data):
            return None
        # The map covers the whole virtual disk.
        size = entries[-1]["start"] + entries[-1]["length"] if entries \
            else 0
        return cls(paths, entries, size)

    def _pieces(self, offset, length):
        end = min(offset + length, self.size)
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while offset < end:
            e = self._entries[i] if i < len(self._entries) else None
            if e is None or offset < e["start"]:
                # Beyond the map, or a gap in it: nothing there.
                n = (end if e is None else min(end, e["start"])) - offset
                yield bytes(n)
            else:
                n = min(end, e["start"] + e["length"]) - offset
                if n <= 0:
                    i += 1
                    continue
                if e["data"] and not e["zero"]:
                    at = e["offset"] + offset - e["start"]
                    out = os.pread(self._fds[e["depth"]], n, at)
                    yield out + bytes(n - len(out))
                else:
                    yield bytes(n)
                i += 1
            offset += n

    def pread(self, offset, length):
        pieces = list(self._pieces(offset, max(0, length)))
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def pread_many(self, requests):
        for offset, length in requests:
            yield self.pread(offset, length)

    def close(self):
        while self._fds:
            os.close(self._fds.pop())


class RawReader:
    """The raw view of a VDI: pread(offset, length), or read() it
    sequentially like a file.  entries: the qemu-img map it read a qcow2
    image's layout from (None for raw images), for the caller to plan
    with instead of mapping the image again."""

    def __init__(self, attach_info):
        self.entries = None
        if attach_info.format == "raw":
            self._impl = _FileReader(attach_info.path,
                                     os.path.getsize(attach_info.path))
        else:
            self.entries = qemu.img_map(attach_info.path,
                                        attach_info.format)
            self._impl = (_MappedReader.open(attach_info, self.entries)
                          or _NBDReader(attach_info.path,
                                        attach_info.format))
        self.size = self._impl.size
        # Whether pread may be called from several threads at once.
        self.concurrent = self._impl.concurrent
        self._pos = 0

    def pread(self, offset, length):
        return self._impl.pread(offset, length)

    def iter_pieces(self, requests):
        """Data of each (offset, length) request, in order (reads
        overlap); lengths must fit one NBD request."""
        return self._impl.pread_many(requests)

    def iter_blocks(self, indices, block_size=DEFAULT_BLOCK_SIZE):
        """Data of the given blocks, in order (reads overlap)."""
        return self.iter_pieces(
            (idx * block_size, block_size) for idx in indices)

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.size - self._pos
        data = self.pread(self._pos, n)
        self._pos += len(data)
        return data

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self):
        return self._pos

    def close(self):
        self._impl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_raw_reader(attach_info):
    return RawReader(attach_info)


# -- writing ------------------------------------------------------------------

def _present(entry):
    """Whether a qemu-img map entry is set by its layer (data or zeros);
    without the "present" key (old qemu) assume it is: safe both ways."""
    return entry.get("present", entry["data"] or entry["zero"])


def _top_layer_empty(entries):
    return not any(e["depth"] == 0 and _present(e)
                   for e in entries)


def _all_zero(entries):
    return not any(e["data"] for e in entries)


class _Writeback:
    """Flushes a file being written to disk in the background, a little
    at a time, so the sync that makes an import durable at its end finds
    little left to write instead of the whole upload."""

    def __init__(self, path, every=WRITEBACK_EVERY):
        self._fd = os.open(path, os.O_RDONLY)
        self._every = every
        self._since = 0
        self._thread = None

    def wrote(self, n):
        self._since += n
        if self._since < self._every or (
                self._thread is not None and self._thread.is_alive()):
            return
        self._since = 0
        self._thread = threading.Thread(target=self._flush, daemon=True,
                                        name="writeback")
        self._thread.start()

    def _flush(self):
        try:
            os.fdatasync(self._fd)
        except OSError:
            # Only an early start: the final sync reports failures.
            pass

    def close(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RawWriter:
    """Writes to a VDI's raw view, staged in an overlay until commit().

    Use as a context manager: commit() on a clean exit, abort() when an
    exception escapes.  Zero pieces are not stored: skipped when the VDI
    reads as zeros already, else recorded as zero clusters.
    """

    def __init__(self, attach_info):
        if attach_info.read_only:
            raise StorageError.named("VDIUnavailable",
                                     "VDI %s is attached read-only"
                                     % attach_info.vdi_uuid)
        self.attach_info = attach_info
        self._target = attach_info.path
        self._format = attach_info.format
        entries = qemu.img_map(self._target, self._format)
        self._zeroed = _all_zero(entries)
        # A qcow2 VDI whose own layer is empty can simply be replaced.
        self._swap = self._format == "qcow2" and _top_layer_empty(entries)
        self._overlay = os.path.join(
            os.path.dirname(self._target),
            ".import-%s-%s.qcow2" % (attach_info.vdi_uuid,
                                     uuidlib.uuid4().hex[:8]))
        size = qemu.img_info(self._target, self._format)["virtual-size"]
        self._writeback = None
        try:
            qemu.img_create(self._overlay, "qcow2", size,
                            backing=os.path.basename(self._target),
                            backing_fmt=self._format, error="VDILoad")
            self._writeback = _Writeback(self._overlay)
            self._export = qemu.NBDExport(self._overlay, "qcow2",
                                          read_only=False)
        except BaseException:
            if self._writeback is not None:
                self._writeback.close()
            unlink(self._overlay)
            raise
        self.size = self._export.size
        self._client = self._export.client
        self._pos = 0
        self.bytes_written = 0
        self._closed = False

    def pwrite(self, offset, data):
        if self._closed:
            raise StorageError.named("SMGeneral", "writer is closed")
        end = offset + len(data)
        if offset < 0 or end > self.size:
            raise StorageError.named(
                "VDISize", "write of %d bytes at %d beyond the VDI's end "
                "(%d)" % (len(data), offset, self.size))
        view = memoryview(data)
        pos = 0
        run_start, run_zero = 0, None
        # Split at cluster boundaries into runs of zero / non-zero pieces.
        while pos < len(view):
            step = ZERO_GRAIN - (offset + pos) % ZERO_GRAIN
            piece = view[pos:pos + step]
            zero = vhd.is_zero(piece)
            if run_zero is None:
                run_zero = zero
            elif zero != run_zero:
                self._flush_run(offset + run_start, view[run_start:pos],
                                run_zero)
                run_start, run_zero = pos, zero
            pos += len(piece)
        if run_zero is not None:
            self._flush_run(offset + run_start, view[run_start:], run_zero)
        self.bytes_written += len(data)
        self._writeback.wrote(len(data))

    def _flush_run(self, offset, view, zero):
        if not zero:
            self._client.pwrite(offset, view)
        elif not self._zeroed:
            self._client.write_zeroes(offset, len(view))

    def write(self, data):
        """Sequential write at the current position."""
        self.pwrite(self._pos, data)
        self._pos += len(data)

    def write_zeroes(self, offset, length):
        if offset < 0 or offset + length > self.size:
            raise StorageError.named("VDISize", "zeroing beyond the end")
        if not self._zeroed:
            self._client.write_zeroes(offset, length)

    def commit(self):
        """Fold the staged writes into the VDI."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.flush()
            self._writeback.close()
            self._export.close(sync=True)
            if self.attach_info.cbt_log:
                # What the overlay holds is what this upload changed;
                # marked first, so a failed fold only over-reports.
                cbt.mark(self.attach_info.cbt_log, [
                    (e["start"], e["length"])
                    for e in qemu.img_map(self._overlay, "qcow2")
                    if e["depth"] == 0 and _present(e)])
            if self._swap:
                info = qemu.img_info(self._target, "qcow2")
                qemu.img_rebase(self._overlay,
                                info.get("backing-filename", ""),
                                backing_fmt=info.get(
                                    "backing-filename-format", "qcow2"),
                                unsafe=True, error="VDILoad")
                os.replace(self._overlay, self._target)
            else:
                qemu.img_commit(self._overlay, "qcow2", error="VDILoad")
                os.unlink(self._overlay)
        except BaseException:
            self._writeback.close()
            self._export.close()
            unlink(self._overlay)
            raise

    def abort(self):
        """Drop the staged writes; the VDI is untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writeback.close()
            self._export.close()
        finally:
            unlink(self._overlay)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def open_raw_writer(attach_info):
    return RawWriter(attach_info)


# -- imports ------------------------------------------------------------------

def import_raw(attach_info, chunks, expected_size=None):
    """Write a raw disk stream (an iterable of bytes) from offset 0.
    expected_size (e.g. the Content-Length): fewer bytes is a truncated
    upload and leaves the VDI as it was.  Returns the bytes written."""
    with open_raw_writer(attach_info) as w:
        for chunk in chunks:
            if chunk:
                w.write(chunk)
        if expected_size is not None and w.bytes_written != expected_size:
            raise StorageError.named(
                "VDIUnavailable", "truncated upload: %d of %d bytes"
                % (w.bytes_written, expected_size))
        return w.bytes_written


def import_vhd(attach_info, chunks):
    """Apply a VHD stream to the VDI: the blocks it holds are written, the
    rest of the VDI keeps its content.  VHDError on a corrupt or truncated
    stream, which leaves the VDI as it was."""
    reader = vhd.VHDStreamReader()
    with open_raw_writer(attach_info) as w:
        for chunk in chunks:
            writes = reader.feed(chunk)
            _check_vhd_size(reader, w)
            for offset, data in writes:
                w.pwrite(offset, data)
        for offset, data in reader.finish():
            w.pwrite(offset, data)
        _check_vhd_size(reader, w)
        return reader.bytes_written


def _check_vhd_size(reader, writer):
    size = reader.virtual_size
    if size is not None and size > writer.size:
        raise StorageError.named(
            "VDISize", "the VHD's disk (%d bytes) is larger than the VDI "
            "(%d bytes)" % (size, writer.size))


class ChunkedReader:
    """Parser of vhd-tool's "chunked" raw body: records of a little-endian
    u64 offset, a u32 length and that many bytes; length 0 ends it.
    feed() returns (offset, data) writes as the bytes arrive."""

    _HEAD = struct.Struct("<QI")

    def __init__(self):
        self._buf = bytearray()
        self._offset = None
        self._left = 0
        self.done = False

    def feed(self, data):
        if self.done:
            if data:
                raise StorageError.named("InvalidArg",
                                         "data after the end record")
            return []
        self._buf += data
        out = []
        while True:
            if self._offset is None:
                if len(self._buf) < self._HEAD.size:
                    break
                self._offset, self._left = self._HEAD.unpack_from(self._buf)
                del self._buf[:self._HEAD.size]
                if self._left == 0:
                    self.done = True
                    if self._buf:
                        raise StorageError.named(
                            "InvalidArg", "data after the end record")
                    break
            n = min(self._left, len(self._buf))
            if n == 0:
                break
            out.append((self._offset, bytes(self._buf[:n])))
            del self._buf[:n]
            self._offset += n
            self._left -= n
            if self._left == 0:
                self._offset = None
        return out

    def finish(self):
        if not self.done:
            raise StorageError.named("InvalidArg",
                                     "truncated chunked stream: no end "
                                     "record")
        return []


def import_chunked(attach_info, chunks):
    reader = ChunkedReader()
    with open_raw_writer(attach_info) as w:
        for chunk in chunks:
            for offset, data in reader.feed(chunk):
                w.pwrite(offset, data)
        reader.finish()
        return w.bytes_written


# -- extents ------------------------------------------------------------------

def _merge(extents):
    out = []
    for start, length in sorted(extents):
        if out and start <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], start + length)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((start, length))
    return out


def allocated_extents(attach_info, entries=None):
    """[(offset, length)] of the VDI that may hold non-zero data (the
    rest reads as zeros), from qemu-img map over the whole chain."""
    if entries is None:
        entries = qemu.img_map(attach_info.path, attach_info.format)
    return _merge((e["start"], e["length"]) for e in entries if e["data"])


def _chain(attach_info):
    info = qemu.img_info(attach_info.path, attach_info.format, chain=True)
    return [os.path.realpath(i["filename"]) for i in info]


def _layers_above(attach_info, depth, entries=None):
    """Extents set by the images above `depth` in the VDI's chain (zeroed
    ones included: they differ from what lies below)."""
    if entries is None:
        entries = qemu.img_map(attach_info.path, attach_info.format)
    return [(e["start"], e["length"]) for e in entries
            if e["depth"] < depth and _present(e)]


def candidate_blocks(attach_info, base=None, block_size=DEFAULT_BLOCK_SIZE,
                     entries=None, base_entries=None):
    """Blocks that may differ from base (None: that may hold data).

    When the two share an ancestor image (base is in the VDI's chain, or
    they are siblings under a snapshot's base copy), only the layers
    above the common ancestor can differ.  Otherwise every block with data
    in either is a candidate.  entries, base_entries: their qemu-img maps
    when the caller has them (RawReader.entries)."""
    if base is None:
        return vhd.blocks_of_extents(allocated_extents(attach_info, entries),
                                     block_size)
    mine, theirs = _chain(attach_info), _chain(base)
    common = next((p for p in mine if p in set(theirs)), None)
    if common is None:
        ext = (allocated_extents(attach_info, entries)
               + allocated_extents(base, base_entries))
    else:
        ext = (_layers_above(attach_info, mine.index(common), entries)
               + _layers_above(base, theirs.index(common), base_entries))
    return vhd.blocks_of_extents(_merge(ext), block_size)


# -- exports ------------------------------------------------------------------

def _blocks_to_send(attach_info, reader, base, block_size, detect_zeros):
    """The blocks an image export of the VDI holds: those that differ from
    base (AttachInfo of an earlier snapshot; blocks that became zero
    included), or without base those with data, less the ones that read
    as zeros when detect_zeros (one more read of the allocated data)."""
    if base is None:
        blocks = candidate_blocks(attach_info, None, block_size,
                                  reader.entries)
        if not detect_zeros:
            return blocks
        pairs = zip(blocks, reader.iter_blocks(blocks, block_size))
        return [idx for idx, data in pairs if not vhd.is_zero(data)]
    with open_raw_reader(base) as base_reader:
        blocks = candidate_blocks(attach_info, base, block_size,
                                  reader.entries, base_reader.entries)
        pairs = zip(blocks, reader.iter_blocks(blocks, block_size),
                    base_reader.iter_blocks(blocks, block_size))
        return [idx for idx, mine, theirs in pairs
                if mine != _pad(theirs, len(mine))]


def export_vhd(attach_info, base=None, block_size=DEFAULT_BLOCK_SIZE,
               detect_zeros=True):
    """The VDI as a dynamic VHD: an iterator of byte strings.

    base: only blocks that differ from it are present, so unallocated
    blocks mean "as in base" (xapi's export_raw_vdi?format=vhd&base=).
    Blocks qemu-img map shows unallocated or zero are never read.  The
    planning runs on the first next(); nothing is held beyond a block or
    two, and closing the iterator stops the readers."""
    with open_raw_reader(attach_info) as reader:
        size = reader.size
        vsize = -(-size // vhd.SECTOR) * vhd.SECTOR
        if vsize > vhd.MAX_VHD_SIZE:
            raise VHDError("VDI of %d bytes is too large for VHD" % size)
        blocks = _blocks_to_send(attach_info, reader, base, block_size,
                                 detect_zeros)
        writer = vhd.VHDWriter(vsize, blocks, block_size)
        yield writer.header()
        for idx, data in zip(blocks, reader.iter_blocks(blocks,
                                                        block_size)):
            yield from writer.block(idx, data)
        yield writer.footer()


def export_qcow2(attach_info, base=None, detect_zeros=True):
    """The VDI as a qcow2 v3 image (64 KiB clusters): an iterator of byte
    strings holding only the clusters with data, or with base those that
    differ from it (unallocated clusters then mean "as in base")."""
    cs = qcow2.CLUSTER_SIZE
    with open_raw_reader(attach_info) as reader:
        clusters = array("q", _blocks_to_send(attach_info, reader, base, cs,
                                              detect_zeros))
        writer = qcow2.QCOW2Writer(reader.size, clusters)
        yield writer.header()
        for idx, data in zip(clusters, reader.iter_blocks(clusters, cs)):
            yield from writer.cluster(idx, data)


def _pad(data, n):
    return data if len(data) >= n else bytes(data) + bytes(n - len(data))


def _raw_plan(extents, size, chunk_size):
    """(offset, length, is_data) pieces of a raw export: data in pieces
    of at most chunk_size, each hole as a single entry."""
    pos = 0
    for start, length in extents + [(size, 0)]:
        start = min(start, size)
        if pos < start:
            yield pos, start - pos, False
            pos = start
        end = min(start + length, size)
        while pos < end:
            n = min(chunk_size, end - pos)
            yield pos, n, True
            pos += n


def export_raw(attach_info, chunk_size=1 << 20):
    """The VDI's raw bytes as an iterator; holes are produced without
    reading them.  Data pieces are requested ahead (pread_many), so the
    image is read while the previous piece is on its way."""
    chunk_size = min(chunk_size, qemu.NBD_MAX_REQUEST)
    reader = open_raw_reader(attach_info)
    try:
        extents = allocated_extents(attach_info, reader.entries)
        size = reader.size
        data = reader.iter_pieces(
            (offset, n) for offset, n, is_data
            in _raw_plan(extents, size, chunk_size) if is_data)
        for offset, n, is_data in _raw_plan(extents, size, chunk_size):
            if is_data:
                yield next(data)
                continue
            while n:
                k = min(chunk_size, n)
                yield bytes(k)
                n -= k
    finally:
        reader.close()

"""
qcow2 as a stream: a writer that emits a version 3 image in one
sequential pass, and a reader that turns an arriving image into
(offset, data) writes of the disk's raw view.

Writer layout (all 64 KiB clusters, 16-bit refcounts):
header | L1 table | refcount table | refcount blocks | then, for each
L1 entry in use, its L2 table followed by its data clusters in disk
order.  The clusters are known before the first byte goes out (the
caller plans them), so every offset is computed up front; a reader of
our own images meets each L2 table just before the data it maps.

Reader: the stream is taken cluster by cluster.  The header names the L1
table; the L1 names the L2 tables; an L2 table names data clusters.  A
cluster whose role is not known yet when it passes (an L2 table or data
placed before the table that names it, or refcount and other metadata)
is put aside in an anonymous spool file and looked at again once the
stream has ended, so any valid layout is accepted in bounded memory.
"""

import bisect
import os
import struct
import tempfile

MAGIC = b"QFI\xfb"
CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
REFCOUNT_ORDER = 4          # 16-bit refcounts
HEADER_LENGTH = 104

COPIED = 1 << 63            # refcount is exactly one
COMPRESSED = 1 << 62
ZERO_FLAG = 1               # v3: the cluster reads as zeros
OFFSET_MASK = 0x00FFFFFFFFFFFE00

# Incompatible feature bits.
INCOMPAT_DIRTY = 1
INCOMPAT_CORRUPT = 2
INCOMPAT_DATA_FILE = 4
INCOMPAT_COMPRESSION = 8
INCOMPAT_EXTL2 = 16

_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")      # up to snapshots_offset
_HEADER_V3 = struct.Struct(">QQQII")            # features .. header_length


class QCOW2Error(ValueError):
    """A qcow2 stream that is malformed, truncated or uses a feature a
    raw view cannot be made from here (encryption, compression)."""


def _ceil_div(a, b):
    return -(-a // b)


# -- writing ------------------------------------------------------------------

class QCOW2Writer:
    """A qcow2 image of ``virtual_size`` bytes holding data in the given
    clusters (indices of 64 KiB disk clusters, sorted).  header() is the
    image's metadata; then cluster(idx, data) for each planned cluster in
    order returns what to send for it (an L2 table may come first)."""

    def __init__(self, virtual_size, clusters):
        self.virtual_size = virtual_size
        self.clusters = clusters
        per_l2 = CLUSTER_SIZE // 8
        self.l1_size = max(1, _ceil_div(virtual_size, per_l2 * CLUSTER_SIZE))
        # L1 entries in use, in order, with how many data clusters each.
        groups = []
        for idx in clusters:
            g = idx // per_l2
            if groups and groups[-1][0] == g:
                groups[-1][1] += 1
            else:
                groups.append([g, 1])
        l1_clusters = _ceil_div(self.l1_size * 8, CLUSTER_SIZE)
        fixed = 1 + l1_clusters + len(groups) + len(clusters)
        per_block = CLUSTER_SIZE * 8 // (1 << REFCOUNT_ORDER)
        blocks = table = 0
        while True:
            total = fixed + table + blocks
            need_blocks = _ceil_div(total, per_block)
            need_table = _ceil_div(need_blocks * 8, CLUSTER_SIZE)
            if (need_blocks, need_table) == (blocks, table):
                break
            blocks, table = need_blocks, need_table
        self.total_clusters = total
        self.l1_offset = CLUSTER_SIZE
        self.refcount_table_offset = self.l1_offset + l1_clusters * \
            CLUSTER_SIZE
        self.refcount_table_clusters = table
        self.refcount_blocks_offset = self.refcount_table_offset + \
            table * CLUSTER_SIZE
        self.refcount_blocks = blocks
        # Where each group's L2 table goes; its data follows it.
        self._l2_at = {}
        at = self.refcount_blocks_offset + blocks * CLUSTER_SIZE
        for g, count in groups:
            self._l2_at[g] = at
            at += (1 + count) * CLUSTER_SIZE
        self.size = at
        self._group = None
        self._next = None

    def _header(self):
        head = _HEADER.pack(
            MAGIC, 3, 0, 0, CLUSTER_BITS, self.virtual_size, 0,
            self.l1_size, self.l1_offset, self.refcount_table_offset,
            self.refcount_table_clusters, 0, 0)
        head += _HEADER_V3.pack(0, 0, 0, REFCOUNT_ORDER, HEADER_LENGTH)
        # No header extensions: the end marker (type 0, length 0).
        head += bytes(8)
        return head + bytes(CLUSTER_SIZE - len(head))

    def header(self):
        """Header, L1 table, refcount table and refcount blocks."""
        out = bytearray(self._header())
        l1 = bytearray(_ceil_div(self.l1_size * 8, CLUSTER_SIZE) *
                       CLUSTER_SIZE)
        for g, at in self._l2_at.items():
            struct.pack_into(">Q", l1, g * 8, at | COPIED)
        out += l1
        table = bytearray(self.refcount_table_clusters * CLUSTER_SIZE)
        for i in range(self.refcount_blocks):
            struct.pack_into(">Q", table, i * 8,
                             self.refcount_blocks_offset + i * CLUSTER_SIZE)
        out += table
        # Every cluster of the image is used once.
        ones = struct.pack(">H", 1) * self.total_clusters
        blocks = self.refcount_blocks * CLUSTER_SIZE
        out += ones + bytes(blocks - len(ones))
        return bytes(out)

    def cluster(self, idx, data):
        """The bytes that place disk cluster ``idx`` (data shorter than a
        cluster, at the disk's end, is padded)."""
        per_l2 = CLUSTER_SIZE // 8
        g = idx // per_l2
        pieces = []
        if g != self._group:
            self._group = g
            at = self._l2_at[g]
            first = at + CLUSTER_SIZE
            l2 = bytearray(CLUSTER_SIZE)
            for n, i in enumerate(self._group_clusters(g)):
                struct.pack_into(">Q", l2, (i % per_l2) * 8,
                                 (first + n * CLUSTER_SIZE) | COPIED)
            pieces.append(bytes(l2))
        if len(data) < CLUSTER_SIZE:
            data = bytes(data) + bytes(CLUSTER_SIZE - len(data))
        pieces.append(data)
        return pieces

    def _group_clusters(self, g):
        per_l2 = CLUSTER_SIZE // 8
        lo = bisect.bisect_left(self.clusters, g * per_l2)
        hi = bisect.bisect_left(self.clusters, (g + 1) * per_l2)
        return self.clusters[lo:hi]


# -- reading ------------------------------------------------------------------

class QCOW2StreamReader:
    """Parser of a qcow2 image arriving in order: feed(data) returns the
    (offset, data) writes it completes, finish() the rest (from the
    spool).  Clusters the image leaves unallocated produce no write, so
    the disk under them keeps its content (an image made against a base
    applies onto it); zero clusters produce zeros."""

    def __init__(self, spool_dir=None):
        self._buf = bytearray()
        self._pos = 0               # stream offset of _buf[0]
        self._cluster_size = None
        self.virtual_size = None
        self.version = None
        self._l1_offset = self._l1_bytes = None
        self._l1 = bytearray()
        self._l2 = {}               # host offset -> guest offset it maps
        self._data = {}             # host offset -> guest offset
        self._spooled = {}          # host offset -> spool position
        self._spool = None
        self._spool_dir = spool_dir
        self.bytes_written = 0

    # header

    def _parse_header(self):
        if len(self._buf) < _HEADER.size:
            return False
        (magic, version, _bf_off, _bf_size, bits, size, crypt, l1_size,
         l1_off, _rt_off, _rt_clusters, _nsnap, _snap_off) = \
            _HEADER.unpack_from(self._buf)
        if magic != MAGIC:
            raise QCOW2Error("not a qcow2 image")
        if version not in (2, 3):
            raise QCOW2Error("qcow2 version %d" % version)
        if not 9 <= bits <= 21:
            raise QCOW2Error("cluster size 2^%d" % bits)
        if crypt:
            raise QCOW2Error("encrypted qcow2 images are not supported")
        if version == 3:
            need = _HEADER.size + _HEADER_V3.size
            if len(self._buf) < need:
                return False
            incompat, _c, _a, _order, _hlen = _HEADER_V3.unpack_from(
                self._buf, _HEADER.size)
            if incompat & INCOMPAT_CORRUPT:
                raise QCOW2Error("the image is marked corrupt")
            if incompat & INCOMPAT_DATA_FILE:
                raise QCOW2Error("images with an external data file are "
                                 "not supported")
            if incompat & INCOMPAT_EXTL2:
                raise QCOW2Error("extended L2 entries are not supported")
            if incompat & ~(INCOMPAT_DIRTY | INCOMPAT_COMPRESSION):
                raise QCOW2Error("unknown incompatible features %#x"
                                 % incompat)
        cs = 1 << bits
        per_l2 = cs // 8
        if l1_size < _ceil_div(size, per_l2 * cs) or l1_size > 1 << 25:
            raise QCOW2Error("L1 table of %d entries for %d bytes"
                             % (l1_size, size))
        if l1_off % cs or l1_off < cs:
            raise QCOW2Error("L1 table at %d" % l1_off)
        self.version = version
        self._cluster_size = cs
        self.virtual_size = size
        self._l1_offset = l1_off
        self._l1_bytes = l1_size * 8
        return True

    # clusters

    def feed(self, data):
        self._buf += data
        out = []
        if self._cluster_size is None:
            if not self._parse_header():
                return out
        cs = self._cluster_size
        while len(self._buf) >= cs:
            piece = bytes(self._buf[:cs])
            del self._buf[:cs]
            self._cluster(self._pos, piece, out, spool=True)
            self._pos += cs
        return out

    def _cluster(self, host, piece, out, spool):
        """Handle the cluster at host offset ``host``; True if its role
        was known."""
        cs = self._cluster_size
        l1_end = self._l1_offset + _ceil_div(self._l1_bytes, cs) * cs
        if host == 0:
            return True
        if self._l1_offset <= host < l1_end:
            self._take_l1(host, piece)
            return True
        guest = self._l2.pop(host, None)
        if guest is not None:
            self._take_l2(guest, piece, out)
            return True
        guest = self._data.pop(host, None)
        if guest is not None:
            self._emit(out, guest, piece)
            return True
        if spool:
            self._put_aside(host, piece)
        return False

    def _take_l1(self, host, piece):
        cs = self._cluster_size
        start = host - self._l1_offset
        entries = piece[:max(0, self._l1_bytes - start)]
        per_l2 = cs // 8
        for i in range(0, len(entries), 8):
            (entry,) = struct.unpack_from(">Q", entries, i)
            at = entry & OFFSET_MASK
            if at:
                if at % cs:
                    raise QCOW2Error("L2 table at %d is not cluster "
                                     "aligned" % at)
                # One already passed is in the spool.
                self._l2[at] = (start + i) // 8 * per_l2 * cs

    def _take_l2(self, guest, piece, out):
        cs = self._cluster_size
        for i in range(0, cs, 8):
            (entry,) = struct.unpack_from(">Q", piece, i)
            if not entry:
                continue
            at = guest + (i // 8) * cs
            if at >= self.virtual_size:
                continue
            if entry & COMPRESSED:
                raise QCOW2Error("compressed clusters are not supported")
            host = entry & OFFSET_MASK
            if self.version == 3 and entry & ZERO_FLAG:
                self._emit(out, at, bytes(cs))
            elif host:
                if host % cs:
                    raise QCOW2Error("data cluster at %d is not cluster "
                                     "aligned" % host)
                self._data[host] = at

    def _emit(self, out, guest, piece):
        n = min(len(piece), self.virtual_size - guest)
        if n > 0:
            out.append((guest, piece[:n] if n < len(piece) else piece))
            self.bytes_written += n

    # the spool

    def _put_aside(self, host, piece):
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=self._spool_dir)
        pos = self._spool.seek(0, os.SEEK_END)
        self._spool.write(piece)
        self._spooled[host] = pos

    def finish(self):
        """The stream has ended: the writes still owed, from the spool.
        QCOW2Error if something the image maps never came."""
        out = []
        if self._cluster_size is None:
            if self._spool is not None:
                self._spool.close()
            raise QCOW2Error("truncated qcow2 image: no header")
        cs = self._cluster_size
        if self._buf:
            piece = bytes(self._buf) + bytes(cs - len(self._buf))
            self._buf.clear()
            self._cluster(self._pos, piece, out, spool=True)
            self._pos += cs
        yield from out
        out.clear()
        try:
            for _ in range(3):
                # L2 tables, then what they map; a third pass is spare.
                for host in sorted(set(self._spooled) &
                                   (set(self._l2) | set(self._data))):
                    self._spool.seek(self._spooled.pop(host))
                    self._cluster(host, self._spool.read(cs), out,
                                  spool=False)
                    yield from out
                    out.clear()
            if self._l1_offset + self._l1_bytes > self._pos:
                raise QCOW2Error("truncated qcow2 image: the L1 table is "
                                 "cut")
            missing = self._l2 or self._data
            if missing:
                raise QCOW2Error("truncated qcow2 image: nothing at %d"
                                 % min(missing))
        finally:
            if self._spool is not None:
                self._spool.close()
                self._spool = None


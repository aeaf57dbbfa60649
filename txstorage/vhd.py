"""
VHD (Microsoft Virtual Hard Disk v1.0, as blktap and vhd-util use it):
a streaming reader and writer in pure Python.

Layout of a dynamic or differencing VHD as written by vhd-util, qemu and
us:  footer copy (512) | dynamic header (1024) | BAT | [parent locators] |
blocks | footer (512).  A block is a sector bitmap (one bit per 512-byte
sector, padded to a sector) followed by block_size bytes of data.  All
integers are big-endian.

Reader side: VHDStreamReader consumes a byte stream piece by piece
(feed/finish) and returns (offset, data) writes for the disk's raw view,
block by block, holding at most one block in memory.  Blocks are handled in
file order, so the stream never needs to seek.

Writer side: VHDWriter emits a dynamic VHD whose BAT is known up front (the
caller passes the indices of the blocks it will write); stream_vhd() wraps
it with a planning pass that drops all-zero blocks (or blocks equal to a
base image's, for differential exports) so they are neither stored nor
sent.
"""

import errno
import os
import struct
import sys
import time
import uuid as uuidlib
from array import array
from dataclasses import dataclass

SECTOR = 512
FOOTER_SIZE = 512
HEADER_SIZE = 1024
DEFAULT_BLOCK_SIZE = 2 << 20
# The largest VHD vhd-util and xapi accept (the format stops at ~2 TiB).
MAX_VHD_SIZE = 2040 << 30

COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING = 2, 3, 4
DISK_TYPE_NAMES = {DISK_FIXED: "fixed", DISK_DYNAMIC: "dynamic",
                   DISK_DIFFERENCING: "differencing"}
UNALLOCATED = 0xFFFFFFFF
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
VERSION = 0x00010000
# Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z).
VHD_EPOCH = 946684800
# qemu takes the size from the footer's current_size unless the creator
# is "vpc " or "qemu"; blktap writes "tap\0".
CREATOR_APP = b"tap\x00"
CREATOR_VERSION = 0x00010003
# A BAT of more entries than this is not a disk xapi would handle.
MAX_BAT_ENTRIES = 1 << 22

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
_HEADER = struct.Struct(">8sQQIIII16sII512s")
_LOCATOR = struct.Struct(">IIIIQ")


class VHDError(ValueError):
    """A VHD that is malformed, corrupt or truncated."""


def _checksum(data, skip_at):
    """One's complement of the byte sum, the 4-byte checksum field (at
    skip_at) counting as zero."""
    total = sum(data) - sum(data[skip_at:skip_at + 4])
    return ~total & 0xFFFFFFFF


def _zeros(n, _cache={}):
    z = _cache.get(n)
    if z is None:
        z = _cache[n] = bytes(n)
    return z


def is_zero(data):
    if isinstance(data, memoryview):
        # A memoryview compares item by item; a copy and a memcmp are
        # some fifty times faster.  Data that is not zero mostly shows
        # it in its first bytes: look there before copying it all.
        head = data[:64].tobytes()
        if head != _zeros(len(head)):
            return False
        data = data.tobytes()
    return data == _zeros(len(data))


def chs_geometry(size):
    """(cylinders, heads, sectors per track) per the VHD specification."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


# -- structures ---------------------------------------------------------------

@dataclass
class Footer:
    current_size: int
    disk_type: int
    data_offset: int = NO_DATA_OFFSET
    original_size: int = None
    timestamp: int = 0               # seconds since the VHD epoch
    uuid: bytes = b"\0" * 16
    creator_app: bytes = CREATOR_APP
    creator_version: int = CREATOR_VERSION
    creator_os: bytes = b"\0\0\0\0"
    geometry: tuple = None
    features: int = 2
    version: int = VERSION
    saved_state: int = 0

    def pack(self):
        c, h, s = self.geometry or chs_geometry(self.current_size)
        orig = (self.current_size if self.original_size is None
                else self.original_size)
        raw = bytearray(_FOOTER.pack(
            COOKIE, self.features, self.version, self.data_offset,
            self.timestamp, self.creator_app, self.creator_version,
            self.creator_os, orig, self.current_size, c, h, s,
            self.disk_type, 0, self.uuid, self.saved_state))
        raw += bytes(FOOTER_SIZE - len(raw))
        struct.pack_into(">I", raw, 64, _checksum(raw, 64))
        return bytes(raw)

    @classmethod
    def unpack(cls, raw, where="footer"):
        if len(raw) < FOOTER_SIZE:
            raise VHDError("truncated VHD: %s is %d bytes, not %d"
                           % (where, len(raw), FOOTER_SIZE))
        raw = bytes(raw[:FOOTER_SIZE])
        (cookie, features, version, data_offset, timestamp, app, app_ver,
         host_os, orig, cur, c, h, s, disk_type, checksum, uid,
         saved) = _FOOTER.unpack_from(raw)
        if cookie != COOKIE:
            raise VHDError("bad VHD %s: cookie %r, expected %r"
                           % (where, cookie, COOKIE))
        want = _checksum(raw, 64)
        if checksum != want:
            raise VHDError("bad VHD %s: checksum 0x%08x, computed 0x%08x"
                           % (where, checksum, want))
        if version >> 16 != 1:
            raise VHDError("unsupported VHD version 0x%08x in %s"
                           % (version, where))
        if disk_type not in DISK_TYPE_NAMES:
            raise VHDError("unsupported VHD disk type %d in %s"
                           % (disk_type, where))
        return cls(current_size=cur, disk_type=disk_type,
                   data_offset=data_offset, original_size=orig,
                   timestamp=timestamp, uuid=uid, creator_app=app,
                   creator_version=app_ver, creator_os=host_os,
                   geometry=(c, h, s), features=features, version=version,
                   saved_state=saved)


@dataclass
class Header:
    table_offset: int
    max_table_entries: int
    block_size: int = DEFAULT_BLOCK_SIZE
    parent_uuid: bytes = b"\0" * 16
    parent_timestamp: int = 0
    parent_name: str = ""
    locators: tuple = ()     # (platform code, space, length, offset) each
    version: int = VERSION

    def pack(self):
        raw = bytearray(_HEADER.pack(
            HEADER_COOKIE, NO_DATA_OFFSET, self.table_offset, self.version,
            self.max_table_entries, self.block_size, 0, self.parent_uuid,
            self.parent_timestamp, 0,
            self.parent_name.encode("utf-16-be")[:512].ljust(512, b"\0")))
        for code, space, length, offset in self.locators[:8]:
            raw += _LOCATOR.pack(code, space, length, 0, offset)
        raw += bytes(HEADER_SIZE - len(raw))
        struct.pack_into(">I", raw, 36, _checksum(raw, 36))
        return bytes(raw)

    @classmethod
    def unpack(cls, raw):
        if len(raw) < HEADER_SIZE:
            raise VHDError("truncated VHD: dynamic header is %d bytes"
                           % len(raw))
        raw = bytes(raw[:HEADER_SIZE])
        (cookie, _, table_offset, version, entries, block_size, checksum,
         puid, pts, _, pname) = _HEADER.unpack_from(raw)
        if cookie != HEADER_COOKIE:
            raise VHDError("bad VHD dynamic header: cookie %r, expected %r"
                           % (cookie, HEADER_COOKIE))
        want = _checksum(raw, 36)
        if checksum != want:
            raise VHDError("bad VHD dynamic header: checksum 0x%08x, "
                           "computed 0x%08x" % (checksum, want))
        if (block_size < SECTOR or block_size & (block_size - 1)
                or block_size > (256 << 20)):
            raise VHDError("bad VHD block size %d" % block_size)
        locators = []
        for i in range(8):
            code, space, length, _, offset = _LOCATOR.unpack_from(
                raw, 576 + 24 * i)
            if code:
                locators.append((code, space, length, offset))
        name = pname.decode("utf-16-be", "replace").rstrip("\0")
        return cls(table_offset=table_offset, max_table_entries=entries,
                   block_size=block_size, parent_uuid=puid,
                   parent_timestamp=pts, parent_name=name,
                   locators=tuple(locators), version=version)


def bitmap_size(block_size):
    """Bytes of the sector bitmap in front of each block."""
    nbytes = block_size // SECTOR // 8
    return -(-nbytes // SECTOR) * SECTOR


def now_timestamp():
    return max(0, int(time.time()) - VHD_EPOCH)


# -- reader -------------------------------------------------------------------

class VHDStreamReader:
    """Decode a VHD arriving as a byte stream.

    feed(data) returns the writes it made possible, a list of
    (offset, bytes) in the disk's raw view; finish() checks the stream was
    complete and returns the last ones.  Offsets ascend within one block.

    Dynamic disks: every allocated block is returned in full (sectors whose
    bitmap bit is clear read as zeros); unallocated blocks are not
    returned, so applying the writes to a zeroed disk gives the image.
    Differencing disks: only the sectors present in this image are
    returned; apply them onto the parent's content.  Fixed disks: the data
    is passed through and the footer is checked at the end.
    """

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0              # stream offset of self._buf[0]
        self._state = self._st_footer
        self._want = FOOTER_SIZE   # bytes the current state needs
        self.footer = None
        self.header = None
        self._blocks = []          # [(file offset, block index)] ascending
        self._next = 0             # index into _blocks
        self._tail = b""
        self._done = False
        self.bytes_written = 0     # payload bytes handed out

    # -- public ------------------------------------------------------------

    @property
    def virtual_size(self):
        return self.footer.current_size if self.footer else None

    @property
    def disk_type(self):
        return self.footer.disk_type if self.footer else None

    @property
    def block_size(self):
        return self.header.block_size if self.header else None

    @property
    def parent_uuid(self):
        if self.header and self.footer.disk_type == DISK_DIFFERENCING:
            return str(uuidlib.UUID(bytes=self.header.parent_uuid))
        return None

    @property
    def parent_name(self):
        return self.header.parent_name if self.header else None

    def feed(self, data):
        if self._done:
            raise VHDError("data fed after finish()")
        self._buf += data
        out = []
        while self._state is not None and len(self._buf) >= self._want:
            self._state(out)
        return out

    def finish(self):
        """Validate the end of the stream; VHDError if it is incomplete."""
        if self._done:
            return []
        self._done = True
        out = []
        if self._state == self._st_fixed:
            self._finish_fixed(out)
            return out
        if self.footer is None:
            raise VHDError("truncated VHD: %d bytes, no footer"
                           % (self._pos + len(self._buf)))
        if self._state not in (self._st_tail, None):
            end = self._pos + len(self._buf)
            if self._next < len(self._blocks):
                off, idx = self._blocks[self._next]
                raise VHDError(
                    "truncated VHD: stream ends at byte %d, block %d (%d of "
                    "%d allocated) expected at byte %d"
                    % (end, idx, self._next + 1, len(self._blocks), off))
            raise VHDError("truncated VHD: stream ends at byte %d, before "
                           "the end of the metadata" % end)
        tail = (self._tail + bytes(self._buf))[-FOOTER_SIZE:]
        if len(tail) < FOOTER_SIZE:
            raise VHDError("truncated VHD: no footer after the last block")
        last = Footer.unpack(tail, "trailing footer")
        if (last.current_size != self.footer.current_size
                or last.disk_type != self.footer.disk_type
                or last.uuid != self.footer.uuid):
            raise VHDError("VHD trailing footer does not match the footer "
                           "copy at offset 0")
        return out

    # -- states ------------------------------------------------------------

    def _take(self, n):
        with memoryview(self._buf) as view:
            chunk = bytes(view[:n])
        del self._buf[:n]
        self._pos += n
        return chunk

    def _skip_to(self, offset, state, want):
        """Discard input up to stream offset `offset`, then run state."""
        if offset < self._pos:
            raise VHDError("VHD structure at byte %d overlaps data already "
                           "read (stream at byte %d)" % (offset, self._pos))

        def skipping(out):
            n = min(offset - self._pos, len(self._buf))
            del self._buf[:n]
            self._pos += n
            if self._pos == offset:
                self._state, self._want = state, want
            else:
                self._want = 1
        self._state, self._want = skipping, 0

    def _st_footer(self, out):
        raw = self._take(FOOTER_SIZE)
        if raw[:8] != COOKIE:
            # No footer copy up front: only a fixed disk looks like this.
            self._fixed_start(raw, out)
            return
        self.footer = Footer.unpack(raw, "footer")
        if self.footer.disk_type == DISK_FIXED:
            raise VHDError("fixed VHD with a footer at offset 0")
        if self.footer.current_size % SECTOR:
            raise VHDError("VHD size %d is not a multiple of %d"
                           % (self.footer.current_size, SECTOR))
        if self.footer.data_offset < FOOTER_SIZE:
            raise VHDError("bad VHD data offset %d"
                           % self.footer.data_offset)
        self._skip_to(self.footer.data_offset, self._st_header, HEADER_SIZE)

    def _st_header(self, out):
        h = self.header = Header.unpack(self._take(HEADER_SIZE))
        size = self.footer.current_size
        if h.max_table_entries > MAX_BAT_ENTRIES:
            raise VHDError("VHD BAT of %d entries is too large"
                           % h.max_table_entries)
        if h.max_table_entries * h.block_size < size:
            raise VHDError("VHD BAT (%d entries of %d bytes) does not cover "
                           "the disk size %d"
                           % (h.max_table_entries, h.block_size, size))
        self._bsize = h.block_size
        self._bmsize = bitmap_size(h.block_size)
        self._skip_to(h.table_offset, self._st_bat, h.max_table_entries * 4)

    def _st_bat(self, out):
        h = self.header
        bat = array("I")
        bat.frombytes(self._take(h.max_table_entries * 4))
        if sys.byteorder == "little":
            bat.byteswap()
        bat_end = self._pos
        nblocks = -(-self.footer.current_size // h.block_size)
        blocks = []
        for idx, sec in enumerate(bat):
            if sec == UNALLOCATED:
                continue
            if idx >= nblocks:
                # Entries past the disk's end carry nothing we can use.
                continue
            blocks.append((sec * SECTOR, idx))
        blocks.sort()
        stride = self._bmsize + h.block_size
        prev_end = bat_end
        for off, idx in blocks:
            if off < prev_end:
                raise VHDError(
                    "VHD block %d at byte %d overlaps %s ending at byte %d"
                    % (idx, off, "the BAT" if prev_end == bat_end
                       else "the previous block", prev_end))
            prev_end = off + stride
        self._blocks = blocks
        self._next_block()

    def _next_block(self):
        if self._next >= len(self._blocks):
            self._state, self._want = self._st_tail, 1
            return
        off, _ = self._blocks[self._next]
        self._skip_to(off, self._st_block, self._bmsize + self._bsize)

    def _st_block(self, out):
        _, idx = self._blocks[self._next]
        self._next += 1
        bitmap = self._take(self._bmsize)
        data = self._take(self._bsize)
        base = idx * self._bsize
        limit = min(self._bsize, self.footer.current_size - base)
        nsec = limit // SECTOR
        full = nsec // 8
        if (bitmap[:full] == b"\xff" * full
                and (nsec % 8 == 0
                     or bitmap[full] >> (8 - nsec % 8)
                     == (1 << nsec % 8) - 1)):
            self._emit(out, base, data[:limit])
        else:
            self._emit_runs(out, base, bitmap, data, nsec)
        self._next_block()

    def _emit(self, out, offset, data):
        self.bytes_written += len(data)
        out.append((offset, data))

    def _emit_runs(self, out, base, bitmap, data, nsec):
        """Emit the sectors of a partly-populated block."""
        bits = int.from_bytes(bitmap, "big")
        nbits = len(bitmap) * 8
        differencing = self.footer.disk_type == DISK_DIFFERENCING
        if differencing:
            s = 0
            while s < nsec:
                if not (bits >> (nbits - 1 - s)) & 1:
                    s += 1
                    continue
                e = s
                while e < nsec and (bits >> (nbits - 1 - e)) & 1:
                    e += 1
                self._emit(out, base + s * SECTOR,
                           data[s * SECTOR:e * SECTOR])
                s = e
        else:
            buf = bytearray(data[:nsec * SECTOR])
            for s in range(nsec):
                if not (bits >> (nbits - 1 - s)) & 1:
                    buf[s * SECTOR:(s + 1) * SECTOR] = _zeros(SECTOR)
            self._emit(out, base, bytes(buf))

    def _st_tail(self, out):
        # After the last block only the footer matters: keep the last
        # FOOTER_SIZE bytes seen.
        data = self._tail + bytes(self._buf)
        self._pos += len(self._buf)
        self._buf.clear()
        self._tail = data[-FOOTER_SIZE:]
        self._want = 1

    # fixed disks: data first, footer last; hold back the final sector.

    def _fixed_start(self, first, out):
        self._fixed_pos = 0
        self._first = first[:8]
        self._held = first
        self._state, self._want = self._st_fixed, 1

    def _st_fixed(self, out):
        data = self._held + bytes(self._buf)
        self._pos += len(self._buf)
        self._buf.clear()
        keep = FOOTER_SIZE
        if len(data) > keep:
            payload = data[:-keep]
            # Hand out whole sectors so zero detection downstream sees
            # aligned pieces.
            cut = len(payload) - len(payload) % SECTOR
            payload, data = data[:cut], data[cut:]
            if payload:
                self._emit(out, self._fixed_pos, payload)
                self._fixed_pos += len(payload)
        self._held = data
        self._want = 1

    def _finish_fixed(self, out):
        data = self._held
        if len(data) < FOOTER_SIZE:
            raise VHDError("not a VHD: no footer copy at offset 0 and no "
                           "footer at the end")
        try:
            foot = Footer.unpack(data[-FOOTER_SIZE:], "footer")
        except VHDError as e:
            raise VHDError("not a VHD (no footer copy at offset 0, and the "
                           "last sector is no footer either: %s)" % e)
        if foot.disk_type != DISK_FIXED:
            raise VHDError("bad VHD footer copy at offset 0 (cookie %r) of "
                           "a %s disk" % (bytes(self._first[:8]),
                                          DISK_TYPE_NAMES[foot.disk_type]))
        rest = data[:-FOOTER_SIZE]
        if rest:
            self._emit(out, self._fixed_pos, rest)
            self._fixed_pos += len(rest)
        if self._fixed_pos != foot.current_size:
            raise VHDError("truncated fixed VHD: %d data bytes, footer says "
                           "%d" % (self._fixed_pos, foot.current_size))
        self.footer = foot


def iter_vhd(fileobj, chunk_size=1 << 20):
    """(offset, data) writes of a VHD read from a file object."""
    reader = VHDStreamReader()
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            break
        yield from reader.feed(chunk)
    yield from reader.finish()


def read_info(fileobj):
    """(Footer, Header or None) of a seekable VHD file, read from its end
    footer and its dynamic header."""
    fileobj.seek(0, 2)
    size = fileobj.tell()
    if size < FOOTER_SIZE:
        raise VHDError("truncated VHD: %d bytes" % size)
    fileobj.seek(size - FOOTER_SIZE)
    footer = Footer.unpack(fileobj.read(FOOTER_SIZE), "footer")
    if footer.disk_type == DISK_FIXED:
        return footer, None
    fileobj.seek(footer.data_offset)
    return footer, Header.unpack(fileobj.read(HEADER_SIZE))


# -- writer -------------------------------------------------------------------

class VHDWriter:
    """Emit a dynamic VHD whose allocated blocks are known up front.

    Call header(), then block(i, data) for each allocated block in
    ascending order, then footer(); or use chunks(read_block).  Memory use
    is one block plus the BAT.
    """

    def __init__(self, virtual_size, blocks, block_size=DEFAULT_BLOCK_SIZE,
                 uuid=None, timestamp=None):
        if virtual_size <= 0 or virtual_size % SECTOR:
            raise VHDError("VHD size %d is not a positive multiple of %d"
                           % (virtual_size, SECTOR))
        if virtual_size > MAX_VHD_SIZE:
            raise VHDError("VHD size %d exceeds the %d-byte limit"
                           % (virtual_size, MAX_VHD_SIZE))
        if block_size < SECTOR or block_size & (block_size - 1):
            raise VHDError("bad VHD block size %d" % block_size)
        self.virtual_size = virtual_size
        self.block_size = block_size
        self.entries = -(-virtual_size // block_size)
        self.blocks = sorted(set(blocks))
        if self.blocks and (self.blocks[0] < 0
                            or self.blocks[-1] >= self.entries):
            raise VHDError("block index out of range")
        self.uuid = uuid or uuidlib.uuid4().bytes
        self.timestamp = now_timestamp() if timestamp is None else timestamp
        self._bmsize = bitmap_size(block_size)
        bat_bytes = self.entries * 4
        self._bat_size = -(-bat_bytes // SECTOR) * SECTOR
        self._table_offset = FOOTER_SIZE + HEADER_SIZE
        self._data_start = self._table_offset + self._bat_size
        self._stride = self._bmsize + block_size
        self._next = 0

    @property
    def total_size(self):
        """Bytes of the whole VHD (e.g. for a Content-Length)."""
        return (self._data_start + len(self.blocks) * self._stride
                + FOOTER_SIZE)

    def _footer(self):
        return Footer(current_size=self.virtual_size,
                      disk_type=DISK_DYNAMIC, data_offset=FOOTER_SIZE,
                      timestamp=self.timestamp, uuid=self.uuid).pack()

    def header(self):
        """Footer copy, dynamic header and BAT."""
        hdr = Header(table_offset=self._table_offset,
                     max_table_entries=self.entries,
                     block_size=self.block_size).pack()
        bat = array("I", [UNALLOCATED]) * self.entries
        sector = self._data_start // SECTOR
        step = self._stride // SECTOR
        for n, idx in enumerate(self.blocks):
            bat[idx] = sector + n * step
        if sys.byteorder == "little":
            bat.byteswap()
        pad = bytes(self._bat_size - self.entries * 4)
        return self._footer() + hdr + bat.tobytes() + pad

    def _bitmap(self, idx):
        limit = min(self.block_size,
                    self.virtual_size - idx * self.block_size)
        nsec = limit // SECTOR
        if nsec == self.block_size // SECTOR:
            return b"\xff" * (nsec // 8) + bytes(self._bmsize - nsec // 8)
        bm = bytearray(self._bmsize)
        bm[:nsec // 8] = b"\xff" * (nsec // 8)
        if nsec % 8:
            bm[nsec // 8] = (0xFF << (8 - nsec % 8)) & 0xFF
        return bytes(bm)

    def block(self, idx, data):
        """[bitmap, data] for allocated block idx (the next one in
        order); data shorter than a block (the disk's last) is padded."""
        if self._next >= len(self.blocks) or self.blocks[self._next] != idx:
            raise VHDError("block %d written out of order" % idx)
        self._next += 1
        if len(data) > self.block_size:
            raise VHDError("block %d: %d bytes of data" % (idx, len(data)))
        out = [self._bitmap(idx), data]
        if len(data) < self.block_size:
            out.append(_zeros(self.block_size - len(data)))
        return out

    def footer(self):
        if self._next != len(self.blocks):
            raise VHDError("%d of %d blocks written"
                           % (self._next, len(self.blocks)))
        return self._footer()

    def chunks(self, read_block):
        """The whole VHD as a sequence of byte strings; read_block(i)
        returns the data of block i."""
        yield self.header()
        for idx in self.blocks:
            yield from self.block(idx, read_block(idx))
        yield self.footer()


def blocks_of_extents(extents, block_size=DEFAULT_BLOCK_SIZE):
    """Sorted indices of the blocks that (offset, length) extents touch."""
    out = set()
    for offset, length in extents:
        if length <= 0:
            continue
        out.update(range(offset // block_size,
                         (offset + length - 1) // block_size + 1))
    return sorted(out)


def plan_blocks(candidates, read_block, read_base_block=None):
    """The candidate blocks worth writing: those whose data is not all
    zero or, given a base, differs from the base's."""
    keep = []
    for idx in candidates:
        data = read_block(idx)
        if read_base_block is None:
            if not is_zero(data):
                keep.append(idx)
        else:
            base = read_base_block(idx)
            if len(base) < len(data):
                base = bytes(base) + _zeros(len(data) - len(base))
            if data != base:
                keep.append(idx)
    return keep


def stream_vhd(virtual_size, read_block, candidates=None,
               read_base_block=None, block_size=DEFAULT_BLOCK_SIZE,
               plan=True, uuid=None, timestamp=None):
    """A dynamic VHD of a disk, as an iterator of byte strings.

    read_block(i) returns block i of the disk (block_size bytes, fewer for
    the last).  candidates: the blocks that may hold data (default: all).
    With plan=True a first pass drops blocks that are all zero, or equal
    to read_base_block(i) when a base is given; the result then holds
    only what differs from the base (blocks that became zero included).
    """
    nblocks = -(-virtual_size // block_size)
    if candidates is None:
        candidates = range(nblocks)
    blocks = (plan_blocks(candidates, read_block, read_base_block)
              if plan else list(candidates))
    writer = VHDWriter(virtual_size, blocks, block_size, uuid=uuid,
                       timestamp=timestamp)
    return writer.chunks(read_block)


def file_data_extents(fileobj, size):
    """[(offset, length)] of a sparse file that may hold data (its holes
    read as zeros), by SEEK_DATA/SEEK_HOLE; the whole file where the
    filesystem cannot tell."""
    fd = fileobj.fileno()
    out = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:       # only a hole remains
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append((start, end - start))
            pos = end
    except (AttributeError, OSError):
        return [(0, size)]
    return out


def file_block_reader(fileobj, virtual_size, block_size=DEFAULT_BLOCK_SIZE):
    """read_block for a seekable raw image file object."""
    def read_block(idx):
        offset = idx * block_size
        fileobj.seek(offset)
        return fileobj.read(min(block_size, virtual_size - offset))
    return read_block

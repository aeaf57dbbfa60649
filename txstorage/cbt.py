"""
Changed-block tracking logs, as SM keeps them beside the images: one log
file per VDI, a bitmap of 64 KiB blocks written since the log began.

A VDI's log begins at its last snapshot (or where tracking was enabled);
at a snapshot the VDI's log passes to the snapshot, which so covers the
interval up to its own point in time, and the VDI starts a new one.  Each
log names the point it began at (``parent``: a snapshot's uuid, or None),
so the blocks changed between two points are the union of the logs met
walking back from the later to the earlier.

Bit i of the bitmap is block i, most significant bit first in each byte,
as VDI.list_changed_blocks returns it (base64) in XAPI.
"""

import os
import struct

from txstorage.errors import StorageError

BLOCK_SIZE = 64 << 10
MAGIC = b"TXCBTLG1"
_HEAD = struct.Struct(">8sQI")      # magic, virtual size, block size
# Bitmap bytes read or written at a time.
_STEP = 1 << 20


def bitmap_bytes(virtual_size):
    blocks = -(-virtual_size // BLOCK_SIZE)
    return -(-blocks // 8)


def create(path, virtual_size):
    """A new, empty log (durable before it is used)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_HEAD.pack(MAGIC, virtual_size, BLOCK_SIZE))
        f.truncate(_HEAD.size + bitmap_bytes(virtual_size))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check(f, path):
    head = f.read(_HEAD.size)
    if len(head) != _HEAD.size:
        raise StorageError.named("SMGeneral", "CBT log %s is cut" % path)
    magic, size, block = _HEAD.unpack(head)
    if magic != MAGIC or block != BLOCK_SIZE:
        raise StorageError.named("SMGeneral", "%s is not a CBT log" % path)
    return size


def virtual_size(path):
    with open(path, "rb") as f:
        return _check(f, path)


def mark(path, extents):
    """Set the blocks of the (offset, length) extents; durable on return."""
    extents = [(o, n) for o, n in extents if n > 0]
    if not extents:
        return
    with open(path, "r+b") as f:
        size = _check(f, path)
        nbytes = bitmap_bytes(size)
        bits = bytearray(nbytes)
        for offset, length in extents:
            first = offset // BLOCK_SIZE
            last = min((offset + length - 1) // BLOCK_SIZE,
                       -(-size // BLOCK_SIZE) - 1)
            for block in range(first, last + 1):
                bits[block >> 3] |= 0x80 >> (block & 7)
        # Only the bytes that gained bits are rewritten.
        for start in range(0, nbytes, _STEP):
            piece = bits[start:start + _STEP]
            if not any(piece):
                continue
            f.seek(_HEAD.size + start)
            merged = union([f.read(len(piece)), bytes(piece)], 0,
                           len(piece))
            f.seek(_HEAD.size + start)
            f.write(merged)
        f.flush()
        os.fsync(f.fileno())


def merge_into(path, other):
    """Set in the log at ``path`` the blocks set in log ``other``."""
    with open(path, "r+b") as f:
        size = _check(f, path)
        mine = f.read(bitmap_bytes(size))
        merged = union([mine, read(other)], size)
        f.seek(_HEAD.size)
        f.write(merged)
        f.flush()
        os.fsync(f.fileno())


def read(path):
    """The bitmap of a log."""
    with open(path, "rb") as f:
        size = _check(f, path)
        data = f.read(bitmap_bytes(size))
    return data + bytes(bitmap_bytes(size) - len(data))


def union(bitmaps, size, nbytes=None):
    """The OR of bitmaps, as long as a bitmap of a ``size``-byte disk (or
    ``nbytes`` long)."""
    n = bitmap_bytes(size) if nbytes is None else nbytes
    as_int = 0
    for bits in bitmaps:
        as_int |= int.from_bytes(bytes(bits[:n]).ljust(n, b"\0"), "big")
    return as_int.to_bytes(n, "big")

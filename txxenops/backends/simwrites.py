"""
Where the simulator's guests write on their disks, so that a disk's
changed-block log can name the blocks a VM wrote rather than all of
them.

A guest's writes on one disk go round a working set: WORKING_SET blocks
of WRITE_BLOCK bytes (the size of a changed-block log's blocks) spread
over the disk, chosen by the VM's uuid and the device so that two runs
agree.  Its write stream (the bytes written so far, as simload counts
them) goes through the set one block at a time, so bytes ``a`` to ``b``
of the stream touch blocks ``a // WRITE_BLOCK`` to ``(b - 1) //
WRITE_BLOCK`` of the set, modulo its length.  No data changes: the
model is of addresses only.

``GuestWrites`` keeps, for each disk image (by path), the blocks written
that nobody has taken yet: a domain's writes are folded in when asked
for, and when its disk is unplugged or the domain goes.
"""

import hashlib

from txxenops.backends import simload

WRITE_BLOCK = 64 * 1024
WORKING_SET = 64


def working_set(uuid, device, size):
    """The blocks (indices of WRITE_BLOCK bytes) a guest writes on a disk
    of ``size`` bytes, in the order it writes them."""
    blocks = (size + WRITE_BLOCK - 1) // WRITE_BLOCK
    chosen, seen, i = [], set(), 0
    while len(chosen) < min(WORKING_SET, blocks):
        digest = hashlib.sha1(("%s/%s/%d" % (uuid, device, i)).encode())
        block = int.from_bytes(digest.digest()[:8], "big") % blocks
        if block not in seen:
            seen.add(block)
            chosen.append(block)
        i += 1
    return chosen


def blocks_written(uuid, device, size, start, end):
    """The blocks bytes ``start`` to ``end`` of the guest's write stream
    on that disk touch."""
    ring = working_set(uuid, device, size)
    if end <= start or not ring:
        return set()
    first, last = start // WRITE_BLOCK, (end - 1) // WRITE_BLOCK
    if last - first + 1 >= len(ring):
        return set(ring)
    return {ring[n % len(ring)] for n in range(first, last + 1)}


class GuestWrites:
    """The written blocks not yet taken, per disk path (callers hold the
    simulator's lock)."""

    def __init__(self):
        self._pending = {}      # path -> set of block indices

    def fold(self, rec, now, vbds=None):
        """Record what ``rec``'s guest wrote since the last fold on its
        writable disks (or on ``vbds`` of them)."""
        activity = rec.activity(now)
        for vbd in rec.vbds if vbds is None else vbds:
            traffic = simload.disk_traffic(vbd, activity)
            if traffic is None or vbd.mode != "RW" or not vbd.path or \
                    vbd.size <= 0:
                continue
            written = traffic[1]
            done = rec.disk_marked.get(vbd.device, 0)
            blocks = blocks_written(rec.spec.uuid, vbd.device, vbd.size,
                                    done, written)
            if blocks:
                self._pending.setdefault(vbd.path, set()).update(blocks)
            rec.disk_marked[vbd.device] = max(done, written)

    @staticmethod
    def plugged(rec, vbd, now):
        """A disk plugged into a running domain: its writes start now."""
        traffic = simload.disk_traffic(vbd, rec.activity(now))
        if traffic is not None:
            rec.disk_marked[vbd.device] = traffic[1]

    def take(self, path):
        """[(offset, length)] of the blocks written on ``path`` not taken
        before, in order; they count as taken."""
        return [(b * WRITE_BLOCK, WRITE_BLOCK)
                for b in sorted(self._pending.pop(path, ()))]

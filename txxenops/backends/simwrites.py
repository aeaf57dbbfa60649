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
for, and when its disk is unplugged or the domain goes.  They are saved
with the domain table, and a taker's blocks count as taken only once it
has marked them (``hand_out``, then ``taken``), so that a process killed
in between hands them out again rather than never.
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

    def __init__(self, saved=None):
        # path -> set of block indices: folded, not handed out; handed
        # out, not yet marked by the taker.
        self._pending = {p: set(b) for p, b in (saved or {}).items()}
        self._handed = {}
        self.changed = set()    # paths whose blocks changed since saved

    def fold(self, rec, now, vbds=None):
        """Record what ``rec``'s guest wrote since the last fold on its
        writable disks (or on ``vbds`` of them).  True if its write
        positions moved (its record changed)."""
        activity = rec.activity(now)
        moved = False
        for vbd in rec.vbds if vbds is None else vbds:
            traffic = simload.disk_traffic(vbd, activity)
            if traffic is None or vbd.mode != "RW" or not vbd.path or \
                    vbd.size <= 0:
                continue
            written = traffic[1]
            done = rec.disk_marked.get(vbd.device, 0)
            if written <= done:
                continue
            blocks = blocks_written(rec.spec.uuid, vbd.device, vbd.size,
                                    done, written)
            pending = self._pending.setdefault(vbd.path, set())
            if not blocks <= pending:
                pending |= blocks
                self.changed.add(vbd.path)
            rec.disk_marked[vbd.device] = written
            moved = True
        return moved

    @staticmethod
    def plugged(rec, vbd, now):
        """A disk plugged into a running domain: its writes start now."""
        traffic = simload.disk_traffic(vbd, rec.activity(now))
        if traffic is not None:
            rec.disk_marked[vbd.device] = traffic[1]

    def hand_out(self, path):
        """[(offset, length)] of the blocks written on ``path`` not taken
        before, in order; until ``taken(path)`` they are still saved."""
        blocks = self._pending.pop(path, set())
        if blocks:
            self._handed.setdefault(path, set()).update(blocks)
        return [(b * WRITE_BLOCK, WRITE_BLOCK) for b in sorted(blocks)]

    def taken(self, path, extents):
        """The taker of ``extents`` of ``path`` marked them."""
        handed = self._handed.get(path, set())
        handed -= {offset // WRITE_BLOCK for offset, _ in extents}
        if not handed:
            self._handed.pop(path, None)
        if extents:
            self.changed.add(path)

    def given_back(self, path, extents):
        """The taker of ``extents`` could not mark them: pending again."""
        blocks = {offset // WRITE_BLOCK for offset, _ in extents}
        self._handed.get(path, set()).difference_update(blocks)
        self._pending.setdefault(path, set()).update(blocks)

    def saved(self, path):
        """The blocks of ``path`` a saved state must keep (sorted)."""
        return sorted(self._pending.get(path, set()) |
                      self._handed.get(path, set()))

    def all_saved(self):
        return {p: self.saved(p) for p in set(self._pending) |
                set(self._handed) if self.saved(p)}

    def take_changes(self):
        """{path: saved blocks} of the paths changed since the last
        call, and they count as saved."""
        changes = {p: self.saved(p) for p in self.changed}
        self.changed = set()
        return changes

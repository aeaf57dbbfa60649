"""
Garbage collection of a file SR: hidden images nobody needs are deleted,
a hidden image with a single child is coalesced into it, and files a
crash left behind are removed.
"""

import os
import time

from txstorage import qemu
from txstorage.files import unlink
from txstorage.types import GCResult

# A temporary file this old is a crash's leftover, not work in progress.
STALE_TMP_AGE = 3600


class GarbageCollector:
    """sr_gc for a driver of the file family."""

    def sr_gc(self, sr_uuid):
        sr = self._sr(sr_uuid)
        result = GCResult()
        with sr.lock:
            before = self._files_usage(sr)
            skipped = set()
            while True:
                nodes = self._load(sr)
                if not self._gc_step(sr, nodes, result, skipped):
                    break
            self._remove_leftovers(sr, nodes)
            result.reclaimed = max(0, before - self._files_usage(sr))
        return result

    def _remove_leftovers(self, sr, nodes):
        """Files a crash left behind: metadata of images that are gone
        (written before their image, under the SR lock we hold) and old
        temporary files."""
        now = time.time()
        for name in os.listdir(sr.path):
            path = os.path.join(sr.path, name)
            stem, ext = os.path.splitext(name)
            if ext in (".meta", ".active") and not name.startswith("."):
                if stem not in nodes:
                    unlink(path)
            elif name.startswith(".") and ext == ".tmp":
                try:
                    if now - os.stat(path).st_mtime > STALE_TMP_AGE:
                        unlink(path)
                except FileNotFoundError:
                    pass

    def _gc_step(self, sr, nodes, result, skipped):
        """Do one GC action; False when there is nothing left to do."""
        for n in nodes.values():
            if n.hidden and not n.children and n.uuid not in skipped:
                if self._busy(sr, n.uuid):
                    skipped.add(n.uuid)
                    result.skipped.append((n.uuid, "in use"))
                    continue
                self._remove_files(sr, n.uuid, n.path)
                result.removed.append(n.uuid)
                return True
        for n in nodes.values():
            if not n.hidden or len(n.children) != 1 or n.uuid in skipped:
                continue
            child = nodes[n.children[0]]
            if self._busy(sr, child.uuid) or self._busy(sr, n.uuid):
                skipped.add(n.uuid)
                result.skipped.append((n.uuid, "child %s in use"
                                       % child.uuid))
                continue
            self._coalesce(sr, n, child)
            result.coalesced.append((n.uuid, child.uuid))
            result.removed.append(n.uuid)
            return True
        return False

    def _coalesce(self, sr, parent, child):
        """Merge hidden `parent` and its only child into one image under
        the child's name, copying whichever layer holds less data."""
        grand = self._backing_of(parent) or ""
        if parent.usage <= child.usage:
            # Pull the parent's data down into the child.
            qemu.img_rebase(child.path, grand, unsafe=False)
            self._remove_files(sr, parent.uuid, parent.path)
        else:
            # Push the child's data up, then let the parent's file take
            # the child's name (atomic: a crash leaves a valid chain).
            if child.virtual_size > parent.virtual_size:
                qemu.img_resize(parent.path, parent.format,
                                child.virtual_size, error="SMGeneral")
            qemu.img_commit(child.path, child.format)
            os.replace(parent.path, child.path)
            unlink(self._meta_path(sr, parent.uuid))
            unlink(self._active_path(sr, parent.uuid))

    def _backing_of(self, node):
        hdr = qemu.read_qcow2_header(node.path)
        return hdr[1] if hdr else None

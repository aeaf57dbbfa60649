"""
Changed-block tracking for the file SRs (txstorage.cbt's logs): a
``<uuid>.cbtlog`` beside each tracked image, the log's starting point in
the image's ``.meta`` (``cbt_parent``), and what becomes of them at
snapshots, data_destroy and deletion.

Writes that come through the data paths mark the log when they are
committed (AttachInfo.cbt_log, see transfer.RawWriter); any other writer
marks the whole log (vdi_cbt_untracked_writer).  When a tracked
snapshot is deleted its log is folded into the next one, so the history
stays whole for the points that remain.
"""

import os

from txstorage import cbt, qemu
from txstorage.errors import StorageError
from txstorage.files import unlink

CBT_METADATA = "cbt_metadata"


class CBTMixin:
    """IChangedBlockTracking for a driver of the file family (its _sr,
    _load, _get, metadata)."""

    def _cbt_path(self, sr, uuid):
        return os.path.join(sr.path, uuid + ".cbtlog")

    def _cbt_log_of(self, sr, node):
        """The log of a tracked image, or None."""
        if not node.meta.get("cbt_enabled"):
            return None
        path = self._cbt_path(sr, node.uuid)
        return path if os.path.exists(path) else None

    def vdi_cbt_log(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            return self._cbt_log_of(sr, self._get(sr, self._load(sr),
                                                  vdi_uuid))

    def vdi_enable_cbt(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            node = self._get(sr, self._load(sr), vdi_uuid)
            if node.meta.get("cbt_enabled"):
                return self._info(sr, node)
            cbt.create(self._cbt_path(sr, vdi_uuid), node.virtual_size)
            self._write_meta(sr, vdi_uuid, dict(
                node.meta, cbt_enabled=True, cbt_parent=None))
            return self._info(sr, self._node(sr, vdi_uuid))

    def vdi_disable_cbt(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            node = self._get(sr, self._load(sr), vdi_uuid)
            meta = {k: v for k, v in node.meta.items()
                    if k not in ("cbt_enabled", "cbt_parent")}
            self._write_meta(sr, vdi_uuid, meta)
            unlink(self._cbt_path(sr, vdi_uuid))
            return self._info(sr, self._node(sr, vdi_uuid))

    def vdi_list_changed_blocks(self, sr_uuid, vdi_from, vdi_to):
        """The bitmap of the blocks changed from ``vdi_from``'s point in
        time to ``vdi_to``'s (bytes, MSB first)."""
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            start = self._get(sr, nodes, vdi_from)
            node = self._get(sr, nodes, vdi_to)
            for n in (start, node):
                if not n.meta.get("cbt_enabled"):
                    raise StorageError.named(
                        "SMGeneral", "VDI %s has no CBT log" % n.uuid)
            logs, seen = [], set()
            while node.uuid != vdi_from:
                log = self._cbt_log_of(sr, node)
                parent = node.meta.get("cbt_parent")
                if log is None or parent is None or parent in seen:
                    raise StorageError.named(
                        "SMGeneral", "VDI %s is not an earlier point in "
                        "the CBT history of %s" % (vdi_from, vdi_to))
                seen.add(node.uuid)
                logs.append(cbt.read(log))
                node = nodes.get(parent) or _Gone(parent)
            size = cbt.virtual_size(self._cbt_path(sr, vdi_to)) \
                if os.path.exists(self._cbt_path(sr, vdi_to)) \
                else self._get(sr, nodes, vdi_to).virtual_size
            return cbt.union(logs, size)

    def vdi_data_destroy(self, sr_uuid, vdi_uuid):
        """Keep only a snapshot's CBT log: its image is replaced by an
        empty one with no backing, so what it held can be reclaimed."""
        sr = self._sr(sr_uuid)
        with sr.lock:
            node = self._get(sr, self._load(sr), vdi_uuid)
            if not node.meta.get("cbt_enabled"):
                raise StorageError.named(
                    "SMGeneral", "VDI %s has no CBT log" % vdi_uuid)
            if node.children:
                raise StorageError.named(
                    "VDIInUse", "VDI %s backs other images" % vdi_uuid)
            if node.format != "qcow2":
                raise StorageError.named("Unimplemented",
                                         "data_destroy of a %s VDI"
                                         % node.format)
            tmp = self._tmp_path(sr, vdi_uuid, "qcow2")
            qemu.img_create(tmp, "qcow2", node.virtual_size,
                            error="VDIDelete")
            self._write_meta(sr, vdi_uuid, dict(node.meta,
                                                type=CBT_METADATA))
            os.replace(tmp, node.path)
            return self._info(sr, self._node(sr, vdi_uuid))

    def vdi_cbt_untracked_writer(self, sr_uuid, vdi_uuid):
        """A writer whose writes do not reach the log (a VM's disk) has the
        image: every block counts as changed, so the next incremental
        copy is a full one rather than a wrong one."""
        sr = self._sr(sr_uuid)
        with sr.lock:
            path = self._cbt_path(sr, vdi_uuid)
            if os.path.exists(path):
                cbt.mark(path, [(0, cbt.virtual_size(path))])

    # hooks for the driver

    def _cbt_snapshot(self, sr, node, snapshot_meta):
        """At a snapshot of ``node``: its log passes to the snapshot (whose
        meta is being made) and the VDI begins a new one."""
        log = self._cbt_log_of(sr, node)
        if log is None:
            return None
        snapshot_meta.update(cbt_enabled=True,
                             cbt_parent=node.meta.get("cbt_parent"))

        def handover(new_uuid):
            os.replace(log, self._cbt_path(sr, new_uuid))
            cbt.create(log, node.virtual_size)
            self._write_meta(sr, node.uuid, dict(
                node.meta, cbt_enabled=True, cbt_parent=new_uuid))
        return handover

    def _cbt_forget(self, sr, nodes, node):
        """Before ``node`` is deleted: the log that begins at it takes its
        changes in, and begins where it began."""
        log = self._cbt_log_of(sr, node)
        if log is None:
            return
        for n in nodes.values():
            if n.meta.get("cbt_parent") == node.uuid:
                later = self._cbt_log_of(sr, n)
                if later is not None:
                    cbt.merge_into(later, log)
                self._write_meta(sr, n.uuid, dict(
                    n.meta, cbt_parent=node.meta.get("cbt_parent")))
        unlink(log)


class _Gone:
    """A point of the history whose VDI no longer exists."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.meta = {}

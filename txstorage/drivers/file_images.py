"""
The file SR's directory as a tree of images: where each of a VDI's files
lives, reading the directory into ImageNodes linked to their backing
parents, and the VDIInfo a node is reported as.
"""

import os
import uuid as uuidlib

from txstorage import qemu
from txstorage.errors import StorageError, VDIMissing
from txstorage.files import disk_usage, read_json, unlink, write_json
from txstorage.types import VDIInfo

IMAGE_EXTS = {".qcow2": "qcow2", ".raw": "raw"}


class ImageNode:
    """One image in an SR directory."""

    def __init__(self, uuid, path, fmt, virtual_size, parent, meta):
        self.uuid = uuid
        self.path = path
        self.format = fmt
        self.virtual_size = virtual_size
        self.parent = parent
        self.meta = meta
        self.children = []

    @property
    def hidden(self):
        return bool(self.meta.get("hidden"))

    @property
    def usage(self):
        return disk_usage(self.path)


class ImageDirectory:
    """The file drivers' view of an SR directory's images (their _cbt_path
    names the change log beside an image)."""

    def _image_path(self, sr, uuid, fmt):
        return os.path.join(sr.path, "%s.%s" % (uuid, fmt))

    def _tmp_path(self, sr, uuid, fmt):
        return os.path.join(sr.path, ".%s.%s.%s.tmp"
                            % (uuid, uuidlib.uuid4().hex[:8], fmt))

    def _meta_path(self, sr, uuid):
        return os.path.join(sr.path, uuid + ".meta")

    def _write_meta(self, sr, uuid, meta):
        write_json(self._meta_path(sr, uuid), meta)

    def _active_path(self, sr, uuid):
        return os.path.join(sr.path, uuid + ".active")

    def _remove_files(self, sr, uuid, path):
        unlink(path)
        unlink(self._cbt_path(sr, uuid))
        unlink(self._meta_path(sr, uuid))
        unlink(self._active_path(sr, uuid))

    def _files_usage(self, sr):
        """Bytes the SR's files occupy."""
        return sum(disk_usage(os.path.join(sr.path, name))
                   for name in os.listdir(sr.path))

    def _busy(self, sr, uuid):
        return bool(sr.attached.get(uuid)) or bool(
            read_json(self._active_path(sr, uuid), {}))

    def _active_writer(self, sr, uuid):
        return "RW" in read_json(self._active_path(sr, uuid), {}).values()

    def _get(self, sr, nodes, vdi_uuid):
        node = nodes.get(vdi_uuid)
        if node is None:
            raise VDIMissing(sr.uuid, vdi_uuid)
        return node

    def _node(self, sr, uuid):
        return self._get(sr, self._load(sr), uuid)

    def _load(self, sr):
        """Every image in the SR directory, linked to its parent."""
        nodes = {}
        try:
            names = os.listdir(sr.path)
        except OSError as e:
            raise StorageError.named("SRScan", str(e))
        for name in names:
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            fmt = IMAGE_EXTS.get(ext)
            if fmt is None:
                continue
            path = os.path.join(sr.path, name)
            parent = None
            try:
                if fmt == "qcow2":
                    hdr = qemu.read_qcow2_header(path)
                    if hdr is None:
                        continue
                    size, backing = hdr
                    if backing:
                        parent = self._uuid_of_backing(sr, backing)
                else:
                    size = os.path.getsize(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StorageError.named("SRScan", "%s: %s" % (name, e))
            meta = read_json(self._meta_path(sr, stem), {})
            nodes[stem] = ImageNode(stem, path, fmt, size, parent, meta)
        for n in nodes.values():
            if n.parent in nodes:
                nodes[n.parent].children.append(n.uuid)
        return nodes

    def _uuid_of_backing(self, sr, backing):
        full = backing if os.path.isabs(backing) else os.path.join(
            sr.path, backing)
        if os.path.dirname(os.path.realpath(full)) != os.path.realpath(
                sr.path):
            return None
        stem, ext = os.path.splitext(os.path.basename(backing))
        return stem if ext in IMAGE_EXTS else None

    def _info(self, sr, node):
        meta = node.meta
        sm_config = dict(meta.get("sm_config", {}))
        sm_config["image-format"] = node.format
        if node.format == "raw":
            sm_config["type"] = "raw"
        if node.parent:
            sm_config["vhd-parent"] = node.parent
        return VDIInfo(
            uuid=node.uuid, location=node.uuid,
            virtual_size=node.virtual_size,
            physical_utilisation=node.usage,
            read_only=bool(node.hidden or node.children
                           or meta.get("read_only")),
            parent=node.parent,
            is_snapshot=bool(meta.get("is_snapshot")),
            snapshot_of=meta.get("snapshot_of"),
            snapshot_time=meta.get("snapshot_time"),
            hidden=node.hidden,
            name_label=meta.get("name_label", ""),
            name_description=meta.get("name_description", ""),
            type=meta.get("type", "user"),
            sharable=bool(meta.get("sharable")),
            sm_config=sm_config,
            cbt_enabled=bool(meta.get("cbt_enabled")))

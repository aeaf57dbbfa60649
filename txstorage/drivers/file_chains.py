"""
Backing chains of a file SR: snapshot and clone (the VDI's image becomes
a hidden read-only base of two copy-on-write children), introduce of an
image already in the directory, and compose.
"""

import errno
import os
import uuid as uuidlib

from txstorage import qemu
from txstorage.drivers.directory import xapi_time
from txstorage.drivers.file_images import IMAGE_EXTS
from txstorage.errors import StorageError, Unimplemented, VDIMissing
from txstorage.files import read_json, unlink, write_json


class ImageChains:
    """vdi_snapshot, vdi_clone, vdi_introduce and vdi_compose for a driver
    of the file family."""

    def vdi_snapshot(self, sr_uuid, vdi_uuid, driver_params=None):
        return self._snapshot(sr_uuid, vdi_uuid, is_snapshot=True)

    def vdi_clone(self, sr_uuid, vdi_uuid, driver_params=None):
        return self._snapshot(sr_uuid, vdi_uuid, is_snapshot=False)

    def _snapshot(self, sr_uuid, vdi_uuid, is_snapshot):
        sr = self._sr(sr_uuid)
        op = "VDI_SNAPSHOT" if is_snapshot else "VDI_CLONE"
        with sr.lock:
            nodes = self._load(sr)
            node = self._get(sr, nodes, vdi_uuid)
            if node.format != "qcow2":
                raise Unimplemented("%s of a %s VDI" % (op, node.format))
            if node.hidden:
                raise StorageError.named("VDIClone",
                                         "VDI %s is a base copy" % vdi_uuid)
            depth, p = 1, node.parent
            while p is not None and p in nodes:
                depth += 1
                p = nodes[p].parent
            if depth >= self.max_chain_depth:
                raise StorageError.named("SnapshotChainTooLong", vdi_uuid)
            # Two small images (the new leaves) must fit.
            self._check_space(sr, 2 * qemu.img_measure_empty(
                node.virtual_size))
            base_uuid = str(uuidlib.uuid4())
            new_uuid = str(uuidlib.uuid4())
            base_path = self._image_path(sr, base_uuid, "qcow2")
            base_name = os.path.basename(base_path)
            size = node.virtual_size
            # The base is hidden before it exists, so a crash anywhere
            # below leaves only garbage for sr_gc, never a stray VDI.
            write_json(self._meta_path(sr, base_uuid),
                        {"hidden": True, "read_only": True,
                         "name_label": "base copy", "type": "user"})
            tmp = self._tmp_path(sr, vdi_uuid, "qcow2")
            try:
                # A hard link keeps the VDI's name valid throughout; only
                # filesystems without links fall back to a rename.
                try:
                    os.link(node.path, base_path)
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.ENOTSUP,
                                       errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    os.rename(node.path, base_path)
                qemu.img_create(tmp, "qcow2", size, backing=base_name,
                                backing_fmt="qcow2", error="VDIClone")
                os.replace(tmp, node.path)
            except BaseException:
                unlink(tmp)
                if os.path.exists(base_path):
                    if os.path.exists(node.path):
                        unlink(base_path)
                    else:
                        os.rename(base_path, node.path)
                unlink(self._meta_path(sr, base_uuid))
                raise
            new_path = self._image_path(sr, new_uuid, "qcow2")
            tmp = self._tmp_path(sr, new_uuid, "qcow2")
            meta = {k: node.meta[k] for k in
                    ("name_label", "name_description", "type", "sm_config")
                    if k in node.meta}
            handover = None
            if is_snapshot:
                meta.update(is_snapshot=True, snapshot_of=vdi_uuid,
                            snapshot_time=xapi_time())
                handover = self._cbt_snapshot(sr, node, meta)
            write_json(self._meta_path(sr, new_uuid), meta)
            try:
                qemu.img_create(tmp, "qcow2", size, backing=base_name,
                                backing_fmt="qcow2", error="VDIClone")
                os.replace(tmp, new_path)
            except BaseException:
                unlink(tmp)
                unlink(self._meta_path(sr, new_uuid))
                raise
            if handover is not None:
                handover(new_uuid)
            return self._info(sr, self._node(sr, new_uuid))

    def vdi_introduce(self, sr_uuid, vdi_uuid, location, sm_config=None):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            stem, ext = os.path.splitext(os.path.basename(location))
            if ext not in IMAGE_EXTS:
                stem, ext = os.path.basename(location), None
            src = nodes.get(stem)
            if src is None or (ext and IMAGE_EXTS[ext] != src.format):
                raise VDIMissing(sr_uuid, vdi_uuid,
                                 "no image %s in SR %s" % (location, sr_uuid))
            vdi_uuid = vdi_uuid or stem
            if vdi_uuid != stem:
                if vdi_uuid in nodes:
                    raise StorageError.named("VDIExists", vdi_uuid)
                if src.children:
                    raise StorageError.named(
                        "VDIUnavailable", "%s backs other images; it "
                        "cannot be renamed" % location)
                os.rename(src.path, self._image_path(sr, vdi_uuid,
                                                     src.format))
                meta_src = self._meta_path(sr, stem)
                if os.path.exists(meta_src):
                    os.rename(meta_src, self._meta_path(sr, vdi_uuid))
            meta = read_json(self._meta_path(sr, vdi_uuid), {})
            if sm_config:
                extra = dict(meta.get("sm_config", {}))
                extra.update({k: v for k, v in sm_config.items()
                              if k not in ("vhd-parent", "image-format")})
                meta["sm_config"] = extra
            meta.pop("hidden", None)
            write_json(self._meta_path(sr, vdi_uuid), meta)
            return self._info(sr, self._node(sr, vdi_uuid))

    def vdi_compose(self, sr_uuid, parent_uuid, child_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            parent = self._get(sr, nodes, parent_uuid)
            child = self._get(sr, nodes, child_uuid)
            if child.format != "qcow2":
                raise Unimplemented("VDI_COMPOSE onto a %s VDI"
                                    % child.format)
            qemu.img_rebase(child.path, os.path.basename(parent.path),
                            backing_fmt=parent.format, unsafe=True)
            meta = dict(parent.meta, hidden=True, read_only=True)
            write_json(self._meta_path(sr, parent_uuid), meta)

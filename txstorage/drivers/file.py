"""
The file SR: a directory of images, like upstream's FileSR/EXTSR but with
qcow2 images instead of VHD (qemu-img can build backing chains of qcow2
files, not of VHD files).

On-disk layout of an SR directory:
    <uuid>.qcow2 / <uuid>.raw   the images (a child's backing file is named
                                relative to the directory)
    <uuid>.meta                 JSON: hidden, is_snapshot, names, ... (what a
                                VHD header or xapi's database would hold)
    <uuid>.active               JSON {host: "RW"|"RO"}: who has it active
    .txstorage-sr.json          marker: SR uuid, type, optional capacity
    .txstorage.lock             flock()ed around metadata changes
Files whose names start with "." are ours and never VDIs.

Snapshots follow xapi's VHD tree: the VDI's image becomes a hidden
read-only base, and the VDI and its snapshot become copy-on-write children
of it.  sr_gc() later deletes hidden nodes nobody needs and coalesces a
hidden node with a single child into that child.

The driver is assembled from its parts: file_images (the directory as a
tree of images), file_attach (attach and activation), file_chains
(snapshot, clone, introduce, compose), file_gc and file_cbt; this module
holds the SR operations and creating, resizing and deleting VDIs.
"""

import os
import uuid as uuidlib

from zope.interface import implementer

from txstorage import qemu
from txstorage.drivers.directory import LOCKFILE, MARKER, \
    DirectorySRBase, xapi_time
from txstorage.drivers.file_attach import Attachments
from txstorage.drivers.file_cbt import CBTMixin
from txstorage.drivers.file_chains import ImageChains
from txstorage.drivers.file_gc import GarbageCollector
from txstorage.drivers.file_images import ImageDirectory
from txstorage.errors import SRFull, SRInUse, SRNotEmpty, StorageError, \
    VDIInUse
from txstorage.files import read_json, unlink, write_json
from txstorage.interfaces import IChangedBlockTracking, ISRDriver
from txstorage.types import SRInfo

MiB = 1 << 20


@implementer(ISRDriver, IChangedBlockTracking)
class FileSRDriver(ImageDirectory, Attachments, ImageChains,
                   GarbageCollector, CBTMixin, DirectorySRBase):
    """Local file SR holding qcow2 images (raw on request)."""

    sm_type = "file"
    name_label = "Local Path qcow2"
    name_description = ("SR plugin which represents disks as qcow2 files "
                        "stored on a local path")
    # The name xapi gives the host-local SR it creates at install.
    default_sr_name = "Local storage"
    supported_image_formats = ["qcow2", "raw"]
    capabilities = [
        "SR_PROBE", "SR_UPDATE", "SR_SCAN", "SR_CREATE", "SR_DELETE",
        "SR_ATTACH", "SR_DETACH",
        "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH",
        "VDI_ACTIVATE", "VDI_DEACTIVATE", "VDI_CLONE", "VDI_SNAPSHOT",
        "VDI_RESIZE", "VDI_INTRODUCE", "VDI_UPDATE", "VDI_COMPOSE",
        "VDI_GENERATE_CONFIG", "VDI_CONFIG_CBT", "LARGE_VDI"]
    configuration = {
        "location": "local directory path (required)",
        "size": "capacity of the SR in bytes (optional; default: the "
                "filesystem's size)",
    }
    image_format = "qcow2"
    # virtual_size is rounded up to this, as upstream's VHD SRs do.
    size_rounding = 2 * MiB
    # Longest backing chain a snapshot may build (upstream's VHD limit).
    max_chain_depth = 30

    def __init__(self, host=None, thin_provisioning=False):
        """thin_provisioning=False (default): a new VDI must fit its whole
        virtual size in the SR's free space, else SRFull.  True: only the
        image's metadata must fit (upstream FileSR does not check)."""
        DirectorySRBase.__init__(self, host)
        self.thin_provisioning = thin_provisioning
        if thin_provisioning:
            self.capabilities = self.capabilities + ["THIN_PROVISIONING"]

    # -- SR operations -----------------------------------------------------

    def sr_create(self, sr_uuid, device_config, physical_size=0):
        path = self._sr_path(sr_uuid, device_config)
        self._prepare_parent(device_config)
        try:
            if os.path.exists(path):
                if not os.path.isdir(path):
                    raise StorageError.named("FileSRCreate",
                                             "%s is not a directory" % path)
                if os.listdir(path):
                    raise StorageError.named("SRExists",
                                             "%s is not empty" % path)
            else:
                os.makedirs(path)
        except OSError as e:
            raise StorageError.named("FileSRCreate", str(e))
        capacity = int(physical_size or device_config.get("size") or 0)
        write_json(os.path.join(path, MARKER),
                    {"uuid": sr_uuid, "type": self.sm_type,
                     "capacity": capacity, "created": xapi_time()})

    def _prepare_parent(self, device_config):
        """Hook: make sure the directory an SR goes into is reachable."""

    def sr_delete(self, sr_uuid, device_config):
        path = self._sr_path(sr_uuid, device_config)
        if not os.path.isdir(path):
            return
        with self._srs_lock:
            temporary = sr_uuid not in self._srs
        sr = self._sr_or_temporary(sr_uuid, path, device_config)
        try:
            self._delete_contents(sr)
        except BaseException:
            if temporary:
                with self._srs_lock:
                    self._srs.pop(sr_uuid, None)
            raise
        with self._srs_lock:
            self._srs.pop(sr_uuid, None)
        unlink(os.path.join(path, LOCKFILE))
        try:
            os.rmdir(path)
        except OSError:
            pass

    def _delete_contents(self, sr):
        sr_uuid, path = sr.uuid, sr.path
        self.sr_gc(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            if any(not n.hidden for n in nodes.values()):
                raise SRNotEmpty(sr_uuid)
            if sr.attached:
                raise SRInUse(sr_uuid)
            for name in os.listdir(path):
                if name == LOCKFILE:
                    continue
                try:
                    os.unlink(os.path.join(path, name))
                except IsADirectoryError:
                    pass
                except OSError as e:
                    raise StorageError.named(
                        "FileSRDelete", "cannot remove %s: %s" % (name, e))

    def _sr_or_temporary(self, sr_uuid, path, device_config):
        with self._srs_lock:
            sr = self._srs.get(sr_uuid)
        if sr is None:
            marker = read_json(os.path.join(path, MARKER), {})
            sr = self._register(sr_uuid, path, device_config,
                                self._capacity(device_config, marker))
        return sr

    def _capacity(self, device_config, marker):
        return int(device_config.get("size") or marker.get("capacity") or 0)

    def sr_attach(self, sr_uuid, device_config):
        path = self._sr_path(sr_uuid, device_config)
        if not os.path.isdir(path):
            raise StorageError.named("SRUnavailable",
                                     "no such directory %s" % path)
        marker_path = os.path.join(path, MARKER)
        marker = read_json(marker_path)
        if marker is None:
            # A directory made outside sr_create (SR.introduce of an
            # existing one): adopt it.
            marker = {"uuid": sr_uuid, "type": self.sm_type, "capacity": 0}
            write_json(marker_path, marker)
        elif marker.get("uuid") != sr_uuid:
            raise StorageError.named(
                "SRUnavailable", "%s holds SR %s, not %s"
                % (path, marker.get("uuid"), sr_uuid))
        self._register(sr_uuid, path, device_config,
                       self._capacity(device_config, marker))

    def sr_detach(self, sr_uuid):
        with self._srs_lock:
            sr = self._srs.get(sr_uuid)
            if sr is None:
                return
            if any(sr.attached.values()):
                raise SRInUse(sr_uuid)
            del self._srs[sr_uuid]

    def sr_probe(self, device_config, sm_config=None):
        path = self._sr_path(None, device_config)
        return [info for info in [self._probe_dir(path)] if info]

    def _probe_dir(self, path):
        marker = read_json(os.path.join(path, MARKER))
        if not marker or "uuid" not in marker:
            return None
        size, used, _ = self._fs_figures(path)
        return SRInfo(uuid=marker["uuid"], physical_size=size,
                      physical_utilisation=used, location=path,
                      content_type=self.content_type, shared=self.shared)

    def sr_scan(self, sr_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
        # Hidden leaves are garbage awaiting sr_gc: not VDIs any more.
        return [self._info(sr, n) for n in nodes.values()
                if not (n.hidden and not n.children)]

    def sr_update(self, sr_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            size, used = self._space(sr)
        valloc = sum(n.virtual_size for n in nodes.values() if not n.hidden)
        return SRInfo(uuid=sr_uuid, physical_size=size,
                      physical_utilisation=used, virtual_allocation=valloc,
                      content_type=self.content_type, shared=self.shared,
                      location=sr.path)

    def _space(self, sr):
        """(physical_size, physical_utilisation) of the SR: a configured
        capacity and what the SR's files occupy, or the filesystem's
        figures (what upstream reports)."""
        if sr.capacity:
            return sr.capacity, self._files_usage(sr)
        size, used, _ = self._fs_figures(sr.path)
        return size, used

    def _check_space(self, sr, needed):
        size, used = self._space(sr)
        available = size - used
        fs_avail = self._fs_figures(sr.path)[2]
        available = max(0, min(available, fs_avail))
        if needed > available:
            raise SRFull(needed, available)

    def _needed(self, virtual_size):
        if self.thin_provisioning:
            return qemu.img_measure_empty(virtual_size, self.image_format)
        return virtual_size

    # -- VDI operations ----------------------------------------------------

    def vdi_create(self, sr_uuid, vdi_uuid, virtual_size, name_label="",
                   name_description="", sm_config=None, vdi_type="user",
                   read_only=False, sharable=False):
        sr = self._sr(sr_uuid)
        sm_config = dict(sm_config or {})
        size = self._round(virtual_size)
        fmt = self._format_for(sm_config)
        vdi_uuid = vdi_uuid or str(uuidlib.uuid4())
        with sr.lock:
            nodes = self._load(sr)
            if vdi_uuid in nodes:
                raise StorageError.named("VDIExists", vdi_uuid)
            self._check_space(sr, self._needed(size) if fmt == "qcow2"
                              else size)
            meta = {"name_label": name_label,
                    "name_description": name_description,
                    "type": vdi_type, "read_only": bool(read_only),
                    "sharable": bool(sharable)}
            extra = {k: v for k, v in sm_config.items()
                     if k not in ("type", "image-format", "vhd-parent")}
            if extra:
                meta["sm_config"] = extra
            path = self._image_path(sr, vdi_uuid, fmt)
            tmp = self._tmp_path(sr, vdi_uuid, fmt)
            write_json(self._meta_path(sr, vdi_uuid), meta)
            try:
                if fmt == "raw":
                    with open(tmp, "wb") as f:
                        f.truncate(size)
                else:
                    qemu.img_create(tmp, fmt, size)
                os.replace(tmp, path)
            except BaseException:
                unlink(tmp)
                unlink(self._meta_path(sr, vdi_uuid))
                raise
            return self._info(sr, self._node(sr, vdi_uuid))

    def _format_for(self, sm_config):
        fmt = sm_config.get("image-format") or sm_config.get("type")
        if fmt in (None, "", "vhd", "qcow2"):
            return self.image_format
        if fmt == "raw":
            return "raw"
        raise StorageError.named("VDICreate",
                                 "unsupported image format %s" % fmt)

    def _round(self, size):
        size = int(size)
        if size <= 0:
            raise StorageError.named("VDISize", "size must be positive")
        r = self.size_rounding
        return -(-size // r) * r

    def vdi_delete(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            node = nodes.get(vdi_uuid)
            if node is None:
                # Already gone: deleting is idempotent, as upstream's.
                return
            if self._busy(sr, vdi_uuid):
                raise VDIInUse(vdi_uuid, "destroy")
            self._cbt_forget(sr, nodes, node)
            if node.children:
                # Still backing other images: hide it; sr_gc will merge it.
                meta = dict(node.meta, hidden=True, read_only=True)
                write_json(self._meta_path(sr, vdi_uuid), meta)
                return
            self._remove_files(sr, vdi_uuid, node.path)

    def vdi_resize(self, sr_uuid, vdi_uuid, new_size):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            node = self._get(sr, nodes, vdi_uuid)
            if node.hidden or node.children:
                raise StorageError.named("VDIUnavailable",
                                         "VDI %s is a base copy" % vdi_uuid)
            if self._active_writer(sr, vdi_uuid):
                raise VDIInUse(vdi_uuid, "resize")
            size = self._round(new_size)
            if size < node.virtual_size:
                raise StorageError.named("VDISize", "shrinking not allowed")
            if size > node.virtual_size:
                grow = size - node.virtual_size
                if node.format == "raw" or not self.thin_provisioning:
                    self._check_space(sr, grow)
                if node.format == "raw":
                    with open(node.path, "r+b") as f:
                        f.truncate(size)
                else:
                    qemu.img_resize(node.path, node.format, size)
            return self._info(sr, self._node(sr, vdi_uuid))

    def vdi_update(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            return self._info(sr, self._get(sr, nodes, vdi_uuid))

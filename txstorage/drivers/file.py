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
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid as uuidlib

from zope.interface import implementer

from txstorage import qemu
from txstorage.drivers.file_cbt import CBTMixin
from txstorage.errors import (SRFull, SRInUse, SRNotEmpty, StorageError,
                              Unimplemented, VDIInUse, VDIMissing)
from txstorage.interfaces import ISRDriver
from txstorage.types import AttachInfo, GCResult, SRInfo, VDIInfo

MARKER = ".txstorage-sr.json"
LOCKFILE = ".txstorage.lock"
IMAGE_EXTS = {".qcow2": "qcow2", ".raw": "raw"}
MiB = 1 << 20
# A temporary file this old is a crash's leftover, not work in progress.
STALE_TMP_AGE = 3600


def xapi_time(when=None):
    """A timestamp as xapi writes them: 20240131T12:34:56Z."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return when.strftime("%Y%m%dT%H:%M:%SZ")


def _write_json(path, data):
    tmp = os.path.join(os.path.dirname(path),
                       ".%s.%s.tmp" % (os.path.basename(path),
                                       uuidlib.uuid4().hex[:8]))
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError:
        # A torn or foreign file: treat as absent rather than fail a scan.
        return default


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _usage(path):
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


class _SRLock:
    """Serialises metadata changes on one SR: threads of this process via
    a re-entrant lock, other processes (and hosts, on NFS) via flock on a
    file inside the SR."""

    def __init__(self, path):
        self._path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd = None

    def __enter__(self):
        self._rlock.acquire()
        if self._depth == 0:
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                self._rlock.release()
                raise StorageError.named("SRUnavailable",
                                         "cannot lock SR: %s" % e)
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._rlock.release()


class _SR:
    """An attached SR."""

    def __init__(self, uuid, path, device_config, capacity):
        self.uuid = uuid
        self.path = path
        self.device_config = dict(device_config)
        self.capacity = capacity          # bytes, 0: the filesystem's size
        self.lock = _SRLock(os.path.join(path, LOCKFILE))
        self.attached = {}                # vdi uuid -> attach count


class _Node:
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
        return _usage(self.path)


class DirectorySRBase:
    """What the file-backed drivers share: the registry of attached SRs,
    locking, and device_config handling."""

    sm_type = None
    vendor = "txxapi"
    copyright = "(C) txxapi contributors"
    version = "1.0"
    required_api_version = "1.0"
    required_cluster_stack = []
    content_type = "user"
    shared = False
    capabilities = []
    configuration = {}

    def __init__(self, host=None):
        # Names this host in activation records on shared SRs.
        self.host = host or socket.gethostname()
        self._srs = {}
        self._srs_lock = threading.Lock()

    @property
    def features(self):
        out = {}
        for cap in self.capabilities:
            name, _, ver = cap.partition("/")
            out[name] = int(ver) if ver else 1
        return out

    @property
    def driver_filename(self):
        return "%s.%s" % (type(self).__module__, type(self).__name__)

    # -- SR registry -------------------------------------------------------

    def _location(self, device_config):
        loc = (device_config or {}).get("location")
        if not loc:
            raise StorageError.named("ConfigLocationMissing")
        return loc

    def _sr_path(self, sr_uuid, device_config):
        """The directory holding SR sr_uuid."""
        return os.path.abspath(self._location(device_config))

    def _registered(self, sr_uuid):
        """An attached SR, SRUnavailable if it is not."""
        with self._srs_lock:
            sr = self._srs.get(sr_uuid)
        if sr is None:
            raise StorageError.named("SRUnavailable",
                                     "SR %s is not attached" % sr_uuid)
        return sr

    def _sr(self, sr_uuid):
        sr = self._registered(sr_uuid)
        if not os.path.isdir(sr.path):
            raise StorageError.named("SRUnavailable",
                                     "no such directory %s" % sr.path)
        return sr

    def _register(self, sr_uuid, path, device_config, capacity=0):
        sr = _SR(sr_uuid, path, device_config, capacity)
        with self._srs_lock:
            old = self._srs.get(sr_uuid)
            if old is not None and old.path == path:
                return old
            self._srs[sr_uuid] = sr
        return sr

    def _fs_figures(self, path):
        st = os.statvfs(path)
        size = st.f_blocks * st.f_frsize
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        return size, used, avail


@implementer(ISRDriver)
class FileSRDriver(CBTMixin, DirectorySRBase):
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
        _write_json(os.path.join(path, MARKER),
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
        _unlink(os.path.join(path, LOCKFILE))
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
            marker = _read_json(os.path.join(path, MARKER), {})
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
        marker = _read_json(marker_path)
        if marker is None:
            # A directory made outside sr_create (SR.introduce of an
            # existing one): adopt it.
            marker = {"uuid": sr_uuid, "type": self.sm_type, "capacity": 0}
            _write_json(marker_path, marker)
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
        marker = _read_json(os.path.join(path, MARKER))
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

    # -- GC ----------------------------------------------------------------

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

    def _files_usage(self, sr):
        return sum(_usage(os.path.join(sr.path, name))
                   for name in os.listdir(sr.path))

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
                    _unlink(path)
            elif name.startswith(".") and ext == ".tmp":
                try:
                    if now - os.stat(path).st_mtime > STALE_TMP_AGE:
                        _unlink(path)
                except FileNotFoundError:
                    pass

    def sr_reset_host(self, sr_uuid, host=None):
        """Drop every activation `host` holds on the SR, as upstream's
        resetvdis does when a host starts: none of its VMs runs any
        more.  Returns the uuids of the VDIs released."""
        sr = self._sr(sr_uuid)
        host = host or self.host
        released = []
        with sr.lock:
            for name in os.listdir(sr.path):
                stem, ext = os.path.splitext(name)
                if ext != ".active" or name.startswith("."):
                    continue
                path = os.path.join(sr.path, name)
                holders = _read_json(path, {})
                if host in holders:
                    del holders[host]
                    released.append(stem)
                    if holders:
                        _write_json(path, holders)
                    else:
                        _unlink(path)
        return sorted(released)

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
            _unlink(self._meta_path(sr, parent.uuid))
            _unlink(self._active_path(sr, parent.uuid))

    def _backing_of(self, node):
        hdr = qemu.read_qcow2_header(node.path)
        return hdr[1] if hdr else None

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
            _write_json(self._meta_path(sr, vdi_uuid), meta)
            try:
                if fmt == "raw":
                    with open(tmp, "wb") as f:
                        f.truncate(size)
                else:
                    qemu.img_create(tmp, fmt, size)
                os.replace(tmp, path)
            except BaseException:
                _unlink(tmp)
                _unlink(self._meta_path(sr, vdi_uuid))
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
                _write_json(self._meta_path(sr, vdi_uuid), meta)
                return
            self._remove_files(sr, vdi_uuid, node.path)

    def vdi_attach(self, sr_uuid, vdi_uuid, writable):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            node = self._get(sr, nodes, vdi_uuid)
            if writable and (node.hidden or node.children
                             or node.meta.get("read_only")):
                raise StorageError.named(
                    "VDIUnavailable", "VDI %s is read-only" % vdi_uuid)
            sr.attached[vdi_uuid] = sr.attached.get(vdi_uuid, 0) + 1
            return AttachInfo(sr_uuid=sr_uuid, vdi_uuid=vdi_uuid,
                              path=node.path, format=node.format,
                              read_only=not writable,
                              virtual_size=node.virtual_size,
                              xenstore_data={"storage-type": "ext"},
                              cbt_log=self._cbt_log_of(sr, node))

    def vdi_detach(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            n = sr.attached.get(vdi_uuid, 0)
            if n <= 1:
                sr.attached.pop(vdi_uuid, None)
            else:
                sr.attached[vdi_uuid] = n - 1

    def vdi_activate(self, sr_uuid, vdi_uuid, writable, host=None):
        sr = self._sr(sr_uuid)
        host = host or self.host
        mode = "RW" if writable else "RO"
        with sr.lock:
            nodes = self._load(sr)
            self._get(sr, nodes, vdi_uuid)
            path = self._active_path(sr, vdi_uuid)
            holders = _read_json(path, {})
            others = {h: m for h, m in holders.items() if h != host}
            if others and (writable or "RW" in others.values()):
                raise VDIInUse(vdi_uuid, "activate", "VDI %s is active on %s"
                               % (vdi_uuid, ", ".join(
                                   "%s (%s)" % hm for hm in
                                   sorted(others.items()))))
            if holders.get(host) != mode:
                holders[host] = mode
                _write_json(path, holders)

    def vdi_deactivate(self, sr_uuid, vdi_uuid, host=None):
        sr = self._sr(sr_uuid)
        host = host or self.host
        with sr.lock:
            path = self._active_path(sr, vdi_uuid)
            holders = _read_json(path, {})
            if host in holders:
                del holders[host]
                if holders:
                    _write_json(path, holders)
                else:
                    _unlink(path)

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
            _write_json(self._meta_path(sr, base_uuid),
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
                _unlink(tmp)
                if os.path.exists(base_path):
                    if os.path.exists(node.path):
                        _unlink(base_path)
                    else:
                        os.rename(base_path, node.path)
                _unlink(self._meta_path(sr, base_uuid))
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
            _write_json(self._meta_path(sr, new_uuid), meta)
            try:
                qemu.img_create(tmp, "qcow2", size, backing=base_name,
                                backing_fmt="qcow2", error="VDIClone")
                os.replace(tmp, new_path)
            except BaseException:
                _unlink(tmp)
                _unlink(self._meta_path(sr, new_uuid))
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
            meta = _read_json(self._meta_path(sr, vdi_uuid), {})
            if sm_config:
                extra = dict(meta.get("sm_config", {}))
                extra.update({k: v for k, v in sm_config.items()
                              if k not in ("vhd-parent", "image-format")})
                meta["sm_config"] = extra
            meta.pop("hidden", None)
            _write_json(self._meta_path(sr, vdi_uuid), meta)
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
            _write_json(self._meta_path(sr, parent_uuid), meta)

    def vdi_update(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        with sr.lock:
            nodes = self._load(sr)
            return self._info(sr, self._get(sr, nodes, vdi_uuid))

    def vdi_generate_config(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        self.vdi_update(sr_uuid, vdi_uuid)
        return json.dumps({"sm_type": self.sm_type, "sr_uuid": sr_uuid,
                           "vdi_uuid": vdi_uuid,
                           "device_config": sr.device_config},
                          sort_keys=True)

    def vdi_attach_from_config(self, config):
        cfg = json.loads(config)
        with self._srs_lock:
            known = cfg["sr_uuid"] in self._srs
        if not known:
            self.sr_attach(cfg["sr_uuid"], cfg["device_config"])
        return self.vdi_attach(cfg["sr_uuid"], cfg["vdi_uuid"], True)

    # -- helpers -----------------------------------------------------------

    def _image_path(self, sr, uuid, fmt):
        return os.path.join(sr.path, "%s.%s" % (uuid, fmt))

    def _tmp_path(self, sr, uuid, fmt):
        return os.path.join(sr.path, ".%s.%s.%s.tmp"
                            % (uuid, uuidlib.uuid4().hex[:8], fmt))

    def _meta_path(self, sr, uuid):
        return os.path.join(sr.path, uuid + ".meta")

    def _write_meta(self, sr, uuid, meta):
        _write_json(self._meta_path(sr, uuid), meta)

    def _active_path(self, sr, uuid):
        return os.path.join(sr.path, uuid + ".active")

    def _remove_files(self, sr, uuid, path):
        _unlink(path)
        _unlink(self._cbt_path(sr, uuid))
        _unlink(self._meta_path(sr, uuid))
        _unlink(self._active_path(sr, uuid))

    def _busy(self, sr, uuid):
        return bool(sr.attached.get(uuid)) or bool(
            _read_json(self._active_path(sr, uuid), {}))

    def _active_writer(self, sr, uuid):
        return "RW" in _read_json(self._active_path(sr, uuid), {}).values()

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
            meta = _read_json(self._meta_path(sr, stem), {})
            nodes[stem] = _Node(stem, path, fmt, size, parent, meta)
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

"""
What the directory-backed drivers (file, shared file, ISO, udev) share:
the registry of attached SRs, the SR lock and xapi's timestamps.
"""

import datetime
import fcntl
import os
import socket
import threading

from txstorage.errors import StorageError

MARKER = ".txstorage-sr.json"
LOCKFILE = ".txstorage.lock"


def xapi_time(when=None):
    """A timestamp as xapi writes them: 20240131T12:34:56Z."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return when.strftime("%Y%m%dT%H:%M:%SZ")


class SRLock:
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


class AttachedSR:
    """An attached SR."""

    def __init__(self, uuid, path, device_config, capacity):
        self.uuid = uuid
        self.path = path
        self.device_config = dict(device_config)
        self.capacity = capacity          # bytes, 0: the filesystem's size
        self.lock = SRLock(os.path.join(path, LOCKFILE))
        self.attached = {}                # vdi uuid -> attach count


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
        sr = AttachedSR(sr_uuid, path, device_config, capacity)
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

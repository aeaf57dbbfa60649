"""
A shared file SR: the file SR's layout on a directory every host mounts
(NFS in production, a plain directory in tests).  Like upstream's NFSSR,
each SR lives in a subdirectory named by its uuid under the mounted
location, so one export can hold several SRs.

What makes sharing safe: the SR lock is an flock() on a file inside the SR
(NFS carries it between hosts), and each VDI's activations are recorded in
<uuid>.active, so a VDI is active writable on at most one host at a time
and never writable on one host while readable on another.  As upstream,
metadata changes (create, delete, snapshot, clone, resize, gc) are meant
to run on the SR master only; the toolstack routes them there.
"""

import os

from zope.interface import implementer

from txstorage.drivers.directory import MARKER
from txstorage.drivers.file import FileSRDriver
from txstorage.errors import StorageError
from txstorage.interfaces import ISRDriver


@implementer(ISRDriver)
class SharedFileSRDriver(FileSRDriver):
    sm_type = "sharedfile"
    name_label = "Shared directory qcow2"
    name_description = ("SR plugin which represents disks as qcow2 files "
                        "in a directory every host mounts (e.g. over NFS)")
    shared = True
    configuration = {
        "location": "directory mounted on every host (required); the SR "
                    "lives in its <sr-uuid> subdirectory",
        "size": "capacity of the SR in bytes (optional)",
    }

    def _sr_path(self, sr_uuid, device_config):
        base = os.path.abspath(self._location(device_config))
        return os.path.join(base, sr_uuid) if sr_uuid else base

    def _prepare_parent(self, device_config):
        base = self._location(device_config)
        if not os.path.isdir(base):
            raise StorageError.named(
                "SRUnavailable", "%s is not a mounted directory" % base)

    def sr_probe(self, device_config, sm_config=None):
        base = self._sr_path(None, device_config)
        if not os.path.isdir(base):
            raise StorageError.named(
                "SRUnavailable", "%s is not a mounted directory" % base)
        found = []
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if os.path.isfile(os.path.join(path, MARKER)):
                info = self._probe_dir(path)
                if info:
                    found.append(info)
        return found

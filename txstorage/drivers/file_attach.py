"""
A file SR's VDIs in use: attach counts (this process's), activations
(<uuid>.active, shared between hosts through the SR directory) and the
config an attach can later be redone from without the toolstack.
"""

import json
import os

from txstorage.errors import StorageError, VDIInUse
from txstorage.files import read_json, unlink, write_json
from txstorage.types import AttachInfo


class Attachments:
    """vdi_attach, activate and their undoing, sr_reset_host and the
    attach-from-config pair for a driver of the file family."""

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
            holders = read_json(path, {})
            others = {h: m for h, m in holders.items() if h != host}
            if others and (writable or "RW" in others.values()):
                raise VDIInUse(vdi_uuid, "activate", "VDI %s is active on %s"
                               % (vdi_uuid, ", ".join(
                                   "%s (%s)" % hm for hm in
                                   sorted(others.items()))))
            if holders.get(host) != mode:
                holders[host] = mode
                write_json(path, holders)

    def vdi_deactivate(self, sr_uuid, vdi_uuid, host=None):
        sr = self._sr(sr_uuid)
        host = host or self.host
        with sr.lock:
            path = self._active_path(sr, vdi_uuid)
            holders = read_json(path, {})
            if host in holders:
                del holders[host]
                if holders:
                    write_json(path, holders)
                else:
                    unlink(path)

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
                holders = read_json(path, {})
                if host in holders:
                    del holders[host]
                    released.append(stem)
                    if holders:
                        write_json(path, holders)
                    else:
                        unlink(path)
        return sorted(released)

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

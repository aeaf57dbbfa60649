"""
The ISO library SR: a directory of .iso (and .img) files for CD drives,
read-only.  As upstream's ISOSR, a VDI's location is its file name and
VDIs appear and disappear with the files; sr_scan reports what is there.
In legacy mode (device_config legacy_mode, a local directory: the tools
SR) guest-tools and xs-tools images are named as tools ISOs and carry
their version, from the file name, in sm_config.
Upstream's ISO VDIs get fresh uuids from xapi and are matched by location
on later scans; ours are derived from (SR uuid, file name) so they are
stable without a database.
"""

import json
import os
import re
import uuid as uuidlib

from zope.interface import implementer

from txstorage.drivers.directory import DirectorySRBase
from txstorage.errors import StorageError, Unimplemented, VDIMissing
from txstorage.interfaces import ISRDriver
from txstorage.types import AttachInfo, GCResult, SRInfo, VDIInfo

IMAGE_RE = re.compile(r"\.(iso|img)$", re.I)
TOOLS_PREFIXES = ("xs-tools", "guest-tools")
_NAMESPACE = uuidlib.UUID("6f1c2a38-59d7-4c3e-9f0b-2c1f5d0e7a41")


def tools_iso_facts(filename):
    """(name_label, sm_config) of a tools image: "guest-tools-8.3.0-12.iso"
    is guest-tools.iso, version 8.3.0, build 12."""
    prefix = "xs-tools" if filename.startswith("xs-tools") else "guest-tools"
    rest = IMAGE_RE.sub("", filename[len(prefix):]).strip("-")
    version, _, build = rest.partition("-")
    return prefix + ".iso", {"xs-tools-version": version or "unknown",
                             "xs-tools-build": build or "0"}


class NoVDIChanges:
    """An SR whose content comes from elsewhere (files put there by
    someone, devices plugged in): VDI changes are refused, and there is
    nothing to collect or to release."""

    kind = "an ISO SR"

    def sr_gc(self, sr_uuid):
        self._registered(sr_uuid)
        return GCResult()

    def sr_reset_host(self, sr_uuid, host=None):
        return []

    # The config names the VDI by its location (the driver's own id).
    def vdi_generate_config(self, sr_uuid, vdi_uuid):
        sr = self._registered(sr_uuid)
        return json.dumps({"sm_type": self.sm_type, "sr_uuid": sr_uuid,
                           "vdi_uuid": self._location_of(sr, vdi_uuid),
                           "device_config": sr.device_config},
                          sort_keys=True)

    def vdi_attach_from_config(self, config):
        cfg = json.loads(config)
        self.sr_attach(cfg["sr_uuid"], cfg["device_config"])
        return self.vdi_attach(cfg["sr_uuid"], cfg["vdi_uuid"], False)

    def _refuse(self, what):
        raise Unimplemented("%s on %s" % (what, self.kind))

    def vdi_create(self, sr_uuid, vdi_uuid, virtual_size, name_label="",
                   name_description="", sm_config=None, vdi_type="user",
                   read_only=False, sharable=False):
        self._refuse("VDI_CREATE")

    def vdi_delete(self, sr_uuid, vdi_uuid):
        self._refuse("VDI_DELETE")

    def vdi_resize(self, sr_uuid, vdi_uuid, new_size):
        self._refuse("VDI_RESIZE")

    def vdi_snapshot(self, sr_uuid, vdi_uuid, driver_params=None):
        self._refuse("VDI_SNAPSHOT")

    def vdi_clone(self, sr_uuid, vdi_uuid, driver_params=None):
        self._refuse("VDI_CLONE")

    def vdi_compose(self, sr_uuid, parent_uuid, child_uuid):
        self._refuse("VDI_COMPOSE")


@implementer(ISRDriver)
class ISOSRDriver(NoVDIChanges, DirectorySRBase):
    sm_type = "iso"
    name_label = "ISO"
    name_description = "Handles CD images stored as files in iso format"
    content_type = "iso"
    supported_image_formats = ["raw"]
    capabilities = ["SR_SCAN", "SR_ATTACH", "SR_DETACH", "SR_UPDATE",
                    "VDI_ATTACH", "VDI_DETACH", "VDI_INTRODUCE",
                    "VDI_UPDATE", "VDI_GENERATE_CONFIG"]
    configuration = {
        "location": "directory holding the ISO images (required)",
    }

    @staticmethod
    def vdi_uuid_of(sr_uuid, filename):
        return str(uuidlib.uuid5(_NAMESPACE, "%s/%s" % (sr_uuid, filename)))

    # -- SR ----------------------------------------------------------------

    def sr_create(self, sr_uuid, device_config, physical_size=0):
        path = self._sr_path(sr_uuid, device_config)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StorageError.named("ISOMountFailure", str(e))

    def sr_delete(self, sr_uuid, device_config):
        # The images belong to whoever put them there: forget, keep them.
        with self._srs_lock:
            self._srs.pop(sr_uuid, None)

    def sr_attach(self, sr_uuid, device_config):
        path = self._sr_path(sr_uuid, device_config)
        if not os.path.isdir(path):
            raise StorageError.named("ISOMountFailure",
                                     "no such directory %s" % path)
        self._register(sr_uuid, path, device_config)

    def sr_detach(self, sr_uuid):
        with self._srs_lock:
            self._srs.pop(sr_uuid, None)

    def sr_probe(self, device_config, sm_config=None):
        path = self._sr_path(None, device_config)
        if not os.path.isdir(path):
            return []
        size, used, _ = self._fs_figures(path)
        # An ISO directory carries no SR identity; report what is there.
        return [SRInfo(uuid="", physical_size=size,
                       physical_utilisation=used, location=path,
                       content_type="iso")]

    def sr_scan(self, sr_uuid):
        sr = self._sr(sr_uuid)
        return [self._info(sr, name) for name in self._images(sr)]

    def sr_update(self, sr_uuid):
        sr = self._sr(sr_uuid)
        size, used, _ = self._fs_figures(sr.path)
        # Upstream's ISO SR reports virtual_allocation = physical_size.
        return SRInfo(uuid=sr_uuid, physical_size=size,
                      physical_utilisation=used, virtual_allocation=size,
                      content_type="iso", location=sr.path)

    # -- VDI ---------------------------------------------------------------

    def _images(self, sr):
        try:
            names = os.listdir(sr.path)
        except OSError as e:
            raise StorageError.named("SRScan", str(e))
        return sorted(n for n in names
                      if IMAGE_RE.search(n)
                      and os.path.isfile(os.path.join(sr.path, n)))

    def _find(self, sr, vdi):
        """File name of a VDI given by uuid or by location."""
        if vdi and "/" not in vdi and IMAGE_RE.search(vdi) and \
                os.path.isfile(os.path.join(sr.path, vdi)):
            return vdi
        for name in self._images(sr):
            if self.vdi_uuid_of(sr.uuid, name) == vdi:
                return name
        raise VDIMissing(sr.uuid, vdi)

    def _info(self, sr, name):
        try:
            size = os.path.getsize(os.path.join(sr.path, name))
        except OSError:
            raise VDIMissing(sr.uuid, name)
        info = VDIInfo(uuid=self.vdi_uuid_of(sr.uuid, name), location=name,
                       virtual_size=size, physical_utilisation=size,
                       read_only=True, name_label=name, type="user")
        if "legacy_mode" in sr.device_config and \
                name.startswith(TOOLS_PREFIXES):
            info.name_label, info.sm_config = tools_iso_facts(name)
        return info

    def vdi_attach(self, sr_uuid, vdi_uuid, writable):
        sr = self._sr(sr_uuid)
        name = self._find(sr, vdi_uuid)
        if writable:
            raise StorageError.named("VDIUnavailable",
                                     "ISO image %s is read-only" % name)
        path = os.path.join(sr.path, name)
        return AttachInfo(sr_uuid=sr_uuid,
                          vdi_uuid=self.vdi_uuid_of(sr_uuid, name),
                          path=path, format="raw", read_only=True,
                          virtual_size=os.path.getsize(path))

    def vdi_detach(self, sr_uuid, vdi_uuid):
        pass

    def vdi_activate(self, sr_uuid, vdi_uuid, writable, host=None):
        if writable:
            raise StorageError.named("VDIUnavailable",
                                     "ISO image %s is read-only" % vdi_uuid)

    def vdi_deactivate(self, sr_uuid, vdi_uuid, host=None):
        pass

    def vdi_introduce(self, sr_uuid, vdi_uuid, location, sm_config=None):
        sr = self._sr(sr_uuid)
        return self._info(sr, self._find(sr, location))

    def vdi_update(self, sr_uuid, vdi_uuid):
        sr = self._sr(sr_uuid)
        return self._info(sr, self._find(sr, vdi_uuid))

    def _location_of(self, sr, vdi):
        return self._find(sr, vdi)

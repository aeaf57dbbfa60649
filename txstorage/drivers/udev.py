"""
The udev SR: removable block devices of this host (USB disks, CD and DVD
drives) as VDIs.  As upstream's udevSR, device_config location is a
directory of links to the devices (udev rules keep /dev/xapi/block and
/dev/xapi/cd up to date on XCP-ng), each link is one VDI located by its
path, and a scan reports what is plugged in now; none is made or deleted
here.  With no such directory (no rules, nothing plugged in) the SR is
empty and scans fine.  VDI uuids are derived from (SR uuid, location), so
they are stable without a database.
"""

import os
import time
import uuid as uuidlib

from zope.interface import implementer

from txstorage.drivers.directory import DirectorySRBase
from txstorage.drivers.iso import NoVDIChanges
from txstorage.errors import StorageError, VDIMissing
from txstorage.interfaces import ISRDriver
from txstorage.types import AttachInfo, SRInfo, VDIInfo

_NAMESPACE = uuidlib.UUID("0b7f5d1e-3c29-4a8e-8d61-5e2f9c4a7b13")
SYS_BLOCK = "/sys/block"
SECTOR = 512
# Kernel names of optical drives (SCSI CD-ROM), read-only whatever sysfs
# says of the medium.
CD_PREFIXES = ("sr", "scd")


def _sys_text(*parts):
    try:
        with open(os.path.join(SYS_BLOCK, *parts)) as f:
            return f.read().strip()
    except OSError:
        return ""


class _Attached:
    def __init__(self, uuid, path, device_config):
        self.uuid = uuid
        self.path = path
        self.device_config = dict(device_config)


@implementer(ISRDriver)
class UdevSRDriver(NoVDIChanges, DirectorySRBase):
    sm_type = "udev"
    name_label = "udev"
    name_description = ("SR plugin which represents devices plugged in "
                        "via udev as VDIs")
    content_type = "disk"
    supported_image_formats = ["raw"]
    capabilities = ["VDI_INTRODUCE", "VDI_ATTACH", "VDI_DETACH",
                    "VDI_UPDATE", "SR_UPDATE"]
    # Devices come and go with the hardware: none is made here.
    kind = "a udev SR"
    configuration = {
        "location": "directory of links to the removable devices "
                    "(required), e.g. /dev/xapi/block",
    }

    @staticmethod
    def vdi_uuid_of(sr_uuid, location):
        return str(uuidlib.uuid5(_NAMESPACE, "%s/%s" % (sr_uuid, location)))

    # -- SR ----------------------------------------------------------------

    def sr_create(self, sr_uuid, device_config, physical_size=0):
        self._location(device_config)

    def sr_delete(self, sr_uuid, device_config):
        with self._srs_lock:
            self._srs.pop(sr_uuid, None)

    def sr_attach(self, sr_uuid, device_config):
        path = self._sr_path(sr_uuid, device_config)
        with self._srs_lock:
            self._srs[sr_uuid] = _Attached(sr_uuid, path, device_config)

    def sr_detach(self, sr_uuid):
        with self._srs_lock:
            self._srs.pop(sr_uuid, None)

    def sr_probe(self, device_config, sm_config=None):
        return []

    def sr_scan(self, sr_uuid):
        sr = self._registered(sr_uuid)
        infos = (self._info(sr, location) for location in self._links(sr))
        return [info for info in infos if info is not None]

    def sr_update(self, sr_uuid):
        total = sum(info.virtual_size for info in self.sr_scan(sr_uuid))
        return SRInfo(uuid=sr_uuid, physical_size=total,
                      physical_utilisation=total, virtual_allocation=total,
                      content_type=self.content_type,
                      location=self._registered(sr_uuid).path)

    # -- VDI ---------------------------------------------------------------

    def _links(self, sr):
        try:
            names = sorted(os.listdir(sr.path))
        except FileNotFoundError:
            return []   # nothing plugged in (or no udev rules)
        except OSError as e:
            raise StorageError.named("SRScan", str(e))
        return [os.path.join(sr.path, n) for n in names]

    def _info(self, sr, location):
        """VDIInfo of the device a link names, None if it is gone."""
        try:
            hotplugged = os.lstat(location).st_ctime
            device = os.path.realpath(location)
            os.stat(device)
        except OSError:
            return None
        name = os.path.basename(device)
        sectors = _sys_text(name, "size")
        size = int(sectors) * SECTOR if sectors.isdigit() else \
            os.path.getsize(device)   # not a block device sysfs knows
        model = " ".join(filter(None, (_sys_text(name, "device", "vendor"),
                                       _sys_text(name, "device", "model"))))
        read_only = name.startswith(CD_PREFIXES) or \
            _sys_text(name, "ro") == "1"
        return VDIInfo(
            uuid=self.vdi_uuid_of(sr.uuid, location), location=location,
            virtual_size=size, physical_utilisation=size,
            read_only=read_only, name_label=model or name,
            name_description=device, type="user",
            sm_config={"hotplugged_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(hotplugged))})

    def _find(self, sr, vdi):
        """VDIInfo of a VDI given by uuid or by location."""
        for location in self._links(sr):
            if vdi in (location, self.vdi_uuid_of(sr.uuid, location)):
                info = self._info(sr, location)
                if info is not None:
                    return info
        raise VDIMissing(sr.uuid, vdi)

    def vdi_attach(self, sr_uuid, vdi_uuid, writable):
        info = self._find(self._registered(sr_uuid), vdi_uuid)
        if writable and info.read_only:
            raise StorageError.named("VDIUnavailable",
                                     "%s is read-only" % info.location)
        return AttachInfo(sr_uuid=sr_uuid, vdi_uuid=info.uuid,
                          path=os.path.realpath(info.location),
                          format="raw", read_only=not writable,
                          virtual_size=info.virtual_size)

    def vdi_detach(self, sr_uuid, vdi_uuid):
        pass

    def vdi_activate(self, sr_uuid, vdi_uuid, writable, host=None):
        self._find(self._registered(sr_uuid), vdi_uuid)

    def vdi_deactivate(self, sr_uuid, vdi_uuid, host=None):
        pass

    def vdi_introduce(self, sr_uuid, vdi_uuid, location, sm_config=None):
        return self._find(self._registered(sr_uuid), location)

    def vdi_update(self, sr_uuid, vdi_uuid):
        return self._find(self._registered(sr_uuid), vdi_uuid)

    def _location_of(self, sr, vdi):
        return self._find(sr, vdi).location

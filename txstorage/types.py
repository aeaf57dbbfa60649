"""Plain data passed between txstorage drivers and their caller."""

from dataclasses import dataclass, field
from typing import Optional
from xml.sax.saxutils import escape


@dataclass
class SRInfo:
    """What sr_update / sr_probe report about an SR; sizes in bytes."""
    uuid: str
    physical_size: int = 0
    physical_utilisation: int = 0
    virtual_allocation: int = 0
    name_label: str = ""
    name_description: str = ""
    content_type: str = "user"
    shared: bool = False
    sm_config: dict = field(default_factory=dict)
    # Where the SR lives (probe results), e.g. the directory holding it.
    location: str = ""

    @property
    def free_space(self):
        return max(0, self.physical_size - self.physical_utilisation)


@dataclass
class VDIInfo:
    """One VDI as the driver sees it (vdi_create / snapshot / clone / scan).

    location is the driver's id for the VDI (its uuid on file SRs, the file
    name on ISO SRs).  parent is the uuid of the image this one is a
    copy-on-write child of; it is also in sm_config["vhd-parent"], the key
    xapi reads.  hidden marks the read-only base copies a snapshot leaves
    behind: the toolstack introduces them with managed=false.
    """
    uuid: str
    location: str
    virtual_size: int
    physical_utilisation: int = 0
    read_only: bool = False
    parent: Optional[str] = None
    is_snapshot: bool = False
    snapshot_of: Optional[str] = None
    snapshot_time: Optional[str] = None    # "YYYYMMDDTHH:MM:SSZ" (UTC)
    hidden: bool = False
    name_label: str = ""
    name_description: str = ""
    type: str = "user"
    sharable: bool = False
    sm_config: dict = field(default_factory=dict)
    cbt_enabled: bool = False

    @property
    def managed(self):
        return not self.hidden


@dataclass
class AttachInfo:
    """A local image a hypervisor or an HTTP handler can open.

    format: "qcow2" or "raw" (what qemu calls the image format).
    params is the path, as SMAPIv1's vdi_attach returns it.
    """
    sr_uuid: str
    vdi_uuid: str
    path: str
    format: str
    read_only: bool
    virtual_size: int
    o_direct: bool = True
    xenstore_data: dict = field(default_factory=dict)
    # The changed-block log writes through this attach mark, if tracked.
    cbt_log: Optional[str] = None

    @property
    def params(self):
        return self.path


@dataclass
class GCResult:
    """What one sr_gc pass did."""
    removed: list = field(default_factory=list)      # uuids of deleted nodes
    coalesced: list = field(default_factory=list)    # (parent, child) pairs
    skipped: list = field(default_factory=list)      # (uuid, reason) pairs
    reclaimed: int = 0                               # bytes returned


def probe_xml(srs):
    """The XML string SR.probe returns for a list of SRInfo."""
    parts = ["<?xml version=\"1.0\" ?>", "<SRlist>"]
    for sr in srs:
        parts.append("<SR><UUID>%s</UUID>" % escape(sr.uuid))
        if sr.location:
            parts.append("<Location>%s</Location>" % escape(sr.location))
        parts.append("<Size>%d</Size><Utilisation>%d</Utilisation>"
                     % (sr.physical_size, sr.physical_utilisation))
        parts.append("</SR>")
    parts.append("</SRlist>")
    return "".join(parts)

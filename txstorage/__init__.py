"""
txstorage: SRs and VDIs behind SMAPIv1-style drivers (ISRDriver), plus the
disk-format codecs and transfer helpers the HTTP data paths use.

A library for the toolstack: it never imports txxapi or txxenops.  Drivers
block and are thread-safe; call them from a thread pool.
"""

from txstorage.errors import (
    SRFull, SRInUse, SRNotEmpty, StorageError, Unimplemented, VDIInUse,
    VDIIsAPhysicalDevice, VDIMissing)
from txstorage.interfaces import ISRDriver
from txstorage.types import AttachInfo, GCResult, SRInfo, VDIInfo, probe_xml

__all__ = [
    "AttachInfo", "GCResult", "ISRDriver", "SRFull", "SRInUse", "SRInfo",
    "SRNotEmpty", "StorageError", "Unimplemented", "VDIInUse", "VDIInfo",
    "VDIIsAPhysicalDevice", "VDIMissing", "probe_xml",
]

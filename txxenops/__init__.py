"""
txxenops: what the toolstack asks of the hypervisor (xenopsd's job), behind
one interface (IXenopsBackend) with two backends: a simulator and libxl.
Never imports txxapi or txstorage: disks arrive as plain paths.
"""

from txxenops.errors import (
    BackendUnavailable, BadDomainState, Cancelled, DeviceError, DomainNotFound,
    ImageError, InvalidSpec, MigrationError, NotEnoughMemory, ShutdownTimeout,
    SuspendTimeout, XenopsError)
from txxenops.interfaces import IXenopsBackend
from txxenops.types import (
    ConsoleInfo, CpuInfo, DomainEvent, DomainInfo, HostInfo, VBDSpec, VIFSpec,
    VMSpec)

__all__ = [
    "BackendUnavailable", "BadDomainState", "Cancelled", "DeviceError",
    "DomainNotFound", "ImageError", "InvalidSpec", "MigrationError",
    "NotEnoughMemory", "ShutdownTimeout", "SuspendTimeout", "XenopsError",
    "IXenopsBackend", "ConsoleInfo", "CpuInfo", "DomainEvent", "DomainInfo",
    "HostInfo", "VBDSpec", "VIFSpec", "VMSpec",
]

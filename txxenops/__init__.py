"""
txxenops: what the toolstack asks of the hypervisor (xenopsd's job), behind
one interface (IXenopsBackend) with two backends: a simulator and libxl.
Never imports txxapi or txstorage: disks arrive as plain paths.
"""

from txxenops.errors import (  # noqa: F401
    BackendUnavailable, BadDomainState, Cancelled, DeviceError, DomainNotFound,
    ImageError, InvalidSpec, MigrationError, NotEnoughMemory, ShutdownTimeout,
    SuspendTimeout, XenopsError)
from txxenops.interfaces import IXenopsBackend  # noqa: F401
from txxenops.types import (  # noqa: F401
    ConsoleInfo, CpuInfo, DomainEvent, DomainInfo, HostInfo, VBDSpec, VIFSpec,
    VMSpec)

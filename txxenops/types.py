"""
Plain data passed between txxenops backends and their caller.

Everything here is a dataclass of plain values (str, int, float, bool, dict,
list) so that it can be copied between threads, serialised to JSON (state
files, suspend images, migration streams) and rebuilt with ``from_dict``.
Memory amounts are bytes throughout.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional, Tuple

DOMAIN_TYPES = ("pv", "hvm", "pvh", "pv_in_pvh")
DOMAIN_STATES = ("running", "paused", "shutdown", "crashed", "dying")
# Why a domain stopped, as Xen records it (SHUTDOWN_* in xen/sched.h), plus
# 'halt' which guests use as a synonym for poweroff.
SHUTDOWN_REASONS = ("poweroff", "reboot", "suspend", "crash", "watchdog",
                    "soft_reset", "halt")
EVENT_KINDS = ("state", "memory", "vcpus", "device", "guest_metrics")


class _Plain:
    """to_dict/from_dict for the dataclasses below.  from_dict ignores keys
    it does not know, so that state written by a newer version can still
    be read."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _mib(n):
    return n * 1024 * 1024


@dataclass
class CpuInfo:
    number: int
    vendor: str
    model_name: str
    family: str
    model: str
    stepping: str
    speed_mhz: float
    flags: str


@dataclass
class HostInfo:
    hostname: str
    memory_total: int            # bytes
    memory_free: int             # bytes
    hypervisor_version: str
    cpus: list = field(default_factory=list)   # CpuInfo per logical CPU
    dom0_memory: int = 0
    dom0_vcpus: int = 1
    cpu_features: str = ""
    sockets: int = 1
    consoles: list = field(default_factory=list)  # the control domain's


@dataclass
class VBDSpec(_Plain):
    """A disk or CD drive, already attached in dom0 by the toolstack:
    ``path`` is the local file or block device to expose ('' for an empty
    CD drive)."""
    device: str = ""             # 'xvda', 'hda'; '' = derived from userdevice
    userdevice: str = "0"
    mode: str = "RW"             # 'RW' | 'RO'
    type: str = "Disk"           # 'Disk' | 'CD' | 'Floppy'
    path: str = ""
    backend_params: dict = field(default_factory=dict)  # e.g. format: vhd
    empty: bool = False
    bootable: bool = False
    size: int = 0                # a disk's virtual size in bytes (0: unknown)


@dataclass
class VIFSpec(_Plain):
    device: str = "0"
    mac: str = ""
    bridge: str = ""
    mtu: int = 1500
    other_config: dict = field(default_factory=dict)


@dataclass
class VMSpec(_Plain):
    """Everything a backend needs to build a domain for one VM.

    memory_dynamic_min/max and memory_target default to memory_static_max
    when left at 0, so a caller may give only the static maximum."""
    uuid: str
    name: str = ""
    domain_type: str = "pv"
    memory_static_max: int = _mib(256)
    memory_dynamic_min: int = 0
    memory_dynamic_max: int = 0
    memory_target: int = 0
    vcpus_max: int = 1
    vcpus_at_startup: int = 0    # 0 = vcpus_max
    shadow_multiplier: float = 1.0
    vcpu_params: dict = field(default_factory=dict)   # weight, cap, mask
    platform: dict = field(default_factory=dict)
    kernel: str = ""
    ramdisk: str = ""
    cmdline: str = ""
    bootloader: str = ""
    firmware: str = "bios"       # HVM: 'bios' | 'uefi'
    boot_order: str = "cd"       # HVM boot device order
    vbds: List[VBDSpec] = field(default_factory=list)
    vifs: List[VIFSpec] = field(default_factory=list)
    # Backend behaviour knobs (the simulator reads 'simulator-*' keys) and
    # hints such as 'install-distro'.
    other_config: dict = field(default_factory=dict)
    actions_after_shutdown: str = "destroy"
    actions_after_reboot: str = "restart"
    actions_after_crash: str = "restart"

    def __post_init__(self):
        # Accept plain dicts for devices, as from JSON.
        self.vbds = [v if isinstance(v, VBDSpec) else VBDSpec.from_dict(v)
                     for v in self.vbds]
        self.vifs = [v if isinstance(v, VIFSpec) else VIFSpec.from_dict(v)
                     for v in self.vifs]

    @property
    def dynamic_max(self):
        return self.memory_dynamic_max or self.memory_static_max

    @property
    def dynamic_min(self):
        return self.memory_dynamic_min or self.dynamic_max

    @property
    def target(self):
        return self.memory_target or self.dynamic_max

    @property
    def vcpus(self):
        return self.vcpus_at_startup or self.vcpus_max


@dataclass
class ConsoleInfo(_Plain):
    protocol: str                # 'rfb' | 'vt100'
    port: int = 0                # TCP port on ``host``, or 0
    path: str = ""               # Unix socket path, or ''
    host: str = "127.0.0.1"


@dataclass
class DomainInfo(_Plain):
    """A snapshot of one domain.  ``guest_metrics`` is None until the guest
    agent has reported; otherwise a dict shaped like VM_guest_metrics:
    os_version, pv_drivers_version, networks ('0/ip', '0/ipv4/0',
    '0/ipv6/0' ...), disks, memory, other (feature-* flags), live,
    last_updated, can_use_hotplug_vbd/vif, pv_drivers_detected."""
    uuid: str
    domid: int
    name: str = ""
    domain_type: str = "pv"
    state: str = "running"
    shutdown_reason: str = ""    # set when state is shutdown or crashed
    memory_target: int = 0
    memory_actual: int = 0
    memory_overhead: int = 0
    vcpus: int = 1               # online vCPUs
    vcpus_max: int = 1
    vcpu_times: List[float] = field(default_factory=list)  # seconds each
    start_time: float = 0.0      # Unix time the domain was created
    consoles: List[ConsoleInfo] = field(default_factory=list)
    vbds: List[VBDSpec] = field(default_factory=list)
    vifs: List[VIFSpec] = field(default_factory=list)
    guest_metrics: Optional[dict] = None

    @property
    def hvm(self):
        return self.domain_type == "hvm"

    @classmethod
    def from_dict(cls, d):
        info = super().from_dict(d)
        info.consoles = [ConsoleInfo.from_dict(c) for c in info.consoles]
        info.vbds = [VBDSpec.from_dict(v) for v in info.vbds]
        info.vifs = [VIFSpec.from_dict(v) for v in info.vifs]
        return info


@dataclass
class DomainEvent:
    """Something changed about the domain of VM ``uuid``.  ``info`` is the
    domain as it is after the change, or None when the domain no longer
    exists (the VM is halted, suspended or migrated away)."""
    uuid: str
    domid: int
    kind: str                    # one of EVENT_KINDS
    info: Optional[DomainInfo] = None


@dataclass
class DomainStats:
    """What a domain has done so far, for the toolstack's metrics: every
    counter is cumulative (the toolstack turns them into rates), every
    amount in bytes.  ``vbds``: device name -> (bytes read, bytes
    written); ``vifs``: device index -> (bytes received, bytes sent,
    receive errors, send errors), as the guest sees them.  Devices whose
    counters cannot be read are left out."""
    uuid: str
    domid: int
    state: str = "running"
    vcpu_times: List[float] = field(default_factory=list)  # seconds run
    memory_actual: int = 0
    memory_target: int = 0
    memory_internal_free: Optional[int] = None   # from the guest agent
    vbds: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    vifs: Dict[str, Tuple[int, int, int, int]] = field(default_factory=dict)


@dataclass
class HostStats:
    """A sample of the host and its domains (``sample_metrics``), taken at
    ``time``.  ``cpu_idle``: cumulative idle seconds of each physical CPU,
    None where the backend cannot read them; ``cpu_avg_idle``: the same
    averaged over the CPUs.  ``pifs``: device -> (bytes received, bytes
    sent, receive errors, send errors).  ``unavailable``: what the backend
    cannot measure (a data source name pattern) and why."""
    time: float
    memory_total: int
    memory_free: int
    loadavg: float
    cpu_avg_idle: float
    cpu_idle: Optional[List[float]] = None
    pifs: Dict[str, Tuple[int, int, int, int]] = field(default_factory=dict)
    domains: List[DomainStats] = field(default_factory=list)
    control_domain: Optional[DomainStats] = None
    unavailable: Dict[str, str] = field(default_factory=dict)


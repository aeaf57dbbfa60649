"""
A simulated guest: the domain record the simulator keeps (and saves), the
OS its agent reports, the addresses it takes on its VIFs, and the per-VM
knobs read from other_config.
"""

import copy
import hashlib
import time

from txxenops.backends import simload
from txxenops.types import VBDSpec, VIFSpec, VMSpec

DEFAULT_CPU_LOAD = 0.1

# hint -> (name, distro, major, minor, uname)
_OSES = {
    "debian": ("Debian GNU/Linux 12 (bookworm)", "debian", "12", "5",
               "6.1.0-18-amd64"),
    "ubuntu": ("Ubuntu 22.04.4 LTS", "ubuntu", "22", "04",
               "5.15.0-105-generic"),
    "centos": ("CentOS Stream 9", "centos", "9", "0",
               "5.14.0-427.el9.x86_64"),
    "rhel": ("Red Hat Enterprise Linux 9.3 (Plow)", "rhel", "9", "3",
             "5.14.0-362.8.1.el9_3.x86_64"),
    "rocky": ("Rocky Linux 9.3 (Blue Onyx)", "rocky", "9", "3",
              "5.14.0-362.8.1.el9_3.x86_64"),
    "alma": ("AlmaLinux 9.3 (Shamrock Pampas Cat)", "almalinux", "9", "3",
             "5.14.0-362.8.1.el9_3.x86_64"),
    "sles": ("SUSE Linux Enterprise Server 15 SP5", "sles", "15", "5",
             "5.14.21-150500.53-default"),
    "xcp": ("XCP-ng 8.3", "xcp-ng", "8", "3", "4.19.0+1"),
    "windows": ("Microsoft Windows Server 2022 Standard|C:\\Windows|"
                "\\Device\\Harddisk0\\Partition2", "windows", "10", "0", ""),
}
_OS_ALIASES = {"rhel": "rhel", "redhat": "rhel", "oracle": "rhel",
               "almalinux": "alma", "suse": "sles", "opensuse": "sles",
               "win": "windows"}


def _mac_bytes(mac, salt):
    try:
        octets = bytes(int(x, 16) for x in mac.split(":"))
        if len(octets) == 6:
            return octets
    except ValueError:
        pass
    # Stable across processes, unlike hash().
    return b"\x02" + hashlib.sha1(salt.encode()).digest()[:5]


def guest_addresses(vif, salt=""):
    """(ipv4, ipv6) the simulated guest reports on a VIF: 10.x.y.z from the
    last three MAC octets, and the EUI-64 link-local address."""
    m = _mac_bytes(vif.mac, salt + vif.device)
    ipv4 = "10.%d.%d.%d" % (m[3], m[4], m[5] % 254 + 1)
    eui = bytes([m[0] ^ 2, m[1], m[2], 0xFF, 0xFE, m[3], m[4], m[5]])
    groups = ["%x" % int.from_bytes(eui[i:i + 2], "big")
              for i in range(0, 8, 2)]
    return ipv4, "fe80::" + ":".join(groups)


def os_of(spec):
    oc = spec.other_config
    hints = [oc.get("simulator-os", ""), oc.get("install-distro", ""),
             oc.get("os-distro", ""), spec.name]
    if str(spec.platform.get("viridian", "")).lower() == "true":
        hints.insert(1, "windows")
    guess = _OSES["debian"]
    for hint in hints:
        hint = hint.lower()
        key = next((k for k in list(_OSES) + list(_OS_ALIASES)
                    if k in hint), None)
        if key:
            guess = _OSES[_OS_ALIASES.get(key, key)]
            break
    name, distro, major, minor, uname = guess
    return {
        "name": oc.get("simulator-os-name", name),
        "distro": oc.get("simulator-os-distro", distro),
        "major": oc.get("simulator-os-major", major),
        "minor": oc.get("simulator-os-minor", minor),
        "uname": oc.get("simulator-os-uname", uname),
    }


def float_knob(spec, key, default):
    try:
        return float(spec.other_config.get(key, default))
    except (TypeError, ValueError):
        return default


def hung(spec):
    return spec.other_config.get("simulator-hung") == "true"


class Domain:
    """One domain, as the simulated hypervisor knows it."""

    FIELDS = ("domid", "state", "shutdown_reason", "memory_target",
              "memory_actual", "overhead", "vcpus", "cpu_accum", "io_accum",
              "running_since", "start_time", "guest_metrics", "agent_due",
              "console_port", "text_port", "disk_marked")

    def __init__(self, spec, domid, overhead, actual):
        self.spec = spec
        self.domid = domid
        self.state = "building"
        self.shutdown_reason = ""
        self.memory_target = spec.target
        self.memory_actual = actual
        self.overhead = overhead
        self.vcpus = spec.vcpus
        self.cpu_accum = [0.0] * spec.vcpus_max
        self.io_accum = 0.0     # busy seconds the guest's I/O follows
        self.running_since = None
        self.start_time = time.time()
        self.vbds = [copy.deepcopy(v) for v in spec.vbds]
        self.vifs = [copy.deepcopy(v) for v in spec.vifs]
        self.guest_metrics = None
        self.agent_due = None
        self.console_port = 0
        self.text_port = 0
        # device -> bytes of its write stream folded into GuestWrites
        self.disk_marked = {}

    def to_dict(self):
        d = {k: getattr(self, k) for k in self.FIELDS}
        d["spec"] = self.spec.to_dict()
        d["vbds"] = [v.to_dict() for v in self.vbds]
        d["vifs"] = [v.to_dict() for v in self.vifs]
        return d

    @classmethod
    def from_dict(cls, d):
        rec = cls(VMSpec.from_dict(d["spec"]), d["domid"], d["overhead"],
                  d["memory_actual"])
        for k in cls.FIELDS:
            if k in d:
                setattr(rec, k, d[k])
        rec.vbds = [VBDSpec.from_dict(v) for v in d.get("vbds", [])]
        rec.vifs = [VIFSpec.from_dict(v) for v in d.get("vifs", [])]
        return rec

    def cpu_load(self):
        return max(0.0, min(1.0, float_knob(
            self.spec, "simulator-cpu-load", DEFAULT_CPU_LOAD)))

    def _busy(self, channel, now):
        if self.running_since is None:
            return 0.0
        return simload.busy(self.cpu_load(), self.spec.uuid, channel,
                            self.running_since, now)

    def fold_cpu(self, now):
        """Move the running time so far into cpu_accum and io_accum."""
        if self.running_since is not None:
            for i in range(self.vcpus):
                self.cpu_accum[i] += self._busy(i, now)
            self.io_accum += self._busy("io", now)
            self.running_since = now

    def vcpu_times(self, now):
        return [self.cpu_accum[i] + self._busy(i, now)
                for i in range(self.vcpus)]

    def activity(self, now):
        return self.io_accum + self._busy("io", now)

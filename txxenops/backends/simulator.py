"""
The simulator backend: a host modelled in memory, the embedded default
where no Xen is present.  CPUs are taken from the machine it runs on;
memory is a configurable simulated amount.
"""

import os
import socket

from zope.interface import implementer

from txxenops.interfaces import IXenopsBackend
from txxenops.types import CpuInfo, HostInfo

GIB = 1024 ** 3
DEFAULT_MEMORY = 64 * GIB
DOM0_MEMORY = 4 * GIB
XEN_VERSION = "4.17.5"


def read_cpus(path="/proc/cpuinfo"):
    cpus, current = [], {}
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    for block in text.split("\n\n"):
        current = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                current[k.strip()] = v.strip()
        if "processor" in current:
            cpus.append(CpuInfo(
                number=len(cpus),
                vendor=current.get("vendor_id", "GenuineIntel"),
                model_name=current.get("model name", "Simulated CPU"),
                family=current.get("cpu family", "6"),
                model=current.get("model", "0"),
                stepping=current.get("stepping", "0"),
                speed_mhz=float(current.get("cpu MHz", "2000") or 2000),
                flags=current.get("flags", "")))
    if not cpus:
        cpus = [CpuInfo(i, "GenuineIntel", "Simulated CPU", "6", "0", "0",
                        2000.0, "") for i in range(os.cpu_count() or 1)]
    return cpus


@implementer(IXenopsBackend)
class SimulatorBackend:
    name = "simulator"

    def __init__(self, memory=DEFAULT_MEMORY, hostname=None):
        self.memory_total = memory
        self.hostname = hostname or socket.gethostname()
        self.cpus = read_cpus()

    def host_info(self):
        return HostInfo(
            hostname=self.hostname,
            memory_total=self.memory_total,
            memory_free=self.memory_total - DOM0_MEMORY,
            hypervisor_version=XEN_VERSION,
            cpus=list(self.cpus),
            dom0_memory=DOM0_MEMORY,
            dom0_vcpus=min(len(self.cpus), 16),
        )

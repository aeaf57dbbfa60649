"""
Facts about the machine the backend runs on.
"""

import os

from txxenops.types import CpuInfo


def read_cpus(path="/proc/cpuinfo"):
    """The CPUs /proc/cpuinfo lists; made-up ones if it cannot be read."""
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

"""
The simulator's model of what guests do, for the metrics a real host
would report: CPU time, disk and network traffic, the memory the guest
agent sees free, and the physical CPUs and NICs that carry it all.

Each vCPU is busy a fraction of the time that swings around the VM's
``simulator-cpu-load`` (default 0.1) on a slow sine, its phase fixed by
the VM's uuid, so graphs move but two runs agree.  Traffic follows the
guest's CPU activity: so many bytes per busy second on each disk and
NIC.  Everything is an integral over the time the domain ran, so a
paused guest's counters stand still.

``HostLoad`` spreads the guests' vCPU time over the physical CPUs (vCPU
``i`` of domain ``domid`` on CPU ``(domid + i) % n``) and their traffic
over the host's first NIC, and keeps the cumulative idle time of each
CPU and the byte counters of each NIC.
"""

import hashlib
import math

from txxenops.types import DomainStats, HostStats

PERIOD = 90.0           # seconds of one swing of a guest's load
SWING = 0.5             # +-50 % around the mean
DOM0_LOAD = 0.02
VBD_READ_PER_BUSY_S = 1536 * 1024
VBD_WRITE_PER_BUSY_S = 640 * 1024
VIF_RX_PER_BUSY_S = 400 * 1024
VIF_TX_PER_BUSY_S = 150 * 1024
MANAGEMENT_BYTES_PER_S = 2048
_OMEGA = 2 * math.pi / PERIOD


def phase(uuid, channel):
    digest = hashlib.sha1(("%s/%s" % (uuid, channel)).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2 ** 32 * 2 * math.pi


def _swing(mean):
    # Never above 1: a busy guest swings less.
    return 0.0 if mean <= 0 else min(SWING, (1 - mean) / mean)


def load(mean, uuid, channel, t):
    """The fraction of the time vCPU ``channel`` is busy at ``t``."""
    return mean * (1 + _swing(mean) * math.sin(_OMEGA * t + phase(uuid,
                                                                  channel)))


def busy(mean, uuid, channel, t0, t1):
    """Seconds vCPU ``channel`` was busy between ``t0`` and ``t1`` (the
    integral of ``load``)."""
    if t1 <= t0 or mean <= 0:
        return 0.0
    a, p = _swing(mean), phase(uuid, channel)
    return mean * ((t1 - t0) - a / _OMEGA * (math.cos(_OMEGA * t1 + p)
                                              - math.cos(_OMEGA * t0 + p)))


def _device_weight(name):
    # Later disks and NICs carry less than the first.
    digits = "".join(c for c in name if c.isdigit())
    index = int(digits) if digits else (ord(name[-1]) - ord("a")
                                        if name else 0)
    return 1.0 / (1 + max(0, index))


def disk_traffic(vbd, activity):
    """(bytes read, bytes written) of a disk VBD so far, or None for a
    CD drive or an empty one."""
    if vbd.type != "Disk" or vbd.empty:
        return None
    w = _device_weight(vbd.device) * activity
    return int(w * VBD_READ_PER_BUSY_S), int(w * VBD_WRITE_PER_BUSY_S)


def domain_stats(uuid, domid, state, vcpu_times, memory_actual,
                 memory_target, vbds, vifs, activity, agent, now, mean):
    """A DomainStats of a simulated domain: ``activity`` is the busy
    seconds its I/O follows, ``agent`` whether its guest agent runs."""
    disks = {}
    for vbd in vbds:
        traffic = disk_traffic(vbd, activity)
        if traffic is not None:
            disks[vbd.device] = traffic
    nics = {}
    for vif in vifs:
        w = _device_weight(vif.device) * activity
        nics[vif.device] = (int(w * VIF_RX_PER_BUSY_S),
                            int(w * VIF_TX_PER_BUSY_S), 0, 0)
    free = None
    if agent:
        level = load(mean, uuid, "io", now) if state == "running" else 0.0
        free = int(memory_actual * (0.6 - 0.3 * min(1.0, level)))
    return DomainStats(
        uuid=uuid, domid=domid, state=state, vcpu_times=vcpu_times,
        memory_actual=memory_actual, memory_target=memory_target,
        memory_internal_free=free, vbds=disks, vifs=nics)


class HostLoad:
    """The physical side: CPU idle time and NIC counters, accumulated from
    one sample to the next (callers serialise)."""

    def __init__(self, ncpus, dom0_vcpus, dom0_memory, started):
        self.ncpus = max(1, ncpus)
        self.dom0_vcpus = max(1, dom0_vcpus)
        self.dom0_memory = dom0_memory
        self.started = started
        self.last = started
        self.idle = [0.0] * self.ncpus
        self.vcpus = {}         # (uuid, domid) -> busy seconds per vCPU
        self.vifs = {}          # (uuid, domid) -> (bytes in, bytes out)
        self.nics = {}          # device -> [received, sent]

    def sample(self, now, domains, pif_devices, memory_total, memory_free):
        """The HostStats at ``now`` for the DomainStats ``domains``."""
        elapsed = max(0.0, now - self.last)
        used = [0.0] * self.ncpus
        dom0 = DomainStats(
            uuid="", domid=0, memory_actual=self.dom0_memory,
            memory_target=self.dom0_memory,
            vcpu_times=[busy(DOM0_LOAD, "control-domain", i, self.started,
                             now) for i in range(self.dom0_vcpus)])
        vcpus, vifs = {}, {}
        guest_in = guest_out = 0
        for d in [dom0] + list(domains):
            key = (d.uuid, d.domid)
            vcpus[key] = d.vcpu_times
            before = self.vcpus.get(key, ())
            for i, (t, b) in enumerate(zip(d.vcpu_times, before)):
                used[(d.domid + i) % self.ncpus] += max(0.0, t - b)
            totals = vifs[key] = (sum(v[0] for v in d.vifs.values()),
                                  sum(v[1] for v in d.vifs.values()))
            old = self.vifs.get(key)
            if old is not None:
                guest_in += max(0, totals[0] - old[0])
                guest_out += max(0, totals[1] - old[1])
        self.vcpus, self.vifs = vcpus, vifs
        for i in range(self.ncpus):
            self.idle[i] += elapsed - min(elapsed, used[i])
        base = int(MANAGEMENT_BYTES_PER_S * elapsed)
        for n, dev in enumerate(pif_devices):
            counters = self.nics.setdefault(dev, [0, 0])
            # The guests' traffic leaves by the first NIC: what they send,
            # it sends.
            counters[0] += base + (guest_out if n == 0 else 0)
            counters[1] += base + (guest_in if n == 0 else 0)
        self.last = now
        busy_cpus = sum(min(elapsed, u) for u in used) / elapsed \
            if elapsed else 0.0
        return HostStats(
            time=now, memory_total=memory_total, memory_free=memory_free,
            loadavg=busy_cpus, cpu_avg_idle=sum(self.idle) / self.ncpus,
            cpu_idle=list(self.idle),
            pifs={dev: (c[0], c[1], 0, 0) for dev, c in self.nics.items()
                  if dev in pif_devices},
            domains=list(domains), control_domain=dom0)

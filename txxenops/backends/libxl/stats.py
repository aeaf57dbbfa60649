"""
``sample_metrics`` of the libxl backend: what dom0 can read of the host
and its domains without a device model.

* domains: vCPU times (libxl_list_vcpu), memory and its target (libxl),
  the free memory the guest agent writes to xenstore
  (``data/meminfo_free``, KiB);
* disks: blkback's sector counters in sysfs (vbd-<domid>-<devid>); disks
  served some other way are left out;
* NICs: the netback interfaces vif<domid>.<devid> and the host's own
  devices, from /sys/class/net;
* CPUs: the average idle time of the physical CPUs, as the time no domain
  ran (each domain's cpu_time from libxl_dominfo, accumulated from one
  sample to the next).  Per-CPU idle time needs libxenctrl's
  xc_getcpuinfo, which the binding does not have: cpuN is unavailable.
"""

import os
import threading

from txxenops.types import DomainStats, HostStats

KIB = 1024
PAGE = 4096
SECTOR = 512
SYS_NET = "/sys/class/net"
SYS_BLKBACK = "/sys/bus/xen-backend/devices"
UNAVAILABLE = {"cpu[0-9]+": "per-CPU idle time is not readable through the "
                            "libxl binding (it needs xc_getcpuinfo)"}


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def net_counters(dev):
    """(received, sent, receive errors, send errors) of a network device,
    None if it has no statistics."""
    base = os.path.join(SYS_NET, dev, "statistics")
    values = [_read_int(os.path.join(base, name)) for name in
              ("rx_bytes", "tx_bytes", "rx_errors", "tx_errors")]
    return None if None in values else tuple(values)


def disk_devid(device):
    """Xen's device number of a disk name (xvda 51712, hda 768), or
    None."""
    if device.startswith("xvd") and len(device) == 4:
        return 202 * 256 + (ord(device[3]) - ord("a")) * 16
    if device.startswith("hd") and len(device) == 3:
        n = ord(device[2]) - ord("a")
        if 0 <= n < 4:
            return (3, 22)[n // 2] * 256 + (n % 2) * 64
    return None


def disk_counters(domid, device):
    devid = disk_devid(device)
    if devid is None:
        return None
    base = os.path.join(SYS_BLKBACK, "vbd-%d-%d" % (domid, devid),
                        "statistics")
    rd, wr = (_read_int(os.path.join(base, n)) for n in ("rd_sect",
                                                          "wr_sect"))
    return None if rd is None or wr is None else (rd * SECTOR, wr * SECTOR)


class CpuAccount:
    """The physical CPUs' cumulative idle time: elapsed time times the
    CPUs, less what the domains ran, summed sample by sample."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last = None
        self.cpu_times = {}       # domid -> ns run
        self.idle = 0.0           # CPU-seconds

    def advance(self, now, ncpus, cpu_times):
        with self.lock:
            if self.last is not None:
                ran = sum(max(0, ns - self.cpu_times[d])
                          for d, ns in cpu_times.items()
                          if d in self.cpu_times) / 1e9
                capacity = max(0.0, now - self.last) * ncpus
                self.idle += max(0.0, capacity - ran)
            self.last = now
            self.cpu_times = dict(cpu_times)
            return self.idle / max(1, ncpus)


def vcpu_times(backend, domid):
    """Seconds each online vCPU of the domain has run."""
    ffi, lib = backend.ffi, backend.lib
    nb, ncpus = ffi.new("int *"), ffi.new("int *")
    vcpus = lib.libxl_list_vcpu(backend._ctx, domid, nb, ncpus)
    if vcpus == ffi.NULL:
        return []
    try:
        return [vcpus[i].vcpu_time / 1e9 for i in range(nb[0])
                if vcpus[i].online]
    finally:
        lib.libxl_vcpuinfo_list_free(vcpus, nb[0])


def memory_target_kib(backend, di):
    target = backend.ffi.new("uint64_t *")
    if backend.lib.libxl_get_memory_target(backend._ctx, di.domid, target):
        return di.current_memkb
    return target[0]


def domain_stats(backend, di, vm_spec, state):
    free = backend._xs_read("/local/domain/%d/data/meminfo_free" % di.domid)
    try:
        free = int(free) * KIB if free is not None else None
    except ValueError:
        free = None
    vbds, vifs = {}, {}
    for vbd in (vm_spec.vbds if vm_spec else []):
        counters = disk_counters(di.domid, vbd.device)
        if counters is not None:
            vbds[vbd.device] = counters
    for vif in (vm_spec.vifs if vm_spec else []):
        counters = net_counters("vif%d.%s" % (di.domid, vif.device))
        if counters is not None:
            rx, tx, rx_err, tx_err = counters
            # dom0's side of the link: what it sends the guest receives.
            vifs[vif.device] = (tx, rx, tx_err, rx_err)
    return DomainStats(
        uuid=di.uuid, domid=di.domid, state=state,
        vcpu_times=vcpu_times(backend, di.domid),
        memory_actual=di.current_memkb * KIB,
        memory_target=memory_target_kib(backend, di) * KIB,
        memory_internal_free=free, vbds=vbds, vifs=vifs)


def sample(backend, pif_devices, account, now):
    pi = backend._physinfo()
    ncpus = pi["nr_cpus"]
    domains, cpu_times = [], {}
    for di in backend._xen_domains():
        cpu_times[di.domid] = di.cpu_time
        if di.state not in ("running", "paused"):
            continue
        with backend._lock:
            vm = backend._vms.get(di.uuid)
        spec = vm.spec if vm is not None and vm.domid == di.domid else None
        domains.append(domain_stats(backend, di, spec, di.state))
    dom0 = backend._dominfo(0)
    control = None
    if dom0 is not None:
        cpu_times[0] = dom0.cpu_time
        control = domain_stats(backend, dom0, None, "running")
    pifs = {}
    for dev in pif_devices:
        counters = net_counters(dev)
        if counters is not None:
            pifs[dev] = counters
    try:
        loadavg = os.getloadavg()[0]
    except OSError:
        loadavg = 0.0
    return HostStats(
        time=now, memory_total=pi["total_pages"] * PAGE,
        memory_free=backend._free(pi), loadavg=loadavg,
        cpu_avg_idle=account.advance(now, ncpus, cpu_times), cpu_idle=None,
        pifs=pifs, domains=domains, control_domain=control,
        unavailable=dict(UNAVAILABLE))

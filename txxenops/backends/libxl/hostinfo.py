"""
The host as the libxl backend describes it: Xen's physical information,
the memory free for new domains, and the metrics sample (stats.py).
"""

import time

from txxenops.backends.libxl import stats
from txxenops.backends.libxl.domains import KIB
from txxenops.memory import memory_overhead
from txxenops.types import CpuInfo, HostInfo

PAGE = 4096


class HostQueries:
    """LibxlBackend's host queries (mixed into it)."""

    def _physinfo(self):
        pi = self.ffi.new("libxl_physinfo *")
        self.lib.libxl_physinfo_init(pi)
        try:
            self._call("libxl_get_physinfo", self._ctx, pi)
            return {k: getattr(pi, k) for k in (
                "nr_cpus", "cpu_khz", "total_pages", "free_pages",
                "scrub_pages", "outstanding_pages", "threads_per_core",
                "cores_per_socket", "nr_nodes")}
        finally:
            self.lib.libxl_physinfo_dispose(pi)

    def _free(self, pi=None):
        # Pages being scrubbed are free to allocate; claims of builds in
        # progress are not.
        pi = pi or self._physinfo()
        return max(0, pi["free_pages"] + pi["scrub_pages"]
                   - pi["outstanding_pages"]) * PAGE

    def host_info(self):
        self._check_open()
        pi = self._physinfo()
        vi = self.lib.libxl_get_version_info(self._ctx)
        version = "%d.%d%s" % (vi.xen_version_major, vi.xen_version_minor,
                               self._ffi_mod.text(vi.xen_version_extra))
        dom0 = self._dominfo(0)
        mhz = pi["cpu_khz"] / 1000.0
        cpus = []
        for i in range(pi["nr_cpus"]):
            # dom0's /proc/cpuinfo describes its vCPUs, which run on (and
            # look like) the physical CPUs.
            model = self.cpus[i % len(self.cpus)]
            cpus.append(CpuInfo(i, model.vendor, model.model_name,
                                model.family, model.model, model.stepping,
                                mhz or model.speed_mhz, model.flags))
        sockets = pi["nr_cpus"] // max(1, pi["threads_per_core"]
                                       * pi["cores_per_socket"])
        return HostInfo(
            hostname=self.hostname,
            memory_total=pi["total_pages"] * PAGE,
            memory_free=self._free(pi),
            hypervisor_version=version,
            cpus=cpus,
            dom0_memory=dom0.current_memkb * KIB if dom0 else 0,
            dom0_vcpus=dom0.vcpu_online if dom0 else 1,
            cpu_features=cpus[0].flags if cpus else "",
            sockets=max(1, sockets))

    def free_memory(self):
        self._check_open()
        return self._free()

    def memory_overhead(self, spec):
        # XAPI's model; on real Xen it is what must stay free beside the
        # guest's own pages.
        return memory_overhead(spec)

    def sample_metrics(self, pif_devices):
        self._check_open()
        return stats.sample(self, pif_devices, self._cpu_account,
                            time.time())

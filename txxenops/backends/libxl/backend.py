"""
The libxl backend: a placeholder providing IXenopsBackend over libxenlight.

The cffi binding and the real implementation are a later task.  How each
operation maps onto libxl (for that task):
  start      libxl_domain_config_from_json + libxl_domain_create_new
             (paused), then libxl_domain_unpause unless asked paused
  pause      libxl_domain_pause / libxl_domain_unpause
  shutdown   clean: libxl_domain_shutdown (writes control/shutdown) and
             wait for LIBXL_EVENT_TYPE_DOMAIN_SHUTDOWN; then
             libxl_domain_destroy; hard: libxl_domain_destroy
  reboot     as shutdown with libxl_domain_reboot, then create again
  suspend    libxl_domain_suspend to the image fd; resume:
             libxl_domain_create_restore from it
  migrate    libxl_domain_suspend with LIBXL_SUSPEND_LIVE to the socket fd
             / libxl_domain_create_restore on the receiver
  inspect    libxl_list_domain, libxl_domain_info, libxl_list_vcpu,
             libxl_get_physinfo, libxl_get_free_memory, libxl_get_version_info
  devices    libxl_device_disk_add/remove, libxl_cdrom_insert,
             libxl_device_nic_add/remove
  memory     libxl_set_memory_target; vCPUs: libxl_set_vcpuonline
  events     libxl_evenable_domain_death per domain, libxl_event_wait on a
             backend thread: DOMAIN_SHUTDOWN (shutdown_reason) and
             DOMAIN_DEATH become DomainEvents for the subscribers.
"""

from zope.interface import implementer

from txxenops.interfaces import IXenopsBackend
from txxenops.memory import memory_overhead

LATER = "the libxl backend is not implemented yet (libxl cffi binding task)"


def _later(*_args, **_kwargs):
    raise NotImplementedError(LATER)


@implementer(IXenopsBackend)
class LibxlBackend:
    name = "libxl"

    def __init__(self, binding):
        self.binding = binding

    def memory_overhead(self, spec):
        # The same model applies on real Xen.
        return memory_overhead(spec)

    host_info = free_memory = start = pause = unpause = shutdown = \
        reboot = suspend = resume = destroy = migrate_send = \
        migrate_receive = cancel = domain_info = list_domains = plug_vbd = \
        unplug_vbd = insert_cd = eject_cd = plug_vif = unplug_vif = \
        set_memory_target = set_vcpus = subscribe = unsubscribe = \
        staticmethod(_later)

    def close(self):
        pass

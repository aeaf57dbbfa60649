"""
The domains in Xen and what the libxl backend keeps about each VM's:
finding a VM's domain (Xen is the source of truth: the domain whose handle
is the VM uuid), adopting domains it did not build, and describing them as
DomainInfo.
"""

import json
import uuid as uuidlib

from txxenops.backends.libxl import errors, stats
from txxenops.backends.libxl.errors import LibxlError
from txxenops.errors import BadDomainState, DomainNotFound
from txxenops.memory import memory_overhead
from txxenops.types import ConsoleInfo, DomainInfo, VMSpec

KIB = 1024
SHUTDOWN_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash",
                    4: "watchdog", 5: "soft_reset"}


class Vm:
    """What the backend keeps about a VM's current domain."""

    def __init__(self, uuid, domid, spec=None, config=None):
        self.uuid = uuid
        self.domid = domid
        self.spec = spec            # None for a domain adopted from Xen
        self.config = config        # libxl JSON the domain was built from
        self.evgen = None           # libxl_evgen_domain_death *
        self.awaiting = False       # an operation waits for its shutdown
        self.shutdown_reason = None  # set by DOMAIN_SHUTDOWN
        self.dead = False           # DOMAIN_DEATH seen
        self.quiet = False          # torn down here: no death event
        self.booting = False        # built from scratch by this backend


class DomInfo:
    """The fields of a libxl_dominfo the backend uses, as Python values."""

    __slots__ = ("uuid", "domid", "state", "shutdown_reason",
                 "current_memkb", "max_memkb", "cpu_time", "vcpu_max_id",
                 "vcpu_online", "domain_type")

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)


def _uuid_str(libxl_uuid, ffi):
    return str(uuidlib.UUID(bytes=bytes(ffi.buffer(libxl_uuid.uuid, 16))))


def _state_of(di):
    if di.dying:
        return "dying"
    if di.shutdown:
        return "crashed" if di.shutdown_reason == 3 else "shutdown"
    if di.paused:
        return "paused"
    return "running"


def _reason_of(di):
    if di.shutdown:
        return SHUTDOWN_REASONS.get(di.shutdown_reason, "")
    return ""


class XenDomains:
    """LibxlBackend's look-ups of domains in Xen (mixed into it)."""

    def _xen_domains(self):
        """libxl_dominfo (copied to dicts) of every domain but dom0."""
        ffi, lib = self.ffi, self.lib
        n = ffi.new("int *")
        lst = lib.libxl_list_domain(self._ctx, n)
        if lst == ffi.NULL:
            raise LibxlError("libxl_list_domain", errors.ERROR_FAIL)
        try:
            return [self._copy_dominfo(lst[i]) for i in range(n[0])
                    if lst[i].domid != 0]
        finally:
            lib.libxl_dominfo_list_free(lst, n[0])

    def _copy_dominfo(self, di):
        return DomInfo(
            uuid=_uuid_str(di.uuid, self.ffi), domid=di.domid,
            state=_state_of(di), shutdown_reason=_reason_of(di),
            current_memkb=di.current_memkb, max_memkb=di.max_memkb,
            cpu_time=di.cpu_time,
            vcpu_max_id=di.vcpu_max_id, vcpu_online=di.vcpu_online,
            domain_type={1: "hvm", 2: "pv", 3: "pvh"}.get(
                di.domain_type, "pv"))

    def _dominfo(self, domid, uuid=None):
        """DomInfo of ``domid``; None if there is no such domain."""
        ffi, lib = self.ffi, self.lib
        di = ffi.new("libxl_dominfo *")
        lib.libxl_dominfo_init(di)
        try:
            rc = lib.libxl_domain_info(self._ctx, di, domid)
            if rc in errors.GONE:
                return None
            if rc:
                raise errors.error_for("libxl_domain_info", rc, (), uuid)
            return self._copy_dominfo(di)
        finally:
            lib.libxl_dominfo_dispose(di)

    def _dominfo_of(self, vm):
        di = self._dominfo(vm.domid, vm.uuid)
        if di is None or di.uuid != vm.uuid:
            raise DomainNotFound(vm.uuid)
        return di

    def _state(self, vm):
        return self._dominfo_of(vm).state

    def _adopt(self, di):
        """The Vm for the Xen domain ``di``, registering it (and its death
        events) if it is new to this backend; None while being built."""
        with self._lock:
            if di.uuid in self._building:
                return None
            vm = self._vms.get(di.uuid)
            if vm is not None and vm.domid == di.domid:
                return vm
            if vm is not None and not vm.dead:
                return vm       # another domain with the same handle
            vm = self._vms[di.uuid] = Vm(di.uuid, di.domid)
        self._enable_events(vm)
        return vm

    def _require(self, uuid, states=None):
        """The VM's Vm, checked against Xen; DomainNotFound if it has no
        domain, BadDomainState if not in one of ``states``."""
        self._check_open()
        with self._lock:
            vm = self._vms.get(uuid)
            building = uuid in self._building
        if building:
            raise DomainNotFound(uuid)
        di = None
        if vm is not None:
            di = self._dominfo(vm.domid, uuid)
            if di is not None and di.uuid != uuid:
                di = None
        if di is None:
            di = next((d for d in self._xen_domains() if d.uuid == uuid),
                      None)
            if di is None or di.state == "dying":
                raise DomainNotFound(uuid)
            vm = self._adopt(di)
            if vm is None:
                raise DomainNotFound(uuid)
        if states is not None and di.state not in states:
            raise BadDomainState(uuid, ", ".join(states), di.state)
        return vm

    def _info(self, vm, di=None):
        ffi, lib = self.ffi, self.lib
        di = di or self._dominfo_of(vm)
        name = self._ffi_mod.take_string(
            lib.libxl_domid_to_name(self._ctx, vm.domid)) or ""
        target = stats.memory_target_kib(self, di)
        times = stats.vcpu_times(self, vm.domid)
        start = lib.libxl_vm_get_start_time(self._ctx, vm.domid)
        consoles = []
        tty = ffi.new("char **")
        if di.state in ("running", "paused") and not lib.libxl_console_get_tty(
                self._ctx, vm.domid, 0, lib.LIBXL_CONSOLE_TYPE_PV, tty):
            path = self._ffi_mod.take_string(tty[0])
            if path:
                # Served on a loopback port, as XAPI serves vt100 ones.
                consoles.append(ConsoleInfo(
                    "vt100", path=path,
                    port=self._pty_consoles.port_for(vm.uuid, path)))
        spec = vm.spec or VMSpec(
            uuid=vm.uuid, domain_type=di.domain_type,
            memory_static_max=di.max_memkb * KIB,
            vcpus_max=di.vcpu_max_id + 1)
        return DomainInfo(
            uuid=vm.uuid, domid=vm.domid, name=name,
            domain_type=di.domain_type, state=di.state,
            shutdown_reason=di.shutdown_reason,
            memory_target=target * KIB,
            memory_actual=di.current_memkb * KIB,
            memory_overhead=memory_overhead(spec),
            vcpus=di.vcpu_online, vcpus_max=di.vcpu_max_id + 1,
            vcpu_times=times,
            start_time=float(start) if start != 0xFFFFFFFF else 0.0,
            consoles=consoles,
            vbds=[v for v in (vm.spec.vbds if vm.spec else [])],
            vifs=[v for v in (vm.spec.vifs if vm.spec else [])])

    def _static_max(self, vm):
        if vm.spec is not None:
            return vm.spec.memory_static_max
        return self._dominfo_of(vm).max_memkb * KIB

    def _stored_config(self, vm):
        """The libxl JSON configuration libxl keeps for the domain."""
        ffi, lib = self.ffi, self.lib
        dc = ffi.new("libxl_domain_config *")
        lib.libxl_domain_config_init(dc)
        try:
            self._call("libxl_retrieve_domain_configuration", self._ctx,
                       vm.domid, dc, ffi.NULL, uuid=vm.uuid)
            return json.loads(self._ffi_mod.take_string(
                lib.libxl_domain_config_to_json(self._ctx, dc)))
        finally:
            lib.libxl_domain_config_dispose(dc)

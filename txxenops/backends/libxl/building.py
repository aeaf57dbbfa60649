"""
Building domains for the libxl backend: checking a VMSpec, turning it into
libxl's JSON domain configuration, creating (or restoring) the domain with
nothing left behind on failure, and destroying it again.
"""

import json
import logging
import time
import uuid as uuidlib

from txxenops.backends.libxl.domains import KIB, Vm
from txxenops.backends.libxl.errors import LibxlError
from txxenops.errors import (
    BadDomainState, DomainNotFound, ImageError, InvalidSpec, NotEnoughMemory)
from txxenops.memory import memory_overhead
from txxenops.spec import check_spec, disk_device_name
from txxenops.types import DomainEvent

log = logging.getLogger(__name__)

# Domain types this backend can build: both boot a kernel directly and need
# no device model in dom0.
SUPPORTED_TYPES = ("pv", "pvh")
# How long destroy waits for Xen to release a dying domain.
DESTROY_WAIT = 30.0
# libxl save stream version written by 4.17 (migration v2).
STREAM_VERSION = 2


def validate(spec):
    """InvalidSpec unless ``spec`` is consistent and buildable here."""
    def bad(reason):
        raise InvalidSpec(spec.uuid, reason)
    if not spec.uuid:
        bad("no uuid")
    try:
        uuidlib.UUID(spec.uuid)
    except ValueError:
        bad("the uuid %r is not a UUID (Xen needs one)" % spec.uuid)
    if spec.domain_type not in SUPPORTED_TYPES:
        bad("domain type %r is not supported by the libxl backend yet "
            "(pv and pvh only)" % spec.domain_type)
    if not spec.kernel and not spec.bootloader:
        bad("a %s domain needs a kernel or a bootloader" % spec.domain_type)
    check_spec(spec)


def domain_config(spec, name, target):
    """libxl's JSON domain configuration for ``spec`` with ``target``
    bytes of memory at boot."""
    b_info = {
        "max_vcpus": spec.vcpus_max,
        "avail_vcpus": list(range(spec.vcpus)),
        "max_memkb": spec.memory_static_max // KIB,
        "target_memkb": target // KIB,
        # Xen reserves the memory when the build starts, so builds running
        # side by side cannot both count the same free pages.
        "claim_mode": "True",
        "type.%s" % spec.domain_type: {},
    }
    for key in ("kernel", "ramdisk", "cmdline", "bootloader"):
        if getattr(spec, key):
            b_info[key] = getattr(spec, key)
    sched = {k: int(spec.vcpu_params[k]) for k in ("weight", "cap")
             if str(spec.vcpu_params.get(k, "")).isdigit()}
    if sched:
        b_info["sched_params"] = sched
    config = {
        "c_info": {"type": spec.domain_type, "name": name,
                   "uuid": spec.uuid},
        "b_info": b_info,
        # The toolstack applies actions_after_*; libxl only reports.
        "on_poweroff": "preserve", "on_reboot": "preserve",
        "on_watchdog": "preserve", "on_crash": "preserve",
    }
    # Devices need dom0's hotplug scripts (and a backend driver) to attach.
    disks = []
    for v in spec.vbds:
        disk = {"vdev": v.device or disk_device_name(spec.domain_type,
                                                     v.userdevice),
                "readwrite": 0 if v.mode == "RO" else 1,
                "is_cdrom": 1 if v.type == "CD" else 0}
        if v.path and not v.empty:
            disk["pdev_path"] = v.path
            disk["format"] = v.backend_params.get("format", "raw")
        disks.append(disk)
    if disks:
        config["disks"] = disks
    nics = []
    for v in spec.vifs:
        nic = {"devid": int(v.device)}
        if v.mac:
            nic["mac"] = v.mac
        if v.bridge:
            nic["bridge"] = v.bridge
        if v.mtu:
            nic["mtu"] = v.mtu
        nics.append(nic)
    if nics:
        config["nics"] = nics
    return config


class DomainBuilding:
    """LibxlBackend's building and destroying of domains (mixed into
    it).  The caller holds the VM's Control lock throughout."""

    def _build(self, spec, paused, restore_fd=None, saved=None):
        """Build a domain for ``spec`` (caller holds the VM's lock), from
        the saved image on ``restore_fd`` if given.  Emits its 'state'
        event; on failure leaves nothing behind."""
        self._check_open()
        existing = next((d for d in self._xen_domains()
                         if d.uuid == spec.uuid and d.state != "dying"),
                        None)
        if existing is not None:
            raise BadDomainState(spec.uuid, "halted", existing.state)
        overhead = memory_overhead(spec)
        if saved is not None:
            # A saved guest comes back with the memory it had.
            low = high = int(saved["memory_actual"])
            if low > spec.memory_static_max:
                raise ImageError(spec.uuid, "image needs more than "
                                 "static_max")
        else:
            low, high = spec.dynamic_min, spec.target
        free = self._free()
        if free < low + overhead:
            raise NotEnoughMemory(low + overhead, free)
        target = min(high, free - overhead)
        if saved is not None and saved.get("config"):
            config = saved["config"]
            config["c_info"]["name"] = self._domain_name(spec)
            config["c_info"]["uuid"] = spec.uuid
        else:
            config = domain_config(spec, self._domain_name(spec), target)
        return self._create(spec.uuid, config, paused, spec=spec,
                            restore_fd=restore_fd, needed=low + overhead)

    def _build_from_config(self, uuid, config):
        return self._create(uuid, config, False)

    def _create(self, uuid, config, paused, spec=None, restore_fd=None,
                needed=None):
        ffi, lib = self.ffi, self.lib
        with self._lock:
            self._building.add(uuid)
        domid = ffi.new("uint32_t *", 0xFFFFFFFF)
        dc = ffi.new("libxl_domain_config *")
        lib.libxl_domain_config_init(dc)
        vm = None
        try:
            self._call("libxl_domain_config_from_json", self._ctx, dc,
                       json.dumps(config).encode())
            t0 = time.monotonic()
            try:
                if restore_fd is None:
                    self._call("libxl_domain_create_new", self._ctx, dc,
                               domid, ffi.NULL, ffi.NULL)
                else:
                    params = ffi.new("libxl_domain_restore_params *")
                    lib.libxl_domain_restore_params_init(params)
                    params.checkpointed_stream = 0
                    params.stream_version = STREAM_VERSION
                    try:
                        self._call("libxl_domain_create_restore", self._ctx,
                                   dc, domid, restore_fd, -1, params,
                                   ffi.NULL, ffi.NULL)
                    finally:
                        lib.libxl_domain_restore_params_dispose(params)
            except LibxlError as e:
                if needed is not None and self._free() < needed:
                    raise NotEnoughMemory(needed, self._free())
                if restore_fd is not None:
                    raise ImageError(uuid, str(e))
                raise
            log.info("built domain %d for VM %s in %.2fs", domid[0], uuid,
                     time.monotonic() - t0)
            vm = Vm(uuid, domid[0], spec, config)
            vm.booting = restore_fd is None
            self._enable_events(vm)
            if not paused:
                self._call("libxl_domain_unpause", self._ctx, domid[0],
                           ffi.NULL, uuid=uuid)
            with self._lock:
                self._vms[uuid] = vm
                self._building.discard(uuid)
                info = self._info(vm)
                self._emit(DomainEvent(uuid, vm.domid, "state", info))
            return info
        except BaseException:
            if domid[0] != 0xFFFFFFFF:
                if vm is not None:
                    self._disable_events(vm)
                try:
                    self._destroy_domid(domid[0], uuid)
                except Exception:
                    log.exception("cleaning up domain %d failed", domid[0])
            raise
        finally:
            lib.libxl_domain_config_dispose(dc)
            with self._lock:
                self._building.discard(uuid)

    def _domain_name(self, spec):
        """libxl insists on unique domain names; VM names need not be."""
        name = spec.name or "vm-" + spec.uuid
        taken = set()
        for di in self._xen_domains():
            taken.add(self._ffi_mod.take_string(
                self.lib.libxl_domid_to_name(self._ctx, di.domid)))
        if name in taken:
            name = "%s-%s" % (name, spec.uuid)
        return name

    def _teardown(self, vm, emit=True):
        """Destroy the VM's domain and wait until Xen has let it go (caller
        holds the VM's lock).  Emits the VM's 'state' None event unless
        ``emit`` is false (reboot)."""
        with self._lock:
            vm.quiet = True
        self._disable_events(vm)
        self._pty_consoles.forget(vm.uuid)
        self._destroy_domid(vm.domid, vm.uuid)
        with self._lock:
            if self._vms.get(vm.uuid) is vm:
                del self._vms[vm.uuid]
            if emit:
                self._emit_gone(vm.uuid, vm.domid)

    def _destroy_domid(self, domid, uuid):
        try:
            self._call("libxl_domain_destroy", self._ctx, domid,
                       self.ffi.NULL, uuid=uuid)
        except DomainNotFound:
            return
        # libxl returns once Xen has started tearing the domain down; its
        # memory is free (and the domid gone) only when Xen is done.
        deadline = time.monotonic() + DESTROY_WAIT
        while time.monotonic() < deadline:
            di = self._dominfo(domid)
            if di is None or di.uuid != uuid:
                return
            time.sleep(0.02)
        log.warning("domain %d of VM %s still dying after %gs", domid,
                    uuid, DESTROY_WAIT)

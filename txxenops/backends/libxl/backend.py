"""
The libxl backend: IXenopsBackend over libxenlight, from dom0.

Xen is the source of truth: a VM's domain is the domain whose Xen handle is
the VM uuid, found in libxl_list_domain, so domains outlive the toolstack
and are adopted again by the next backend.  What Xen does not know (the
VMSpec a domain was built from, waits in progress) is kept here.

Threads (the contract in txxenops.interfaces):
* Every operation runs synchronously on the caller's thread; libxl calls
  are made with a NULL ao_how.  libxl serialises use of its context with
  a lock of its own and cffi drops the GIL around each call, so calls on
  different VMs overlap; operations on one VM are serialised by that VM's
  Control lock, and ``_lock`` guards only the Python bookkeeping (never
  held across a slow libxl call).
* ``txxenops-libxl-poll`` (loop.py) watches the file descriptors and
  timeouts libxl registers through its osevent hooks (the xenstore watch
  behind domain death events among them) and has libxl reap its children.
  It serves the process's one libxl context (context.py), which every
  backend in the process shares and which is never freed.
* ``txxenops-libxl-events`` takes libxl's events (queued by the event hook,
  on whichever thread libxl raised them) and the events operations emit,
  in one queue, and calls the subscribers: one thread, in order.

What libxl does on its own is reported: DOMAIN_SHUTDOWN (the guest powered
off, rebooted, crashed) becomes a 'state' event unless an operation here
asked for it and is waiting, and DOMAIN_DEATH of a domain this backend did
not destroy becomes a 'state' event with info None.
"""

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid as uuidlib

from zope.interface import implementer

from txxenops.backends.libxl import errors, stats
from txxenops.backends.libxl.errors import LibxlError
from txxenops.backends.libxl.ptyconsole import PtyConsoles
from txxenops.backends.libxl.context import (
    EVENT_DOMAIN_DEATH, EVENT_DOMAIN_SHUTDOWN, shared_context)
from txxenops.control import Control
from txxenops.errors import (
    BackendUnavailable, BadDomainState, Cancelled, DeviceError,
    DomainNotFound, ImageError, InvalidSpec, MigrationError, NotEnoughMemory,
    ShutdownTimeout, SuspendTimeout)
from txxenops.interfaces import IXenopsBackend
from txxenops.host import read_cpus
from txxenops.memory import memory_overhead
from txxenops.spec import check_spec, disk_device_name
from txxenops.types import (
    ConsoleInfo, CpuInfo, DomainEvent, DomainInfo, HostInfo, VMSpec)

log = logging.getLogger(__name__)

KIB = 1024
PAGE = 4096
# Domain types this backend can build: both boot a kernel directly and need
# no device model in dom0.
SUPPORTED_TYPES = ("pv", "pvh")
SHUTDOWN_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash",
                    4: "watchdog", 5: "soft_reset"}
# How long destroy waits for Xen to release a dying domain.
DESTROY_WAIT = 30.0
# Balloon and vCPU changes are carried out by the guest; wait this long for
# Xen to show them (XAPI waits for the balloon too).
GUEST_WAIT = 20.0
# memory_actual counts as at the target within this much (the balloon
# driver works in pages; Xen counts a few pages of its own for the guest).
BALLOON_TOLERANCE = 1024 * KIB
IMAGE_MAGIC = b"TXXENOPS-LIBXL-IMAGE"
IMAGE_VERSION = 1
MAX_HEADER = 1024 * 1024
# libxl save stream version written by 4.17 (migration v2).
STREAM_VERSION = 2


class _Vm:
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


@implementer(IXenopsBackend)
class LibxlBackend:
    name = "libxl"

    def __init__(self, binding=None):
        if binding is None:
            from txxenops.backends.libxl import load_binding
            binding = load_binding()
        self._ffi_mod = binding
        self.ffi = binding.ffi
        self.lib = binding.lib
        self.hostname = socket.gethostname()
        self.cpus = read_cpus()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._vms = {}              # uuid -> _Vm
        self._controls = {}         # uuid -> Control
        self._building = set()      # uuids whose domain is being built
        self._pty_consoles = PtyConsoles()
        self._subscribers = ()
        self._queue = queue.Queue()
        self._closed = False
        self._context = shared_context(binding)
        self._ctx = self._context.ctx
        self._xs = self._context.xs
        self._serial = self._context.attach(self)
        self._cpu_account = stats.CpuAccount()
        self._event_thread = threading.Thread(
            target=self._event_loop, name="txxenops-libxl-events",
            daemon=True)
        self._event_thread.start()
        for di in self._xen_domains():
            self._adopt(di)

    def _call(self, function, *args, uuid=None):
        return self._ffi_mod.call(function, *args, uuid=uuid, via=self.lib)

    def _check_open(self):
        if self._closed:
            raise BackendUnavailable("the libxl backend is closed")

    # --- host -------------------------------------------------------------

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

    # --- lifecycle --------------------------------------------------------

    def start(self, spec, paused=False):
        validate(spec)
        ctl = self._control(spec.uuid)
        with ctl.operation():
            info = self._build(spec, paused)
        return info

    def pause(self, uuid):
        return self._set_paused(uuid, "running", "libxl_domain_pause")

    def unpause(self, uuid):
        return self._set_paused(uuid, "paused", "libxl_domain_unpause")

    def shutdown(self, uuid, clean=True, timeout=1200.0):
        ctl = self._control(uuid)
        if not clean:
            self._interrupt(ctl)
        with ctl.operation():
            vm = self._require(uuid, ("running",) if clean else None)
            if clean:
                self._guest_request(ctl, vm, "libxl_domain_shutdown",
                                    timeout, ShutdownTimeout)
            self._teardown(vm)

    def reboot(self, uuid, clean=True, timeout=1200.0, spec=None):
        if spec is not None:
            if spec.uuid != uuid:
                raise InvalidSpec(uuid, "reboot with the spec of VM %s"
                                  % spec.uuid)
            validate(spec)
        ctl = self._control(uuid)
        if not clean:
            self._interrupt(ctl)
        with ctl.operation():
            vm = self._require(uuid, ("running",) if clean else None)
            spec = spec or vm.spec
            config = None if spec else self._stored_config(vm)
            if clean:
                self._guest_request(ctl, vm, "libxl_domain_reboot",
                                    timeout, ShutdownTimeout)
            self._teardown(vm, emit=False)
            try:
                if spec is not None:
                    return self._build(spec, False)
                return self._build_from_config(uuid, config)
            except BaseException:
                self._emit_gone(uuid, vm.domid)
                raise

    def suspend(self, uuid, image, timeout=1200.0):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, ("running",))
            info = self._info(vm)
            header = {
                "uuid": uuid, "domain_type": info.domain_type,
                "memory_actual": info.memory_actual,
                "memory_target": info.memory_target,
                "vcpus": info.vcpus, "name": info.name,
                "config": vm.config or self._stored_config(vm),
                "saved_at": time.time(),
            }
            payload = json.dumps(header).encode()
            if vm.booting:
                # libxc cannot save a guest that has not yet published its
                # memory layout: wait until its PV drivers say they are up.
                # (A restored guest does not advertise again, but was up.)
                self._wait_feature(ctl, vm, "suspend", timeout,
                                   SuspendTimeout)
                vm.booting = False
            try:
                _write_all(image, b"%s %d %d\n" % (
                    IMAGE_MAGIC, IMAGE_VERSION, len(payload)) + payload)
            except OSError as e:
                raise ImageError(uuid, "cannot write the image: %s"
                                 % (e.strerror or e))
            with self._lock:
                vm.awaiting = True
                vm.shutdown_reason = None
            try:
                # Asks the guest to suspend, then libxl-save-helper
                # writes its memory after our header.
                self._call("libxl_domain_suspend", self._ctx, vm.domid,
                           image, 0, self.ffi.NULL, uuid=uuid)
                with self._lock:
                    vm.quiet = True     # torn down below
            except LibxlError as e:
                self._cancel_suspend(vm)
                if e.rc in (errors.ERROR_GUEST_TIMEDOUT,
                            errors.ERROR_TIMEDOUT):
                    raise SuspendTimeout(uuid, timeout)
                raise ImageError(uuid, "saving the domain failed: %s" % e)
            finally:
                with self._lock:
                    vm.awaiting = False
            self._teardown(vm)

    def _cancel_suspend(self, vm):
        """After a failed save: a guest that had already suspended runs
        on (libxl's suspend_cancel, as xl save does on failure)."""
        di = self._dominfo(vm.domid, vm.uuid)
        if di is None or di.shutdown_reason != "suspend":
            return
        try:
            self._call("libxl_domain_resume", self._ctx, vm.domid, 1,
                       self.ffi.NULL, uuid=vm.uuid)
        except LibxlError as e:
            log.warning("VM %s: resuming after a failed save: %s",
                        vm.uuid, e)
            return
        # libxl reports a domain's shutdown once per death watch, and it
        # has reported the suspend: a fresh watch sees the next one.
        self._disable_events(vm)
        with self._lock:
            vm.shutdown_reason = None
        self._enable_events(vm)

    def resume(self, spec, image, paused=False):
        validate(spec)
        try:
            header = _read_header(image, spec.uuid)
        except OSError as e:
            raise ImageError(spec.uuid, "cannot read the image: %s"
                             % (e.strerror or e))
        # An image of another VM is fine: a clone of a suspended VM
        # resumes a copy of its source's image.
        if header.get("domain_type") != spec.domain_type:
            raise ImageError(spec.uuid, "image is of a %s domain"
                             % header.get("domain_type"))
        ctl = self._control(spec.uuid)
        with ctl.operation():
            return self._build(spec, paused, restore_fd=image,
                               saved=header)

    def destroy(self, uuid):
        ctl = self._control(uuid)
        self._interrupt(ctl)
        with ctl.operation():
            try:
                vm = self._require(uuid)
            except DomainNotFound:
                return
            self._teardown(vm)

    def migrate_send(self, uuid, sock, timeout=600.0):
        # libxl_domain_suspend with LIBXL_SUSPEND_LIVE to sock.fileno()
        # and libxl_domain_create_restore on the peer would do it; not
        # wired up yet.
        raise MigrationError(uuid, "migration is not implemented by the "
                             "libxl backend yet")

    def migrate_receive(self, spec, sock, paused=False, timeout=600.0):
        raise MigrationError(spec.uuid, "migration is not implemented by "
                             "the libxl backend yet")

    def cancel(self, uuid):
        with self._lock:
            ctl = self._controls.get(uuid)
        if ctl is not None:
            self._interrupt(ctl)

    # --- inspection -------------------------------------------------------

    def domain_info(self, uuid):
        return self._info(self._require(uuid))

    def list_domains(self):
        self._check_open()
        infos = []
        for di in self._xen_domains():
            vm = self._adopt(di)
            if vm is None:
                continue
            try:
                infos.append(self._info(vm, di))
            except DomainNotFound:
                pass
        return infos

    def sample_metrics(self, pif_devices):
        self._check_open()
        return stats.sample(self, pif_devices, self._cpu_account,
                            time.time())

    # --- devices and resources --------------------------------------------

    def _no_hotplug(self, uuid, device):
        self._require(uuid, ("running", "paused"))
        raise DeviceError(uuid, device, "hot-plug is not implemented by the "
                          "libxl backend yet")

    def plug_vbd(self, uuid, vbd):
        self._no_hotplug(uuid, vbd.device or vbd.userdevice)

    def unplug_vbd(self, uuid, device, force=False):
        self._no_hotplug(uuid, device)

    def insert_cd(self, uuid, device, path):
        self._no_hotplug(uuid, device)

    def eject_cd(self, uuid, device):
        self._no_hotplug(uuid, device)

    def plug_vif(self, uuid, vif):
        self._no_hotplug(uuid, "vif" + vif.device)

    def unplug_vif(self, uuid, device):
        self._no_hotplug(uuid, "vif" + device)

    def set_memory_target(self, uuid, target):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, ("running", "paused"))
            target = int(target)
            static_max = self._static_max(vm)
            if not 0 < target <= static_max:
                raise InvalidSpec(uuid, "memory target %d outside "
                                  "(0, static_max]" % target)
            # enforce=0: keep Xen's maxmem at static_max so that the guest
            # may balloon back up.
            self._call("libxl_set_memory_target", self._ctx, vm.domid,
                       target // KIB, 0, 0, uuid=uuid)
            if self._state(vm) == "running":
                self._wait_guest(ctl, vm, lambda info: abs(
                    info.memory_actual - target) <= BALLOON_TOLERANCE)
            info = self._info(vm)
            self._emit(DomainEvent(uuid, vm.domid, "memory", info))
            return info

    def set_vcpus(self, uuid, n):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, ("running", "paused"))
            vcpus_max = self._dominfo_of(vm).vcpu_max_id + 1
            if not 1 <= n <= vcpus_max:
                raise InvalidSpec(uuid, "%d vCPUs outside 1..%d"
                                  % (n, vcpus_max))
            ffi, lib = self.ffi, self.lib
            cpumap = ffi.new("libxl_bitmap *")
            lib.libxl_bitmap_init(cpumap)
            try:
                self._call("libxl_bitmap_alloc", self._ctx, cpumap,
                           vcpus_max)
                for i in range(n):
                    lib.libxl_bitmap_set(cpumap, i)
                self._call("libxl_set_vcpuonline", self._ctx, vm.domid,
                           cpumap, ffi.NULL, uuid=uuid)
            finally:
                lib.libxl_bitmap_dispose(cpumap)
            if self._state(vm) == "running":
                self._wait_guest(ctl, vm, lambda info: info.vcpus == n)
            info = self._info(vm)
            self._emit(DomainEvent(uuid, vm.domid, "vcpus", info))
            return info

    # --- events and teardown ----------------------------------------------

    def subscribe(self, callback):
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

    def unsubscribe(self, callback):
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers
                                      if s != callback)

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            controls = list(self._controls.values())
            vms = list(self._vms.values())
        for ctl in controls:
            self._interrupt(ctl)
        # The context stays (it is the process's): operations still under
        # way finish on it, and events for this backend stop here.
        self._context.detach(self._serial)
        for vm in vms:
            self._disable_events(vm)
        self._queue.put(None)
        self._event_thread.join(10)
        self._pty_consoles.close()

    # --- libxl events (routed here by context.Context) --------------------

    def libxl_event(self, domid, kind, reason):
        """On whatever thread libxl is running: only queue it."""
        self._queue.put(("libxl", domid, kind, reason))

    def _event_loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if item[0] == "emit":
                    self._deliver(item[1])
                else:
                    self._handle_libxl_event(*item[1:])
            except Exception:
                log.exception("handling %r failed", item)

    def _deliver(self, event):
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed", callback)

    def _handle_libxl_event(self, domid, kind, reason):
        with self._lock:
            vm = next((v for v in self._vms.values() if v.domid == domid),
                      None)
            if vm is None:
                return
            if kind == EVENT_DOMAIN_SHUTDOWN:
                vm.shutdown_reason = SHUTDOWN_REASONS.get(reason, "")
                self._cond.notify_all()
                if vm.awaiting or vm.quiet:
                    return
            elif kind == EVENT_DOMAIN_DEATH:
                vm.dead = True
                self._cond.notify_all()
                if vm.quiet or vm.awaiting:
                    return
                del self._vms[vm.uuid]
            else:
                return
        if kind == EVENT_DOMAIN_DEATH:
            self._pty_consoles.forget(vm.uuid)
            self._disable_events(vm)
            self._deliver(DomainEvent(vm.uuid, domid, "state", None))
            return
        try:
            info = self._info(vm)
        except DomainNotFound:
            return      # already gone: its death event follows
        self._deliver(DomainEvent(vm.uuid, domid, "state", info))

    # --- internals: domains in Xen ----------------------------------------

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
        return _DomInfo(
            uuid=_uuid_str(di.uuid, self.ffi), domid=di.domid,
            state=_state_of(di), shutdown_reason=_reason_of(di),
            current_memkb=di.current_memkb, max_memkb=di.max_memkb,
            cpu_time=di.cpu_time,
            vcpu_max_id=di.vcpu_max_id, vcpu_online=di.vcpu_online,
            domain_type={1: "hvm", 2: "pv", 3: "pvh"}.get(
                di.domain_type, "pv"))

    def _dominfo(self, domid, uuid=None):
        """_DomInfo of ``domid``; None if there is no such domain."""
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
        """The _Vm for the Xen domain ``di``, registering it (and its death
        events) if it is new to this backend; None while being built."""
        with self._lock:
            if di.uuid in self._building:
                return None
            vm = self._vms.get(di.uuid)
            if vm is not None and vm.domid == di.domid:
                return vm
            if vm is not None and not vm.dead:
                return vm       # another domain with the same handle
            vm = self._vms[di.uuid] = _Vm(di.uuid, di.domid)
        self._enable_events(vm)
        return vm

    def _require(self, uuid, states=None):
        """The VM's _Vm, checked against Xen; DomainNotFound if it has no
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

    def _enable_events(self, vm):
        ev = self.ffi.new("libxl_evgen_domain_death **")
        try:
            self._call("libxl_evenable_domain_death", self._ctx, vm.domid,
                       self._context.cookie(self._serial, vm.domid), ev)
        except LibxlError as e:
            log.error("no death events for domain %d: %s", vm.domid, e)
            return
        with self._lock:
            vm.evgen = ev[0]

    def _disable_events(self, vm):
        with self._lock:
            evgen, vm.evgen = vm.evgen, None
        if evgen is not None:
            self.lib.libxl_evdisable_domain_death(self._ctx, evgen)

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

    # --- internals: building and tearing down -----------------------------

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
            vm = _Vm(uuid, domid[0], spec, config)
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

    def _set_paused(self, uuid, expected, function):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, (expected,))
            self._call(function, self._ctx, vm.domid, self.ffi.NULL,
                       uuid=uuid)
            with self._lock:
                info = self._info(vm)
                self._emit(DomainEvent(uuid, vm.domid, "state", info))
            return info

    def _guest_request(self, ctl, vm, function, timeout, error):
        """Ask the guest (PV control node) to shut down or reboot and wait
        until it has; ``error`` after ``timeout``, Cancelled if
        interrupted."""
        with self._lock:
            vm.awaiting = True
            vm.shutdown_reason = None
        try:
            try:
                self._call(function, self._ctx, vm.domid, self.ffi.NULL,
                           uuid=vm.uuid)
            except LibxlError as e:
                if e.rc == errors.ERROR_NOPARAVIRT:
                    raise error(vm.uuid, timeout)
                raise
            with self._cond:
                done = self._cond.wait_for(
                    lambda: vm.shutdown_reason is not None or vm.dead
                    or ctl.cancel.is_set(), timeout)
                if ctl.cancel.is_set():
                    raise Cancelled(vm.uuid)
                if not done:
                    raise error(vm.uuid, timeout)
                # The caller tears the domain down: its death is no news.
                vm.quiet = True
        finally:
            with self._lock:
                vm.awaiting = False

    def _xs_read(self, path):
        ffi, lib = self.ffi, self.lib
        n = ffi.new("unsigned int *")
        value = lib.xs_read(self._xs, lib.XBT_NULL, path.encode(), n)
        if value == ffi.NULL:
            return None
        try:
            return bytes(ffi.buffer(value, n[0])).decode("utf-8", "replace")
        finally:
            lib.free(value)

    def _wait_feature(self, ctl, vm, feature, timeout, error):
        """Wait until the guest advertises control/feature-<feature>."""
        path = "/local/domain/%d/control/feature-%s" % (vm.domid, feature)
        deadline = time.monotonic() + timeout
        while self._xs_read(path) != "1":
            if time.monotonic() > deadline:
                raise error(vm.uuid, timeout)
            if ctl.cancel.wait(0.1):
                raise Cancelled(vm.uuid)

    def _wait_guest(self, ctl, vm, reached):
        deadline = time.monotonic() + GUEST_WAIT
        while not reached(self._info(vm)):
            if time.monotonic() > deadline:
                log.warning("VM %s: the guest did not follow within %gs",
                            vm.uuid, GUEST_WAIT)
                return
            if ctl.cancel.wait(0.1):
                raise Cancelled(vm.uuid)

    def _interrupt(self, ctl):
        ctl.cancel.set()
        with self._cond:
            self._cond.notify_all()

    def _control(self, uuid):
        with self._lock:
            self._check_open()
            ctl = self._controls.get(uuid)
            if ctl is None:
                ctl = self._controls[uuid] = Control(uuid)
            return ctl

    def _emit(self, event):
        """Queue an event behind everything queued so far (callers hold
        self._lock, which keeps the queue in the order of the changes)."""
        self._queue.put(("emit", event))

    def _emit_gone(self, uuid, domid):
        with self._lock:
            self._emit(DomainEvent(uuid, domid, "state", None))


class _DomInfo:
    """The fields of a libxl_dominfo the backend uses, as Python values."""

    __slots__ = ("uuid", "domid", "state", "shutdown_reason",
                 "current_memkb", "max_memkb", "cpu_time", "vcpu_max_id",
                 "vcpu_online", "domain_type")

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_header(fd, uuid):
    """The JSON header of a suspend image; leaves ``fd`` at the libxl
    stream that follows it."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 128:
        c = os.read(fd, 1)
        if not c:
            break
        line += c
    parts = line.split()
    if len(parts) != 3 or parts[0] != IMAGE_MAGIC:
        raise ImageError(uuid, "not a libxl backend suspend image")
    if parts[1] != b"%d" % IMAGE_VERSION:
        raise ImageError(uuid, "image version %s unsupported"
                         % parts[1].decode())
    length = int(parts[2])
    if not 0 < length <= MAX_HEADER:
        raise ImageError(uuid, "bad image header length %d" % length)
    payload = b""
    while len(payload) < length:
        chunk = os.read(fd, length - len(payload))
        if not chunk:
            raise ImageError(uuid, "truncated image")
        payload += chunk
    try:
        return json.loads(payload)
    except ValueError as e:
        raise ImageError(uuid, "bad image header: %s" % e)

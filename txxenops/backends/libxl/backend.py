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

The class is made of one part a module: hostinfo (the host and its
metrics), domains (finding and describing domains in Xen), building
(creating and destroying them), guest (what the guest is asked to do:
shut down, suspend, balloon) and events (death watches and delivery).
What is left here is the VM operations that combine them.
"""

import queue
import socket
import threading

from zope.interface import implementer

from txxenops.backends.libxl import image as suspend_image, stats
from txxenops.backends.libxl.building import DomainBuilding, validate
from txxenops.backends.libxl.context import shared_context
from txxenops.backends.libxl.domains import XenDomains
from txxenops.backends.libxl.events import DomainEvents
from txxenops.backends.libxl.guest import GuestRequests
from txxenops.backends.libxl.hostinfo import HostQueries
from txxenops.backends.libxl.ptyconsole import PtyConsoles
from txxenops.control import control_of
from txxenops.errors import (
    BackendUnavailable, DeviceError, DomainNotFound, ImageError, InvalidSpec,
    MigrationError, ShutdownTimeout)
from txxenops.host import read_cpus
from txxenops.interfaces import IXenopsBackend
from txxenops.types import DomainEvent


@implementer(IXenopsBackend)
class LibxlBackend(HostQueries, XenDomains, DomainBuilding, GuestRequests,
                   DomainEvents):
    name = "libxl"
    # Guests' writes go through blkback: their addresses are not seen.
    tracks_disk_writes = False

    def disk_writes(self, path, mark=None):
        return None

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
        self._vms = {}              # uuid -> Vm
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

    def _control(self, uuid):
        with self._lock:
            self._check_open()
            return control_of(self._controls, uuid)

    def _interrupt(self, ctl):
        ctl.cancel.set()
        with self._cond:
            self._cond.notify_all()

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

    def resume(self, spec, image, paused=False):
        validate(spec)
        header = suspend_image.read_header(image, spec.uuid)
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

    # --- devices ----------------------------------------------------------

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

    # --- teardown ---------------------------------------------------------

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

"""
The simulator backend: a Xen host modelled in memory, the embedded default
where no Xen is present.

What it models (after xenopsd's own simulator, plus what XAPI can observe):
* memory: host total, dom0, and per domain its actual memory plus the
  overhead XAPI would compute; a start takes target memory if free, else
  down to dynamic_min (as squeezed would), else fails with nothing left;
* domids increasing from 1, never reused until they wrap;
* operation times (``op_time``) slept in the calling thread, so concurrent
  operations on different VMs overlap;
* a guest that acknowledges clean shutdown/reboot/suspend after
  ``shutdown_delay`` unless its VM has other_config simulator-hung=true,
  and whose agent reports guest metrics ``agent_delay`` seconds after it
  first runs;
* vCPU time advancing with wall time while running, at a load that
  varies (simload), and the host's CPUs, NICs and the guests' disks and
  NICs counting what they carry (``sample_metrics``);
* an RFB console per domain on a loopback port (see simconsole);
* with ``state_dir``, the domain table survives a restart of the process,
  like domains outliving their toolstack (simstate: each change written
  at the cost of the domains it changed).

Per-VM knobs in VMSpec.other_config:
  simulator-hung           'true': ignores shutdown/reboot/suspend requests,
                           refuses non-forced unplugs, balloon stuck
  simulator-no-agent       'true': no PV tools, so never any guest metrics
  simulator-agent-delay    seconds, overrides ``agent_delay``
  simulator-shutdown-delay seconds, overrides ``shutdown_delay``
  simulator-migrate-delay  seconds a migration takes before its state is
                           sent (cancellable), overrides ``op_time``
  simulator-cpu-load       mean fraction of each vCPU busy (default 0.1);
                           the load swings around it, and disk and network
                           traffic follow it (see simload)
  simulator-os-name/-distro/-major/-minor/-uname   the OS the agent reports
                           (else guessed from install-distro, the name and
                           platform:viridian)
"""

import copy
import logging
import os
import socket
import threading
import time

from zope.interface import implementer

from txxenops.backends import (
    simguest, simimage, simload, simmemory, simstate, simthreads, simwrites)
from txxenops.backends.simconsole import ConsoleServer
from txxenops.backends.simledger import Ledger
from txxenops.control import control_of
from txxenops.errors import (
    BackendUnavailable, BadDomainState, Cancelled, DeviceError, DomainNotFound,
    ImageError, InvalidSpec, MigrationError, NotEnoughMemory, ShutdownTimeout,
    SuspendTimeout, XenopsError)
from txxenops.interfaces import IXenopsBackend
from txxenops.host import read_cpus
from txxenops.memory import memory_overhead
from txxenops.spec import check_spec, disk_device_name
from txxenops.types import (
    DOMAIN_TYPES, SHUTDOWN_REASONS, ConsoleInfo, DomainEvent,
    DomainInfo, HostInfo)

log = logging.getLogger(__name__)

GIB = 1024 ** 3
DEFAULT_MEMORY = 64 * GIB
DOM0_MEMORY = 4 * GIB
XEN_VERSION = "4.17.5"
MAX_DOMID = 0x7FEF            # above are Xen's reserved domids
STATE_FILE = "domains.json"
PV_TOOLS_VERSION = {"major": "9", "minor": "4", "micro": "0", "build": "1"}

@implementer(IXenopsBackend)
class SimulatorBackend:
    name = "simulator"

    def __init__(self, memory=DEFAULT_MEMORY, hostname=None, dom0_memory=None,
                 state_dir=None, op_time=0.05, agent_delay=0.2,
                 shutdown_delay=0.1, check_paths=True, discard_domains=False):
        self.memory_total = int(memory)
        self.hostname = hostname or socket.gethostname()
        self.cpus = read_cpus()
        if dom0_memory is None:
            dom0_memory = min(DOM0_MEMORY, self.memory_total // 8)
        self.dom0_memory = int(dom0_memory)
        self.state_dir = state_dir
        self.op_time = float(op_time)
        self.agent_delay = float(agent_delay)
        self.shutdown_delay = float(shutdown_delay)
        self.check_paths = check_paths
        self._lock = threading.RLock()
        self._domains = {}          # VM uuid -> simguest.Domain
        self._controls = {}         # VM uuid -> Control
        self._next_domid = 1
        self._gen = 0               # bumped on every change to persist
        self._written_gen = 0
        self._dirty = set()         # uuids of domains changed since
        self._write_lock = threading.Lock()
        self._closed = False
        self._consoles = ConsoleServer()
        self._dispatcher = simthreads.Dispatcher()
        self._scheduler = simthreads.Scheduler()
        self._writes = simwrites.GuestWrites()
        self._host_load = simload.HostLoad(
            len(self.cpus), min(len(self.cpus), 16), self.dom0_memory,
            time.time())
        self._table = None
        self._ledger = None
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            self._table = simstate.DomainTable(
                os.path.join(state_dir, STATE_FILE))
            self._ledger = Ledger(state_dir)
            # discard_domains: the host was fenced (or otherwise declared
            # dead) while it was down: its old domains run elsewhere now.
            self._load(discard=discard_domains)
            if discard_domains:
                self._commit(force=True)    # before ha.json is forgotten

    # --- host -------------------------------------------------------------

    def host_info(self):
        return HostInfo(
            hostname=self.hostname,
            memory_total=self.memory_total,
            memory_free=self.free_memory(),
            hypervisor_version=XEN_VERSION,
            cpus=list(self.cpus),
            dom0_memory=self.dom0_memory,
            dom0_vcpus=min(len(self.cpus), 16),
            consoles=self._control_domain_consoles(),
        )

    def _control_domain_consoles(self):
        """The control domain's console and text console (opened once;
        domid 0 is never a guest's)."""
        with self._lock:
            if not getattr(self, "_dom0_consoles", None):
                self._dom0_consoles = [
                    ConsoleInfo(protocol, port=self._consoles.open(
                        0, self.hostname, protocol=protocol))
                    for protocol in ("rfb", "vt100")]
            return list(self._dom0_consoles)

    def free_memory(self):
        with self._lock:
            return max(0, self._free())

    def memory_overhead(self, spec):
        return memory_overhead(spec)

    # --- lifecycle --------------------------------------------------------

    def start(self, spec, paused=False):
        ctl = self._control(spec.uuid)
        with ctl.operation():
            info = self._build(ctl, spec, paused)
        self._commit()
        return info

    def pause(self, uuid):
        return self._set_run_state(uuid, "running", "paused")

    def unpause(self, uuid):
        return self._set_run_state(uuid, "paused", "running")

    def shutdown(self, uuid, clean=True, timeout=1200.0):
        ctl = self._control(uuid)
        if not clean:
            ctl.cancel.set()
        with ctl.operation():
            rec = self._stopped_guest(ctl, uuid, clean, timeout)
            self._teardown(rec)
        self._commit()

    def reboot(self, uuid, clean=True, timeout=1200.0, spec=None):
        if spec is not None and spec.uuid != uuid:
            raise InvalidSpec(uuid, "reboot with the spec of VM %s"
                              % spec.uuid)
        ctl = self._control(uuid)
        if not clean:
            ctl.cancel.set()
        with ctl.operation():
            rec = self._stopped_guest(ctl, uuid, clean, timeout)
            spec = spec or rec.spec
            self._validate(spec)
            self._teardown(rec, emit=False)
            try:
                info = self._build(ctl, spec, False)
            except BaseException:
                self._emit_gone(uuid, rec.domid)
                raise
            finally:
                self._commit()
        return info

    def suspend(self, uuid, image, timeout=1200.0):
        ctl = self._control(uuid)
        with ctl.operation():
            rec = self._get(uuid, ("running",))
            self._guest_request(ctl, rec, timeout, SuspendTimeout)
            self._sleep(ctl, self.op_time)
            with self._lock:
                rec = self._get(uuid, ("running",))
                saved = self._image(rec)
            try:
                simimage.write_image(image, saved)
            except OSError as e:
                raise ImageError(uuid, "cannot write the image: %s"
                                 % (e.strerror or e))
            self._teardown(rec)
        self._commit()

    def resume(self, spec, image, paused=False):
        try:
            saved = simimage.read_image(image)
        except OSError as e:
            raise ImageError(spec.uuid, "cannot read the image: %s"
                             % (e.strerror or e))
        except ValueError as e:
            raise ImageError(spec.uuid, str(e))
        self._check_image(spec, saved)
        ctl = self._control(spec.uuid)
        with ctl.operation():
            info = self._build(ctl, spec, paused, saved=saved)
        self._commit()
        return info

    def destroy(self, uuid):
        ctl = self._control(uuid)
        ctl.cancel.set()
        with ctl.operation():
            with self._lock:
                rec = self._domains.get(uuid)
            if rec is None or rec.state == "building":
                return
            self._teardown(rec)
        self._commit()

    def migrate_send(self, uuid, sock, timeout=600.0):
        ctl = self._control(uuid)
        with ctl.operation():
            rec = self._get(uuid, ("running", "paused"))
            was = rec.state
            handed_over = False
            with self._lock:
                self._change_state(rec, "paused")
                if was != "paused":
                    self._emit("state", rec)
            try:
                sock.settimeout(timeout)
                self._sleep(ctl, simguest.float_knob(
                    rec.spec, "simulator-migrate-delay", self.op_time))
                with self._lock:
                    image = self._image(rec)
                image["state"] = was
                simimage.send_frame(sock, image)
                simimage.expect(sock, uuid, b"READY")
                if not simmemory.send(
                        sock, uuid, simmemory.stream_size(
                            image["memory_actual"]), ctl.cancel.is_set):
                    raise Cancelled(uuid)
                simimage.expect(sock, uuid, b"OK")
                if ctl.cancel.is_set():
                    raise Cancelled(uuid)
                # The hand-over: from here the guest runs on the other
                # host (which has it run from when it reads GO).
                self._record("migrated", uuid)
                handed_over = True
                sock.sendall(b"GO\n")
            except BaseException as e:
                with self._lock:
                    if handed_over and self._domains.get(uuid) is rec:
                        self._record("ran", uuid)
                    if self._domains.get(uuid) is rec and was == "running":
                        self._change_state(rec, "running")
                        self._emit("state", rec)
                if isinstance(e, (MigrationError, Cancelled)):
                    raise
                if isinstance(e, (OSError, ValueError)):
                    raise MigrationError(uuid, str(e) or type(e).__name__)
                raise
            self._teardown(rec)
        self._commit()

    def migrate_receive(self, spec, sock, paused=False, timeout=600.0):
        sock.settimeout(timeout)
        try:
            image = simimage.read_frame(sock)
        except (OSError, ValueError) as e:
            raise MigrationError(spec.uuid, "receiving: %s" % (e,))
        ctl = self._control(spec.uuid)
        try:
            self._check_image(spec, image)
            with self._lock:
                # The sender holds this VM's lock if it is local: fail
                # now rather than wait for it.
                if spec.uuid in self._domains:
                    raise BadDomainState(spec.uuid, "halted",
                                         self._domains[spec.uuid].state)
        except XenopsError as e:
            simimage.send_error(sock, e)
            raise
        with ctl.operation():
            try:
                info = self._build(ctl, spec, True, saved=image,
                                   incoming=True)
            except XenopsError as e:
                simimage.send_error(sock, e)
                raise
            rec = self._get(spec.uuid)
            try:
                # Ready, memory reserved: the guest's memory comes next.
                sock.sendall(b"READY\n")
                try:
                    simmemory.receive(sock, image["uuid"],
                                      simmemory.stream_size(
                                          image["memory_actual"]))
                except ValueError as e:
                    simimage.send_error(sock, ImageError(spec.uuid, str(e)))
                    raise
                sock.sendall(b"OK\n")
                if simimage.read_line(sock) != b"GO":
                    raise MigrationError(spec.uuid, "sender gave up")
                self._record("ran", spec.uuid)
            except BaseException as e:
                self._teardown(rec)
                self._commit()
                if isinstance(e, (OSError, ValueError)):
                    raise MigrationError(spec.uuid, str(e) or "stream ended")
                raise
            with self._lock:
                if not paused and image.get("state") != "paused":
                    self._change_state(rec, "running")
                    self._emit("state", rec)
                info = self._info(rec)
        self._commit()
        return info

    def cancel(self, uuid):
        with self._lock:
            ctl = self._controls.get(uuid)
        if ctl is not None:
            ctl.cancel.set()

    # --- inspection -------------------------------------------------------

    def domain_info(self, uuid):
        with self._lock:
            return self._info(self._get(uuid))

    def list_domains(self):
        with self._lock:
            recs = [r for r in self._domains.values()
                    if r.state != "building"]
            return [self._info(r) for r in sorted(recs,
                                                  key=lambda r: r.domid)]

    def sample_metrics(self, pif_devices):
        with self._lock:
            self._check_open()
            now = time.time()
            stats = []
            for rec in self._domains.values():
                if rec.state not in ("running", "paused"):
                    continue
                stats.append(simload.domain_stats(
                    rec.spec.uuid, rec.domid, rec.state,
                    rec.vcpu_times(now), rec.memory_actual,
                    rec.memory_target, rec.vbds, rec.vifs, rec.activity(now),
                    rec.guest_metrics is not None, now, rec.cpu_load()))
            return self._host_load.sample(now, stats, list(pif_devices),
                                          self.memory_total,
                                          max(0, self._free()))

    # --- devices and resources --------------------------------------------

    # Guests write at known addresses (simwrites): disk_writes says where.
    tracks_disk_writes = True

    def disk_writes(self, path, mark=None):
        with self._lock:
            now = time.time()
            for rec in self._domains.values():
                if rec.state != "building":
                    self._fold(rec, now, [
                        v for v in rec.vbds if v.path == path])
            extents = self._writes.hand_out(path)
        if mark is not None and extents:
            try:
                mark(extents)
            except BaseException:
                with self._lock:
                    self._writes.given_back(path, extents)
                raise
        if extents:
            with self._lock:
                self._writes.taken(path, extents)
                self._gen += 1
        self._commit()
        return extents

    def _fold(self, rec, now, vbds=None):
        """simwrites' fold, the domain's record to be written if its
        write positions moved (caller holds the lock)."""
        if self._writes.fold(rec, now, vbds):
            self._gen += 1
            self._dirty.add(rec.spec.uuid)

    def plug_vbd(self, uuid, vbd):
        ctl = self._control(uuid)
        with ctl.operation():
            rec = self._get(uuid, ("running", "paused"))
            vbd = copy.deepcopy(vbd)
            if not vbd.device:
                vbd.device = disk_device_name(rec.spec.domain_type,
                                              vbd.userdevice)
            if self._find_vbd(rec, vbd.device):
                raise DeviceError(uuid, vbd.device, "device already exists")
            self._check_path(uuid, vbd.device, vbd.path)
            self._sleep(ctl, self.op_time)
            with self._lock:
                rec = self._get(uuid, ("running", "paused"))
                if self._find_vbd(rec, vbd.device):
                    raise DeviceError(uuid, vbd.device,
                                      "device already exists")
                self._writes.plugged(rec, vbd, time.time())
                rec.vbds.append(vbd)
                info = self._emit("device", rec)
        self._commit()
        return info

    def unplug_vbd(self, uuid, device, force=False):
        ctl = self._control(uuid)
        with ctl.operation():
            rec = self._get(uuid, ("running", "paused"))
            if self._find_vbd(rec, device) is None:
                raise DeviceError(uuid, device, "no such device")
            if not force and (simguest.hung(rec.spec) or rec.state != "running"):
                raise DeviceError(uuid, device,
                                  "the guest did not release the device")
            self._sleep(ctl, self.op_time)
            with self._lock:
                rec = self._get(uuid)
                self._fold(rec, time.time(), [
                    v for v in rec.vbds if v.device == device])
                rec.vbds = [v for v in rec.vbds if v.device != device]
                info = self._emit("device", rec)
        self._commit()
        return info

    def insert_cd(self, uuid, device, path):
        ctl = self._control(uuid)
        with ctl.operation():
            self._check_path(uuid, device, path)
            with self._lock:
                rec = self._get(uuid, ("running", "paused"))
                vbd = self._cd_drive(rec, device)
                if not vbd.empty:
                    raise DeviceError(uuid, device, "media already present")
                vbd.path, vbd.empty = path, False
                info = self._emit("device", rec)
        self._commit()
        return info

    def eject_cd(self, uuid, device):
        ctl = self._control(uuid)
        with ctl.operation():
            with self._lock:
                rec = self._get(uuid, ("running", "paused"))
                vbd = self._cd_drive(rec, device)
                if vbd.empty:
                    raise DeviceError(uuid, device, "no media present")
                vbd.path, vbd.empty = "", True
                info = self._emit("device", rec)
        self._commit()
        return info

    def plug_vif(self, uuid, vif):
        ctl = self._control(uuid)
        with ctl.operation():
            rec = self._get(uuid, ("running", "paused"))
            if any(v.device == vif.device for v in rec.vifs):
                raise DeviceError(uuid, "vif" + vif.device,
                                  "device already exists")
            self._sleep(ctl, self.op_time)
            with self._lock:
                rec = self._get(uuid, ("running", "paused"))
                if any(v.device == vif.device for v in rec.vifs):
                    raise DeviceError(uuid, "vif" + vif.device,
                                      "device already exists")
                rec.vifs.append(copy.deepcopy(vif))
                info = self._emit("device", rec)
                self._refresh_networks(rec)
        self._commit()
        return info

    def unplug_vif(self, uuid, device):
        ctl = self._control(uuid)
        with ctl.operation():
            rec = self._get(uuid, ("running", "paused"))
            if not any(v.device == device for v in rec.vifs):
                raise DeviceError(uuid, "vif" + device, "no such device")
            self._sleep(ctl, self.op_time)
            with self._lock:
                rec = self._get(uuid)
                rec.vifs = [v for v in rec.vifs if v.device != device]
                info = self._emit("device", rec)
                self._refresh_networks(rec)
        self._commit()
        return info

    def set_memory_target(self, uuid, target):
        ctl = self._control(uuid)
        with ctl.lock:
            with self._lock:
                rec = self._get(uuid, ("running", "paused"))
                target = int(target)
                if not 0 < target <= rec.spec.memory_static_max:
                    raise InvalidSpec(uuid, "memory target %d outside "
                                      "(0, static_max]" % target)
                rec.memory_target = target
                if not simguest.hung(rec.spec):
                    # Shrinking always works; growing only into free memory.
                    rec.memory_actual = min(
                        target, rec.memory_actual + max(0, self._free()))
                info = self._emit("memory", rec)
        self._commit()
        return info

    def set_vcpus(self, uuid, n):
        ctl = self._control(uuid)
        with ctl.lock:
            with self._lock:
                rec = self._get(uuid, ("running", "paused"))
                if not 1 <= n <= rec.spec.vcpus_max:
                    raise InvalidSpec(uuid, "%d vCPUs outside 1..%d"
                                      % (n, rec.spec.vcpus_max))
                rec.fold_cpu(time.time())
                rec.vcpus = n
                info = self._emit("vcpus", rec)
        self._commit()
        return info

    # --- events and teardown ----------------------------------------------

    def subscribe(self, callback):
        self._dispatcher.subscribe(callback)

    def unsubscribe(self, callback):
        self._dispatcher.unsubscribe(callback)

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            controls = list(self._controls.values())
        for ctl in controls:
            ctl.cancel.set()
        self._scheduler.stop()
        self._consoles.close()
        self._commit(force=True)
        self._dispatcher.stop()
        self._record("close")

    # --- test hooks: what a guest may do on its own ------------------------

    def simulate_crash(self, uuid):
        """The guest crashes: its domain becomes 'crashed' (the toolstack
        applies actions_after_crash)."""
        self.simulate_guest_shutdown(uuid, "crash")

    def simulate_guest_shutdown(self, uuid, reason="poweroff"):
        """The guest shuts itself down (halt, reboot, ...): its domain
        stays as 'shutdown' with that reason until the toolstack acts on
        actions_after_shutdown/reboot."""
        if reason not in SHUTDOWN_REASONS:
            raise InvalidSpec(uuid, "unknown shutdown reason %r" % reason)
        with self._lock:
            rec = self._get(uuid, ("running",))
            self._change_state(rec, "crashed" if reason == "crash"
                               else "shutdown")
            rec.shutdown_reason = reason
            self._emit("state", rec)
        self._commit()

    # --- internals: building and tearing down -----------------------------

    def _build(self, ctl, spec, paused, saved=None, incoming=False):
        """Create a domain for ``spec`` (caller holds the VM's lock).  With
        ``saved`` (an image), the guest continues from it; ``incoming``
        (a live migration's destination): the ledger has it run here only
        from the hand-over."""
        self._validate(spec)
        overhead = memory_overhead(spec)
        with self._lock:
            self._check_open()
            old = self._domains.get(spec.uuid)
            if old is not None:
                raise BadDomainState(spec.uuid, "halted", old.state)
            if saved is not None:
                # A saved guest needs exactly the memory it had.
                low = high = int(saved["memory_actual"])
            else:
                low, high = spec.dynamic_min, spec.target
            free = self._free()
            if free < low + overhead:
                raise NotEnoughMemory(low + overhead, max(0, free))
            actual = min(high, free - overhead)
            rec = simguest.Domain(spec, self._alloc_domid(), overhead, actual)
            if saved is not None:
                rec.memory_target = int(saved.get("memory_target", actual))
                rec.vcpus = min(int(saved.get("vcpus", rec.vcpus)),
                                spec.vcpus_max)
                rec.guest_metrics = saved.get("guest_metrics")
            self._domains[spec.uuid] = rec
        try:
            for vbd in rec.vbds:
                if not vbd.device:
                    vbd.device = disk_device_name(spec.domain_type,
                                                  vbd.userdevice)
                self._check_path(spec.uuid, vbd.device, vbd.path)
            self._sleep(ctl, self.op_time)
            try:
                port = self._consoles.open(rec.domid, spec.name or spec.uuid)
                # A PV guest's text console; an HVM guest has qemu's VNC.
                text_port = 0 if spec.domain_type == "hvm" else \
                    self._consoles.open(rec.domid, spec.name or spec.uuid,
                                        protocol="vt100")
            except OSError as e:
                raise DeviceError(spec.uuid, "console", str(e))
        except BaseException:
            with self._lock:
                if self._domains.get(spec.uuid) is rec:
                    del self._domains[spec.uuid]
            raise
        with self._lock:
            rec.console_port, rec.text_port = port, text_port
            # A guest that goes on (resumed, migrated) keeps its boot time,
            # as xenopsd keeps a VM's last start time.
            rec.start_time = float((saved or {}).get("start_time") or
                                   time.time())
            self._change_state(rec, "paused" if paused else "running")
            if not incoming:
                self._record("ran", spec.uuid)
            if rec.guest_metrics is not None:
                self._refresh_networks(rec, emit=False)
            return self._emit("state", rec)

    def _teardown(self, rec, emit=True):
        """Destroy ``rec``'s domain (caller holds the VM's lock).  Not
        cancellable: it is what interrupting operations end with."""
        if self.op_time:
            time.sleep(self.op_time)
        with self._lock:
            if self._domains.get(rec.spec.uuid) is rec:
                self._fold(rec, time.time())
                del self._domains[rec.spec.uuid]
                self._gen += 1
                self._dirty.add(rec.spec.uuid)
                self._record("ended", rec.spec.uuid)
            self._consoles.close_console(rec.domid)
            if emit:
                self._emit_gone(rec.spec.uuid, rec.domid)

    def _set_run_state(self, uuid, expected, new):
        ctl = self._control(uuid)
        with ctl.lock:
            with self._lock:
                rec = self._get(uuid, (expected,))
                self._change_state(rec, new)
                info = self._emit("state", rec)
        self._commit()
        return info

    def _stopped_guest(self, ctl, uuid, clean, timeout):
        """The record of a VM whose guest is to go: once it has complied
        with the request to stop (clean), or at once, whatever its state
        (hard)."""
        rec = self._get(uuid, ("running",) if clean else None)
        if clean:
            self._guest_request(ctl, rec, timeout, ShutdownTimeout)
            rec = self._get(uuid, ("running",))
        return rec

    def _guest_request(self, ctl, rec, timeout, error):
        """Ask the guest to shut down/reboot/suspend and wait for it to
        comply; raises ``error`` after ``timeout`` if it does not."""
        delay = simguest.float_knob(rec.spec, "simulator-shutdown-delay",
                            self.shutdown_delay)
        if simguest.hung(rec.spec) or delay > timeout:
            if ctl.cancel.wait(timeout):
                raise Cancelled(rec.spec.uuid)
            raise error(rec.spec.uuid, timeout)
        if ctl.cancel.wait(delay):
            raise Cancelled(rec.spec.uuid)

    def _sleep(self, ctl, seconds):
        if seconds > 0 and ctl.cancel.wait(seconds):
            raise Cancelled(ctl.uuid)

    def _change_state(self, rec, new):
        """Set the state, keeping CPU time and the guest agent in step.
        Caller holds self._lock and emits."""
        now = time.time()
        rec.fold_cpu(now)
        rec.state = new
        self._gen += 1
        self._dirty.add(rec.spec.uuid)
        self._consoles.set_state(rec.domid, new)
        if new == "running":
            if rec.running_since is None:
                rec.running_since = now
            self._schedule_agent(rec, now)
        else:
            rec.running_since = None
        if new in ("running", "paused"):
            rec.shutdown_reason = ""

    # --- internals: the guest agent ---------------------------------------

    def _schedule_agent(self, rec, now):
        if (rec.guest_metrics is not None or rec.agent_due is not None
                or rec.spec.other_config.get("simulator-no-agent") == "true"):
            return
        delay = simguest.float_knob(rec.spec, "simulator-agent-delay",
                            self.agent_delay)
        rec.agent_due = now + max(0.0, delay)
        self._scheduler.call_at(rec.agent_due, lambda uuid=rec.spec.uuid,
                                domid=rec.domid: self._agent_reports(uuid,
                                                                     domid))

    def _agent_reports(self, uuid, domid):
        with self._lock:
            rec = self._domains.get(uuid)
            if rec is None or rec.domid != domid or self._closed:
                return
            rec.agent_due = None
            if rec.guest_metrics is not None or rec.state != "running":
                return      # a paused guest reports once unpaused
            rec.guest_metrics = self._guest_metrics(rec)
            self._gen += 1
            self._emit("guest_metrics", rec)
        self._commit()

    def _guest_metrics(self, rec):
        kib = rec.memory_actual // 1024
        return {
            "os_version": simguest.os_of(rec.spec),
            "pv_drivers_version": dict(PV_TOOLS_VERSION),
            "pv_drivers_detected": True,
            "networks": self._networks(rec),
            "disks": {},
            "memory": {"total": str(kib), "free": str(kib // 2)},
            "other": {
                "feature-shutdown": "1", "feature-poweroff": "1",
                "feature-reboot": "1", "feature-suspend": "1",
                "feature-vcpu-hotplug": "1", "feature-balloon": "1",
                "has-vendor-device": "0",
                "platform-feature-multiprocessor-suspend": "1",
            },
            "can_use_hotplug_vbd": "yes",
            "can_use_hotplug_vif": "yes",
            "live": True,
            "last_updated": time.time(),
        }

    def _networks(self, rec):
        nets = {}
        for vif in rec.vifs:
            ipv4, ipv6 = simguest.guest_addresses(vif, rec.spec.uuid)
            nets["%s/ip" % vif.device] = ipv4
            nets["%s/ipv4/0" % vif.device] = ipv4
            nets["%s/ipv6/0" % vif.device] = ipv6
        return nets

    def _refresh_networks(self, rec, emit=True):
        """The agent notices a VIF change (caller holds self._lock)."""
        if rec.guest_metrics is None:
            return
        rec.guest_metrics["networks"] = self._networks(rec)
        rec.guest_metrics["last_updated"] = time.time()
        if emit:
            self._emit("guest_metrics", rec)

    # --- internals: bookkeeping -------------------------------------------

    def _control(self, uuid):
        with self._lock:
            self._check_open()
            return control_of(self._controls, uuid)

    def _check_open(self):
        if self._closed:
            raise BackendUnavailable("the simulator backend is closed")

    def _get(self, uuid, states=None):
        with self._lock:
            rec = self._domains.get(uuid)
            if rec is None or rec.state == "building":
                raise DomainNotFound(uuid)
            if states is not None and rec.state not in states:
                raise BadDomainState(uuid, ", ".join(states), rec.state)
            return rec

    def _free(self):
        used = sum(r.memory_actual + r.overhead
                   for r in self._domains.values())
        return self.memory_total - self.dom0_memory - used

    def _alloc_domid(self):
        used = {r.domid for r in self._domains.values()}
        for _ in range(MAX_DOMID):
            domid = self._next_domid
            self._next_domid = domid + 1 if domid < MAX_DOMID else 1
            if domid not in used:
                return domid
        raise XenopsError("no free domid")

    def _validate(self, spec):
        def bad(reason):
            raise InvalidSpec(spec.uuid, reason)
        if not spec.uuid:
            bad("no uuid")
        if spec.domain_type not in DOMAIN_TYPES:
            bad("unknown domain type %r" % spec.domain_type)
        check_spec(spec)

    def _check_path(self, uuid, device, path):
        # Only local paths are checked; other params pass through as-is,
        # as blkback/qemu would be handed them.
        if self.check_paths and path.startswith("/") and \
                not os.path.exists(path):
            raise DeviceError(uuid, device, "cannot open %s" % path)

    @staticmethod
    def _find_vbd(rec, device):
        return next((v for v in rec.vbds if v.device == device), None)

    def _cd_drive(self, rec, device):
        vbd = self._find_vbd(rec, device)
        if vbd is None:
            raise DeviceError(rec.spec.uuid, device, "no such device")
        if vbd.type != "CD":
            raise DeviceError(rec.spec.uuid, device, "not a CD drive")
        return vbd

    def _info(self, rec):
        return DomainInfo(
            uuid=rec.spec.uuid, domid=rec.domid, name=rec.spec.name,
            domain_type=rec.spec.domain_type, state=rec.state,
            shutdown_reason=rec.shutdown_reason,
            memory_target=rec.memory_target,
            memory_actual=rec.memory_actual,
            memory_overhead=rec.overhead,
            vcpus=rec.vcpus, vcpus_max=rec.spec.vcpus_max,
            vcpu_times=rec.vcpu_times(time.time()),
            start_time=rec.start_time,
            consoles=[ConsoleInfo(protocol, port=port) for protocol, port
                      in (("rfb", rec.console_port),
                          ("vt100", rec.text_port)) if port],
            vbds=copy.deepcopy(rec.vbds), vifs=copy.deepcopy(rec.vifs),
            guest_metrics=copy.deepcopy(rec.guest_metrics))

    def _emit(self, kind, rec):
        """Queue an event for ``rec`` (caller holds self._lock, which keeps
        events in the order of the changes); returns the DomainInfo."""
        info = self._info(rec)
        self._gen += 1
        self._dirty.add(rec.spec.uuid)
        self._dispatcher.put(DomainEvent(rec.spec.uuid, rec.domid, kind,
                                         info))
        return info

    def _emit_gone(self, uuid, domid):
        with self._lock:
            self._dispatcher.put(DomainEvent(uuid, domid, "state", None))

    def _image(self, rec):
        return {
            "uuid": rec.spec.uuid, "domid": rec.domid,
            "domain_type": rec.spec.domain_type,
            "memory_static_max": rec.spec.memory_static_max,
            "memory_actual": rec.memory_actual,
            "memory_target": rec.memory_target,
            "vcpus": rec.vcpus, "state": rec.state,
            "guest_metrics": copy.deepcopy(rec.guest_metrics),
            "start_time": rec.start_time,
            "saved_at": time.time(),
        }

    @staticmethod
    def _check_image(spec, image):
        # An image of another VM is fine: a clone of a suspended VM
        # resumes a copy of its source's image.
        if image.get("domain_type") != spec.domain_type:
            raise ImageError(spec.uuid, "image is of a %s domain"
                             % image.get("domain_type"))
        if int(image.get("memory_actual", 0)) > spec.memory_static_max:
            raise ImageError(spec.uuid, "image needs more than static_max")

    # --- internals: persistence -------------------------------------------

    def _record(self, what, *args):
        if self._ledger is not None:
            getattr(self._ledger, what)(*args)

    def _load(self, discard=False):
        try:
            next_domid, domains = self._table.read()
        except (OSError, ValueError, KeyError) as e:
            # As after a host crash: the domains are gone with it.
            log.warning("ignoring unreadable domain table %s: %s",
                        self._table.path, e)
            return
        self._next_domid = next_domid or 1
        # What guests wrote that was not taken yet, of domains gone too.
        self._writes = simwrites.GuestWrites(self._table.writes)
        if discard:
            log.warning("discarding the domains of a fenced host: %s",
                        sorted(domains))
            self._dirty.update(domains)
            self._gen += 1
            return
        now = time.time()
        for d in domains.values():
            rec = simguest.Domain.from_dict(d)
            name = rec.spec.name or rec.spec.uuid
            try:
                rec.console_port = self._consoles.open(
                    rec.domid, name, rec.console_port)
                if rec.text_port:
                    rec.text_port = self._consoles.open(
                        rec.domid, name, rec.text_port, protocol="vt100")
            except OSError:
                rec.console_port = rec.text_port = 0
            self._consoles.set_state(rec.domid, rec.state)
            self._domains[rec.spec.uuid] = rec
            self._record("ran", rec.spec.uuid)
            if rec.agent_due is not None:
                due = rec.agent_due
                self._scheduler.call_at(
                    max(now, due), lambda uuid=rec.spec.uuid,
                    domid=rec.domid: self._agent_reports(uuid, domid))

    def _commit(self, force=False):
        """Write what changed in the domain table (simstate: the domains
        changed, or now and then the whole table).  Concurrent callers
        share one write (whoever writes covers everyone's changes)."""
        if self._table is None:
            return
        with self._write_lock:
            with self._lock:
                if self._written_gen >= self._gen and not force:
                    return
                gen = self._gen
                dirty, self._dirty = self._dirty, set()
                whole = force or self._table.due(len(self._domains))
                writes = self._writes.take_changes()
                if whole:
                    written = [r.to_dict() for r in self._domains.values()
                               if r.state != "building"]
                    writes = self._writes.all_saved()
                else:
                    written = [(uuid, self._persisted(uuid))
                               for uuid in sorted(dirty)]
                next_domid = self._next_domid
            try:
                if whole:
                    self._table.write_all(next_domid, written, writes)
                else:
                    self._table.append(next_domid, written, writes)
            except Exception:
                with self._lock:
                    self._dirty |= dirty
                    self._writes.changed |= set(writes)
                raise
            self._written_gen = gen

    def _persisted(self, uuid):
        """A domain's record as the table keeps it; None if it has none
        (gone, or still being built)."""
        rec = self._domains.get(uuid)
        if rec is None or rec.state == "building":
            return None
        return rec.to_dict()

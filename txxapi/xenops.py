"""
The bridge between the toolstack and its txxenops backend (XAPI's
xapi_xenops): the only place that calls the backend.

* Backend methods block, so they run on a thread pool of the bridge's own
  (``call``), never on the reactor.
* The backend's domain events arrive on a backend thread; they are handed
  to the reactor and taken as hints, as XAPI takes xenopsd's: the bridge
  then asks the backend for the domain's state (``refresh``) and writes
  what it finds into the database: power_state, domid, resident_on,
  VM_metrics, VM_guest_metrics, consoles and the VBDs' and VIFs'
  currently_attached.  Refreshes of one VM are serialised, so a later
  one never writes older facts than an earlier one.
* While the toolstack itself is changing a VM (``vm_op``) the hints about
  it are ignored; the operation ends with a refresh of its own, so the
  call's reply reflects its outcome and nothing in between (a reboot's
  moment without a domain) is ever written.
* A guest that shut itself down, rebooted or crashed is only reported by
  the backend: the bridge applies the VM's actions_after_* (destroy,
  restart, preserve).
* At start the database is made to agree with the domains that outlived
  the previous process (``resync``).
"""

import time

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txxapi import operations, suspend_images, templates, vmspec
from txxapi.workers import Workers
from txxapi.errors import XenAPIError
from txxapi.events import update_changed
from txxapi.interfaces import IXenopsBridge
from txxapi.values import NULL_REF, DateTime, new_uuid
from txxenops.errors import (
    BadDomainState, Cancelled, DeviceError, DomainNotFound, MigrationError,
    NotEnoughMemory, ShutdownTimeout, SuspendTimeout, XenopsError)

log = Logger()

POOL_SIZE = 64
DEFAULT_SHUTDOWN_TIMEOUT = 1200.0
# Domain states as XAPI's lower-case power state names, for errors.
_STATE_NAMES = {"running": "running", "paused": "paused",
                "halted": "halted", "shutdown": "halted",
                "crashed": "paused", "dying": "halted"}


def ocaml_float(x):
    """A float as XAPI prints it in error parameters (1200. or 1.5)."""
    text = repr(float(x))
    return text[:-1] if text.endswith(".0") else text


class _Refresh:
    __slots__ = ("running", "waiters")

    def __init__(self):
        self.running = False
        self.waiters = []   # (Deferred, force)


@implementer(IXenopsBridge)
class Xenops:
    """A server component wrapping the raw backend."""

    def __init__(self, db, identity, clock, tasks, backend, make_context,
                 shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT, workers=None):
        """``make_context()``: a call context for the toolstack's own work
        (a clean-up at start, a VM's spec at reboot).  ``workers``: where
        backend calls run (by default a pool of POOL_SIZE threads, inline
        under a test Clock)."""
        self.db = db
        self.identity = identity
        self.clock = clock
        self.tasks = tasks
        self.make_context = make_context
        self.backend = backend
        self.name = backend.name
        self.shutdown_timeout = float(shutdown_timeout)
        self.workers = workers or Workers(clock, "xenops", POOL_SIZE)
        self._inflight = {}    # VM uuid -> toolstack operations under way
        self._refreshes = {}   # VM uuid -> _Refresh
        self._acting = {}      # VM uuid -> domid whose end is being handled
        self._running = False

    # --- what the server asks before the bridge starts --------------------

    def host_info(self):
        return self.backend.host_info()

    def free_memory(self):
        return self.backend.free_memory()

    def guest_writes(self):
        """The backend's disk_writes(path) (blocking: the storage threads
        call it), or None when it cannot tell where guests write."""
        return self.backend.disk_writes \
            if getattr(self.backend, "tracks_disk_writes", False) else None

    # --- component lifetime ----------------------------------------------

    def start(self):
        self.workers.start()
        self._running = True
        templates.ensure_default_templates(self.db)
        self.resync()
        self.control_domain_consoles()
        self.backend.subscribe(self._backend_event)
        # Storage is up by now (it starts first); nothing is suspending.
        suspend_images.discard_orphans(self.make_context()).addErrback(
            lambda f: log.failure("discarding orphan suspend images", f))

    def stop(self):
        self._running = False
        self.backend.unsubscribe(self._backend_event)
        # Closing interrupts whatever waits in the backend, so the pool's
        # threads come back; domains live on.
        self.backend.close()
        self.workers.stop()

    # --- calling the backend ----------------------------------------------

    def call(self, method, *args):
        """Run a backend method on the xenops threads: a Deferred of its
        result."""
        return self.workers.run(getattr(self.backend, method), *args)

    def run_blocking(self, fn, *args):
        """Other blocking work that belongs beside the backend's (a
        backend call with the suspend image streamed beside it)."""
        return self.workers.run(fn, *args)

    def vm_op(self, vm_ref, method, *args, task=None, cancellable=True,
              settled=None, errors=None):
        """Run a backend method (a name, or a function of the backend and
        ``args`` for several steps) that changes the VM's domain, as the
        toolstack's own operation: hints about the VM wait, the task can
        cancel it, and it ends with the VM's record brought up to date,
        after ``settled(result or Failure)`` has written what the domain
        cannot tell (e.g. Suspended).  Backend errors come back as XenAPI
        errors (``errors``, an errback, may map some first)."""
        if callable(method):
            def run():
                return self.run_blocking(method, self.backend, *args)
        else:
            def run():
                return self.call(method, *args)
        return self.vm_change(vm_ref, run, task=task, cancellable=cancellable,
                              settled=settled, errors=errors)

    def vm_change(self, vm_ref, run, task=None, cancellable=True,
                  settled=None, errors=None):
        """``run()`` (a Deferred, e.g. of several backend calls with other
        steps between them) as one toolstack operation on the VM, as
        vm_op runs one backend method."""
        uuid = self.db.fields("VM", vm_ref)["uuid"]
        self._inflight[uuid] = self._inflight.get(uuid, 0) + 1
        if task is not None and cancellable:
            self.tasks.set_canceller(task, lambda: self.cancel(uuid))
        d = defer.maybeDeferred(run)

        def settle(result):
            if task is not None and cancellable:
                self.tasks.clear_canceller(task)
            if settled is not None and self.db.exists("VM", vm_ref):
                settled(result)
            left = self._inflight.get(uuid, 1) - 1
            if left:
                self._inflight[uuid] = left
            else:
                self._inflight.pop(uuid, None)
            r = self.refresh(uuid, force=True)
            return r.addCallback(lambda _: result)

        d.addBoth(settle)
        if errors is not None:
            d.addErrback(errors)    # the caller's own mapping comes first
        d.addErrback(self.translate, vm_ref, task)
        return d

    def cancel(self, uuid):
        self.call("cancel", uuid).addErrback(
            lambda f: log.failure("cancelling VM {uuid}", f, uuid=uuid))

    def busy(self, uuid):
        return bool(self._inflight.get(uuid))

    def translate(self, failure, vm_ref, task=None):
        """Backend errors as the XenAPI errors XAPI gives for them."""
        e = failure.value
        if not isinstance(e, XenopsError):
            return failure
        vm = str(vm_ref)
        if isinstance(e, NotEnoughMemory):
            free = vmspec.host_free_memory(self.db, self.identity.host_ref,
                                           ignore_scheduled=vm_ref)
            raise XenAPIError("HOST_NOT_ENOUGH_FREE_MEMORY", str(e.needed),
                              str(free))
        if isinstance(e, BadDomainState):
            raise XenAPIError("VM_BAD_POWER_STATE", vm,
                              self._state_name(e.expected),
                              self._state_name(e.actual))
        if isinstance(e, SuspendTimeout):
            raise XenAPIError("VM_SUSPEND_TIMEOUT", vm, ocaml_float(e.timeout))
        if isinstance(e, ShutdownTimeout):
            raise XenAPIError("VM_SHUTDOWN_TIMEOUT", vm,
                              ocaml_float(e.timeout))
        if isinstance(e, Cancelled):
            raise XenAPIError("TASK_CANCELLED", task or NULL_REF)
        if isinstance(e, DomainNotFound):
            raise XenAPIError("INTERNAL_ERROR", "Object with type VM and id "
                              "%s does not exist in xenopsd" % e.uuid)
        if isinstance(e, MigrationError):
            host = self.identity.host_ref
            raise XenAPIError("VM_MIGRATE_FAILED", vm, host, host, e.reason)
        if isinstance(e, DeviceError):
            raise XenAPIError("INTERNAL_ERROR", "xenopsd: %s" % e)
        raise XenAPIError("INTERNAL_ERROR", "xenopsd: %s" % e)

    @staticmethod
    def _state_name(states):
        return ", ".join(_STATE_NAMES.get(s.strip(), s.strip())
                         for s in states.split(","))

    # --- domain events and refreshes ---------------------------------------

    def _backend_event(self, event):
        # Backend thread: hand over and return at once.
        self.clock.callFromThread(self._event, event.uuid)

    def _event(self, uuid):
        if self._running and not self._inflight.get(uuid):
            self.refresh(uuid)

    def refresh(self, uuid, force=False):
        """Ask the backend for the VM's domain and write what it says; a
        Deferred that fires (with None) once a query that began after this
        call has been applied.  Unforced results are not written while a
        toolstack operation on the VM is under way."""
        st = self._refreshes.get(uuid)
        if st is None:
            st = self._refreshes[uuid] = _Refresh()
        d = defer.Deferred()
        st.waiters.append((d, force))
        if not st.running:
            self._run_refresh(uuid, st)
        return d

    def _run_refresh(self, uuid, st):
        waiters, st.waiters = st.waiters, []
        st.running = True
        force = any(f for _, f in waiters)
        d = self.call("domain_info", uuid)

        def missing(failure):
            failure.trap(DomainNotFound)
            return None

        def apply(info):
            if force or not self._inflight.get(uuid):
                self._apply(uuid, info)

        def finish(result):
            if isinstance(result, Failure):
                log.failure("refreshing VM {uuid}", result, uuid=uuid)
            st.running = False
            if st.waiters:
                self._run_refresh(uuid, st)
            else:
                self._refreshes.pop(uuid, None)
            for w, _ in waiters:
                w.callback(None)

        d.addCallbacks(lambda info: info, missing)
        d.addCallback(apply)
        d.addBoth(finish)

    # --- writing domain facts into the database ----------------------------

    def _vm_ref(self, uuid):
        return self.db.table("VM").by_uuid.get(uuid)

    def _apply(self, uuid, info):
        ref = self._vm_ref(uuid)
        if ref is None:
            return
        vm = self.db.fields("VM", ref)
        if vm["is_control_domain"]:
            return
        if info is None and vm["resident_on"] not in (
                NULL_REF, self.identity.host_ref):
            # Another host runs it (it migrated there): not ours to halt.
            self._host_memory()
            return
        if info is None or info.state == "dying":
            self._acting.pop(uuid, None)
            self.mark_halted(ref)
        elif info.state in ("shutdown", "crashed"):
            self._domain_ended(ref, vm, info)
        else:
            self._acting.pop(uuid, None)
            self._mark_live(ref, "Paused" if info.state == "paused"
                            else "Running", info)
        self._host_memory()

    def _mark_live(self, ref, power, info):
        db = self.db
        update_changed(db, "VM", ref, {
            "power_state": power, "domid": info.domid,
            "resident_on": self.identity.host_ref,
            "scheduled_to_be_resident_on": NULL_REF,
            "memory_target": info.memory_target})
        self._metrics(ref, info)
        if info.guest_metrics is not None:
            self._guest_metrics(ref, info.guest_metrics)
        self._consoles(ref, info.consoles)
        self._devices(ref, info)
        self.refresh_allowed(ref)

    def mark_halted(self, ref, power=None):
        """The VM has no domain (any more): Halted unless it is Suspended
        (or ``power`` says otherwise), devices detached, consoles gone.
        Also what VM.power_state_reset and a suspend end with."""
        db = self.db
        vm = db.fields("VM", ref)
        if power is None:
            power = "Suspended" if vm["power_state"] == "Suspended" \
                else "Halted"
        changes = {"power_state": power, "domid": -1,
                   "resident_on": NULL_REF,
                   "scheduled_to_be_resident_on": NULL_REF}
        if power == "Halted":
            changes["requires_reboot"] = False
        update_changed(db, "VM", ref, changes)
        if db.exists("VM_metrics", vm["metrics"]) and power != "Suspended":
            update_changed(db, "VM_metrics", vm["metrics"],
                           {"current_domain_type": "unspecified",
                            "state": []})
        if db.exists("VM_guest_metrics", vm["guest_metrics"]):
            update_changed(db, "VM_guest_metrics", vm["guest_metrics"],
                           {"live": False})
        self._consoles(ref, [])
        if power == "Halted":
            for cls in ("VBD", "VIF"):
                for dev in db.where(cls, VM=ref):
                    update_changed(db, cls, dev,
                                   {"currently_attached": False})
        self.refresh_allowed(ref)

    def refresh_allowed(self, ref):
        db = self.db
        operations.refresh(db, "VM", ref)
        for cls in ("VBD", "VIF"):
            for dev in db.where(cls, VM=ref):
                operations.refresh(db, cls, dev)

    def ensure_metrics(self, ref):
        vm = self.db.fields("VM", ref)
        if self.db.exists("VM_metrics", vm["metrics"]):
            return vm["metrics"]
        metrics = self.db.create("VM_metrics", {})
        self.db.update("VM", ref, {"metrics": metrics})
        return metrics

    def _metrics(self, ref, info):
        metrics = self.ensure_metrics(ref)
        changed = update_changed(self.db, "VM_metrics", metrics, {
            "memory_actual": info.memory_actual,
            "VCPUs_number": info.vcpus,
            "start_time": DateTime.from_timestamp(int(info.start_time)),
            "state": [info.state],
            "current_domain_type": info.domain_type,
            "hvm": info.hvm,
            "VCPUs_params": dict(self.db.fields("VM", ref)["VCPUs_params"]),
        })
        if changed:
            self.db.update("VM_metrics", metrics,
                           {"last_updated": DateTime.now()})

    def _guest_metrics(self, ref, gm):
        db = self.db
        fields = {
            "os_version": _strings(gm.get("os_version")),
            "PV_drivers_version": _strings(gm.get("pv_drivers_version")),
            "PV_drivers_up_to_date": bool(gm.get("pv_drivers_detected")),
            "PV_drivers_detected": bool(gm.get("pv_drivers_detected")),
            "networks": _strings(gm.get("networks")),
            "other": _strings(gm.get("other")),
            "live": bool(gm.get("live", True)),
            "can_use_hotplug_vbd": _tristate(gm.get("can_use_hotplug_vbd")),
            "can_use_hotplug_vif": _tristate(gm.get("can_use_hotplug_vif")),
            "last_updated": DateTime.from_timestamp(
                int(gm.get("last_updated") or time.time())),
        }
        current = db.fields("VM", ref)["guest_metrics"]
        if db.exists("VM_guest_metrics", current):
            update_changed(db, "VM_guest_metrics", current, fields)
        else:
            gm_ref = db.create("VM_guest_metrics", fields)
            db.update("VM", ref, {"guest_metrics": gm_ref})

    def _consoles(self, ref, consoles):
        """One console object per protocol the domain offers, at
        https://<host address>/console?uuid=<console uuid>, with the port
        kept (internal) for the console handler."""
        db = self.db
        wanted = {c.protocol: c for c in consoles}
        existing = {}
        for c in db.where("console", VM=ref):
            protocol = db.fields("console", c)["protocol"]
            if protocol in wanted and protocol not in existing:
                existing[protocol] = c
            else:
                db.delete("console", c)
        address = db.fields("host", self.identity.host_ref)["address"]
        for protocol, info in wanted.items():
            port = info.port or -1
            if protocol in existing:
                # A migrated VM's console is served by its new host.
                console = existing[protocol]
                update_changed(db, "console", console, {
                    "port": port, "location": _console_location(
                        address, db.fields("console", console)["uuid"])})
                continue
            uuid = new_uuid()
            db.create("console", {
                "uuid": uuid, "protocol": protocol, "VM": ref,
                "location": _console_location(address, uuid),
                "other_config": {}, "port": port})

    def control_domain_consoles(self):
        """The control domain's console records follow the consoles the
        backend serves for it (a backend serving none leaves them)."""
        consoles = getattr(self.backend.host_info(), "consoles", None)
        dom0 = self.db.fields("host", self.identity.host_ref)["control_domain"]
        if consoles and self.db.exists("VM", dom0):
            self._consoles(dom0, consoles)

    def _devices(self, ref, info):
        db = self.db
        plugged = {v.userdevice: v for v in info.vbds}
        for vbd in db.where("VBD", VM=ref):
            spec = plugged.get(db.fields("VBD", vbd)["userdevice"])
            changes = {"currently_attached": spec is not None}
            if spec is not None:
                changes["device"] = spec.device
            update_changed(db, "VBD", vbd, changes)
        vifs = {v.device for v in info.vifs}
        for vif in db.where("VIF", VM=ref):
            update_changed(db, "VIF", vif, {
                "currently_attached": db.fields("VIF", vif)["device"] in vifs})

    def _host_memory(self):
        host = self.db.fields("host", self.identity.host_ref)
        if self.db.exists("host_metrics", host["metrics"]):
            update_changed(self.db, "host_metrics", host["metrics"],
                           {"memory_free": self.backend.free_memory()})

    # --- guests that stopped on their own ----------------------------------

    def _domain_ended(self, ref, vm, info):
        uuid = vm["uuid"]
        if self._acting.get(uuid) == info.domid:
            return
        self._acting[uuid] = info.domid
        action = guest_action(vm, info)
        log.info("VM {uuid} domain {domid}: {state} ({reason}): {action}",
                 uuid=uuid, domid=info.domid, state=info.state,
                 reason=info.shutdown_reason, action=action)
        if action == "preserve":
            # A preserved domain no longer runs: XAPI shows it Paused.
            self._mark_live(ref, "Paused", info)
            return
        if action == "restart":
            try:
                spec = vmspec.vm_spec(self.db, self.make_context().server, ref)
            except XenAPIError as e:
                log.warn("cannot restart VM {uuid}: {e}", uuid=uuid, e=e)
                action = "destroy"
        if action == "restart":
            d = self.vm_op(ref, "reboot", uuid, False, self.shutdown_timeout,
                           spec)
        elif action == "destroy":
            d = self.vm_op(ref, "destroy", uuid)
        else:
            return  # the toolstack's own suspend; it takes care of it
        d.addErrback(lambda f: log.failure(
            "applying {action} to VM {uuid}", f, action=action, uuid=uuid))

    # --- start-up ----------------------------------------------------------

    def resync(self):
        """Make the database agree with the backend's domains, as after
        the toolstack restarted on a host whose domains kept running: a
        VM with a domain is Running/Paused with that domid, a VM the
        database thinks live without one is Halted, a domain without a VM
        is destroyed, and reservations of starts that were cut off go.
        Synchronous: it runs once, before the API is served."""
        db = self.db
        domains = {d.uuid: d for d in self.backend.list_domains()}
        for ref in db.refs("VM"):
            vm = db.fields("VM", ref)
            if vm["is_control_domain"]:
                continue
            info = domains.pop(vm["uuid"], None)
            if vm["resident_on"] not in (NULL_REF, self.identity.host_ref) \
                    or (info is None and not self.identity.is_master
                        and vm["resident_on"] == NULL_REF):
                # Another host's VM (a pool): that host resyncs it.
                continue
            update_changed(db, "VM", ref,
                           {"scheduled_to_be_resident_on": NULL_REF})
            if info is not None:
                self._apply(vm["uuid"], info)
            elif vm["power_state"] in vmspec.LIVE_STATES or \
                    vm["resident_on"] != NULL_REF:
                self.mark_halted(ref)
            else:
                self.refresh_allowed(ref)
        for uuid in domains:
            log.warn("destroying domain of unknown VM {uuid}", uuid=uuid)
            self.call("destroy", uuid).addErrback(
                lambda f, u=uuid: log.failure("destroying {u}", f, u=u))
        self._host_memory()


def guest_action(vm, info):
    """What to do about a domain that shut down or crashed by itself:
    'destroy', 'restart', 'preserve' or 'none' (a suspend is the
    toolstack's own doing)."""
    reason = info.shutdown_reason
    if info.state == "crashed" or reason in ("crash", "watchdog"):
        return {"destroy": "destroy", "coredump_and_destroy": "destroy",
                "preserve": "preserve"}.get(vm["actions_after_crash"],
                                            "restart")
    if reason == "suspend":
        return "none"
    if reason == "soft_reset":
        return {"destroy": "destroy", "preserve": "preserve"}.get(
            vm["actions_after_softreboot"], "restart")
    if reason == "reboot":
        return vm["actions_after_reboot"]
    return vm["actions_after_shutdown"]


def _console_location(address, uuid):
    return "https://%s/console?uuid=%s" % (address, uuid)


def _strings(d):
    return {str(k): str(v) for k, v in (d or {}).items()}


def _tristate(v):
    return v if v in ("yes", "no") else "unspecified"

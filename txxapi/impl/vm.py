"""
VM power operations: start, shutdown, reboot, pause, suspend, resume,
power_state_reset, and the checks a VM must pass to boot (migration is
txxapi/migration's).

These are the local steps.  Each operation is checked and marked in
current_operations (with the rules of vm_lifecycle, registered here) and
sent to its host by the forwarding layer (txxapi/forwarding/vm.py), in
the reactor turn the call arrives in, so a refused call changes nothing
and a conflicting one gets OTHER_OPERATION_IN_PROGRESS.  The domain work
runs through the xenops bridge, which writes power_state, domid, resident_on and metrics
back before the call answers.
"""

from twisted.internet import defer
from twisted.internet import task as task_
from twisted.python.failure import Failure

from txxapi import disks, operations, suspend_images, vmspec
from txxapi.api.registry import implements
from txxapi.datamodel import MODEL
from txxapi.errors import XenAPIError
from txxapi.events import update_changed
from txxapi.impl import vm_lifecycle
from txxapi.values import NULL_REF

MIB = 1024 * 1024
# Too little to boot anything (XAPI's old vm_minimum_memory).
MINIMUM_MEMORY = 16 * MIB
VM_OPERATIONS = MODEL.enums["vm_operations"]
SIMULATOR_TRIGGERS = {"crash": "crash", "poweroff": "poweroff",
                      "halt": "halt", "reboot": "reboot",
                      "watchdog": "watchdog"}


# --- the rules, for operation marking and allowed_operations ---------------

def _view(db, ref):
    """What the rules read: the VM's fields (plus VTPMs and attached_PCIs,
    computed sets) and its metrics."""
    vm = dict(db.fields("VM", ref))
    for computed in ("VTPMs", "attached_PCIs"):
        vm[computed] = db.get("VM", ref, computed)
    metrics = db.fields("VM_metrics", vm["metrics"]) \
        if db.exists("VM_metrics", vm["metrics"]) else None
    gm = db.fields("VM_guest_metrics", vm["guest_metrics"]) \
        if db.exists("VM_guest_metrics", vm["guest_metrics"]) else None
    return vm, metrics, gm


def _check(db, ref, op, strict=True):
    vm, metrics, gm = _view(db, ref)
    return vm_lifecycle.operation_error(ref, vm, op, metrics, gm, strict)


def _advertise(db, ref):
    vm, metrics, gm = _view(db, ref)
    return vm_lifecycle.allowed_operations(ref, vm, VM_OPERATIONS, metrics,
                                           gm)


operations.rules("VM", _check, _advertise)


def _void(_):
    return ""


def _progress(ctx, fraction):
    if ctx.task is not None:
        ctx.server.tasks.set_progress(ctx.task, fraction)


def _delay(ctx, seconds, result=""):
    """XAPI's start_delay/shutdown_delay, without holding a thread."""
    if seconds <= 0:
        return result
    return task_.deferLater(ctx.server.reactor, seconds, lambda: result)


# --- can it boot here? ------------------------------------------------------

def validate_basic_parameters(ref, vm):
    """What XAPI checks of a VM's configuration before it boots."""
    if vm["VCPUs_max"] < 1:
        raise XenAPIError("INVALID_VALUE", "VCPUs_max", str(vm["VCPUs_max"]))
    if vm["VCPUs_at_startup"] < 1:
        raise XenAPIError("INVALID_VALUE", "VCPUs-at-startup",
                          str(vm["VCPUs_at_startup"]))
    if vm["VCPUs_at_startup"] > vm["VCPUs_max"]:
        raise XenAPIError("VALUE_NOT_SUPPORTED", "VCPUs-at-startup",
                          str(vm["VCPUs_at_startup"]),
                          "value greater than VCPUs-max")
    if vmspec.coerced_memory(vm) is None:
        raise XenAPIError("MEMORY_CONSTRAINT_VIOLATION")
    if vm["HVM_shadow_multiplier"] < 1.0:
        raise XenAPIError("INVALID_VALUE", "HVM_shadow_multiplier",
                          repr(vm["HVM_shadow_multiplier"]))
    crash = vm["actions_after_crash"]
    if crash == "rename_restart":
        raise XenAPIError(
            "VALUE_NOT_SUPPORTED", "VM.actions_after_crash", crash,
            "option would leak a domain; VMs and not domains are managed "
            "by this API")
    if crash.startswith("coredump_") and vmspec.domain_type(vm) != "pv":
        raise XenAPIError(
            "VALUE_NOT_SUPPORTED", "VM.actions_after_crash", crash,
            "cannot invoke a coredump of an HVM, PVH or PV-in-PVH domain")
    if vm["memory_static_max"] < MINIMUM_MEMORY:
        raise XenAPIError("VM_MEMORY_SIZE_TOO_LOW", ref)


def assert_can_boot_here(ctx, ref, host, memory=True, sr_check=True):
    """``sr_check``: the disks' SRs are checked (a caller moving them
    checks their new SRs itself)."""
    db = ctx.db
    vm = db.fields("VM", ref)
    h = db.fields("host", host)
    validate_basic_parameters(ref, vm)
    if db.exists("host_metrics", h["metrics"]) and \
            not db.fields("host_metrics", h["metrics"])["live"]:
        raise XenAPIError("HOST_NOT_LIVE")
    if not h["enabled"] and not vm["is_control_domain"]:
        raise XenAPIError("HOST_DISABLED", host)
    vdis = [db.fields("VBD", vbd)["VDI"] for vbd in db.where("VBD", VM=ref)
            if not db.fields("VBD", vbd)["empty"] and sr_check]
    if vm["power_state"] == "Suspended":
        # A resume reads its image on the host it runs on.
        vdis.append(vm["suspend_VDI"])
    for vdi in vdis:
        if not db.exists("VDI", vdi):
            continue
        sr = db.fields("VDI", vdi)["SR"]
        if not any(db.fields("PBD", p)["host"] == host
                   and db.fields("PBD", p)["currently_attached"]
                   for p in db.where("PBD", SR=sr)):
            raise XenAPIError("VM_REQUIRES_SR", ref, sr)
    for vif in db.where("VIF", VM=ref):
        net = db.fields("VIF", vif)["network"]
        pifs = db.where("PIF", network=net) if db.exists("network", net) \
            else []
        if pifs and not any(db.fields("PIF", p)["host"] == host
                            for p in pifs):
            raise XenAPIError("VM_REQUIRES_NETWORK", ref, net)
    if vmspec.domain_type(vm) != "pv" and not any(
            c.startswith("hvm") for c in h["capabilities"]):
        raise XenAPIError("VM_HVM_REQUIRED", ref)
    pcpus = len(db.where("host_cpu", host=host))
    unrestricted = vm["platform"].get("vcpu-unrestricted", "") in (
        "true", "1")
    if pcpus and vm["VCPUs_max"] > pcpus and not unrestricted:
        raise XenAPIError("HOST_NOT_ENOUGH_PCPUS", str(vm["VCPUs_max"]),
                          str(pcpus))
    if memory:
        needed = vmspec.start_memory(vm)
        free = vmspec.host_free_memory(db, host, ignore_scheduled=ref)
        if free < needed:
            raise XenAPIError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed),
                              str(free))


def _reserve(ctx, ref, host):
    """Check and hold the host's memory for a start or resume, in the same
    reactor turn: concurrent starts see each other's reservations."""
    assert_can_boot_here(ctx, ref, host)
    vm = ctx.db.fields("VM", ref)
    ctx.db.update("VM", ref, {
        "scheduled_to_be_resident_on": host,
        "memory_overhead": vmspec.vm_overhead(vm),
        "domain_type": vmspec.domain_type(vm)})


def release_reservation(ctx, ref):
    def release(result):
        if ctx.db.exists("VM", ref):
            ctx.db.update("VM", ref,
                          {"scheduled_to_be_resident_on": NULL_REF})
        return result
    return release


# --- start -------------------------------------------------------------------

def _start(ctx, ref, paused, host):
    db, xen = ctx.db, ctx.server.xenops
    _reserve(ctx, ref, host)
    try:
        gm = db.fields("VM", ref)["guest_metrics"]
        # A fresh boot reports its own; a clone's are stale.
        if db.exists("VM_guest_metrics", gm):
            db.delete("VM_guest_metrics", gm)
        db.update("VM", ref, {"guest_metrics": NULL_REF})
        # A started "restart" VM is protected from now on, as in XAPI.
        if db.fields("VM", ref)["ha_restart_priority"] == "restart":
            db.update("VM", ref, {"ha_always_run": True})
        xen.ensure_metrics(ref)
    except Exception:
        release_reservation(ctx, ref)(None)
        raise

    def boot():
        spec = vmspec.vm_spec(db, ctx.server, ref)
        _progress(ctx, 0.1)
        return xen.vm_op(ref, "start", spec, paused, task=ctx.task)
    d = disks.with_disks(ctx, ref, boot)
    d.addBoth(release_reservation(ctx, ref))
    d.addCallback(lambda _: _delay(
        ctx, db.fields("VM", ref)["start_delay"]))
    return d.addCallback(_void)


@implements("VM.start")
def start(ctx, vm, start_paused, force):
    return _start(ctx, vm, start_paused, ctx.server.host_ref)


@implements("VM.start_on")
def start_on(ctx, vm, host, start_paused, force):
    return _start(ctx, vm, start_paused, host)


@implements("VM.assert_can_boot_here")
def assert_can_boot_here_(ctx, self, host):
    ctx.db.fields("VM", self)
    ctx.db.fields("host", host)
    assert_can_boot_here(ctx, self, host)
    return ""


@implements("VM.get_possible_hosts")
def get_possible_hosts(ctx, vm):
    ctx.db.fields("VM", vm)
    hosts = []
    for host in ctx.db.refs("host"):
        try:
            assert_can_boot_here(ctx, vm, host)
        except XenAPIError:
            continue
        hosts.append(host)
    return hosts


# --- shutdown and reboot -----------------------------------------------------

def _uuid(ctx, ref):
    return ctx.db.fields("VM", ref)["uuid"]


def _after_shutdown(ctx, ref):
    return lambda _: _delay(ctx, ctx.db.fields("VM", ref)["shutdown_delay"])


def _clean_shutdown(ctx, ref, timeout):
    d = ctx.server.xenops.vm_op(ref, "shutdown", _uuid(ctx, ref), True,
                                timeout, task=ctx.task)
    return d.addCallback(_after_shutdown(ctx, ref))


def _hard_shutdown(ctx, ref):
    db, xen = ctx.db, ctx.server.xenops
    vm = db.fields("VM", ref)
    if vm["power_state"] == "Suspended":
        # The image goes, and whether or not that worked, the VM forgets it.
        def halted(_):
            db.update("VM", ref, {"suspend_VDI": NULL_REF})
            xen.mark_halted(ref, "Halted")
            return ""
        return suspend_images.destroy_quietly(ctx, vm["suspend_VDI"]) \
            .addCallback(halted)
    if vm["power_state"] == "Halted":
        return ""
    d = xen.vm_op(ref, "shutdown", vm["uuid"], False, task=ctx.task,
                  cancellable=False)
    return d.addCallback(_after_shutdown(ctx, ref))


def _unprotect(ctx, vm):
    # A VM its user stops is no longer one HA must keep running (XAPI).
    update_changed(ctx.db, "VM", vm, {"ha_always_run": False})


@implements("VM.clean_shutdown")
def clean_shutdown(ctx, vm):
    _unprotect(ctx, vm)
    return _clean_shutdown(ctx, vm, ctx.server.xenops.shutdown_timeout) \
        .addCallback(_void)


@implements("VM.hard_shutdown")
def hard_shutdown(ctx, vm):
    _unprotect(ctx, vm)
    return defer.maybeDeferred(_hard_shutdown, ctx, vm).addCallback(_void)


@implements("VM.shutdown")
def shutdown(ctx, vm):
    """Clean within the VM's shutdown_delay (else the global timeout),
    hard if that fails for any reason."""
    _unprotect(ctx, vm)

    def shut():
        delay = ctx.db.fields("VM", vm)["shutdown_delay"]
        timeout = delay if delay > 0 else ctx.server.xenops.shutdown_timeout
        if ctx.db.fields("VM", vm)["power_state"] != "Running":
            return _hard_shutdown(ctx, vm)
        d = _clean_shutdown(ctx, vm, timeout)
        return d.addErrback(lambda _: _hard_shutdown(ctx, vm))
    return defer.maybeDeferred(shut).addCallback(_void)


def _reboot(ctx, ref, clean):
    spec = vmspec.vm_spec(ctx.db, ctx.server, ref)
    xen = ctx.server.xenops
    return xen.vm_op(ref, "reboot", spec.uuid, clean, xen.shutdown_timeout,
                     spec, task=ctx.task, cancellable=clean)


@implements("VM.clean_reboot")
def clean_reboot(ctx, vm):
    return _reboot(ctx, vm, True).addCallback(_void)


@implements("VM.hard_reboot")
def hard_reboot(ctx, vm):
    return _reboot(ctx, vm, False).addCallback(_void)


@implements("VM.pause")
def pause(ctx, vm):
    return ctx.server.xenops.vm_op(
        vm, "pause", _uuid(ctx, vm), task=ctx.task).addCallback(_void)


@implements("VM.unpause")
def unpause(ctx, vm):
    return ctx.server.xenops.vm_op(
        vm, "unpause", _uuid(ctx, vm), task=ctx.task).addCallback(_void)


# --- suspend and resume ------------------------------------------------------

@defer.inlineCallbacks
def suspend_to(ctx, ref):
    """Suspend the VM's domain into a new suspend VDI; the VM ends
    Suspended with that VDI as its suspend_VDI (a Deferred of the VDI).
    On failure the VDI is destroyed again and the VM is as it was (or
    Halted, if its domain went but its image could not be kept)."""
    db, xen = ctx.db, ctx.server.xenops
    uuid = _uuid(ctx, ref)
    vdi = yield suspend_images.create(ctx, ref, ctx.server.host_ref)

    def settled(result):
        if not isinstance(result, Failure):
            db.update("VM", ref, {"power_state": "Suspended",
                                  "suspend_VDI": vdi})

    def save(info):
        return xen.vm_op(ref, suspend_images.save, uuid, info,
                         xen.shutdown_timeout, task=ctx.task,
                         settled=settled,
                         errors=suspend_images.storage_errors)
    try:
        yield suspend_images.attached(ctx, vdi, True, save)
    except Exception:
        yield suspend_images.destroy_quietly(ctx, vdi)
        raise
    return vdi


def resume_from(ctx, ref, paused, host):
    """Resume the Suspended VM from its suspend VDI, which goes once the
    domain runs (a Deferred).  On failure the VM stays Suspended with
    it."""
    db, xen = ctx.db, ctx.server.xenops
    vdi = db.fields("VM", ref)["suspend_VDI"]
    if not db.exists("VDI", vdi):
        # XAPI: nothing to resume from, so the VM is halted.
        db.update("VM", ref, {"suspend_VDI": NULL_REF})
        xen.mark_halted(ref, "Halted")
        raise XenAPIError("VM_HAS_NO_SUSPEND_VDI", "VM", ref)
    _reserve(ctx, ref, host)

    def restore():
        spec = vmspec.vm_spec(db, ctx.server, ref)
        return suspend_images.attached(
            ctx, vdi, False, lambda info: xen.vm_op(
                ref, suspend_images.restore, spec, info, paused,
                task=ctx.task, errors=suspend_images.storage_errors))
    d = disks.with_disks(ctx, ref, restore)
    d.addBoth(release_reservation(ctx, ref))

    def resumed(_):
        db.update("VM", ref, {"suspend_VDI": NULL_REF})
        return suspend_images.destroy_quietly(ctx, vdi)
    return d.addCallback(resumed)


@implements("VM.suspend")
def suspend(ctx, vm):
    _unprotect(ctx, vm)
    return suspend_to(ctx, vm).addCallback(_void)


def _resume(ctx, ref, paused, host):
    return defer.maybeDeferred(resume_from, ctx, ref, paused, host) \
        .addCallback(_void)


@implements("VM.resume")
def resume(ctx, vm, start_paused, force):
    return _resume(ctx, vm, start_paused, ctx.server.host_ref)


@implements("VM.resume_on")
def resume_on(ctx, vm, host, start_paused, force):
    return _resume(ctx, vm, start_paused, host)


# --- state repair and guest hooks --------------------------------------------

def assert_resettable(ctx, vm):
    """What VM.power_state_reset refuses before it is marked."""
    if ctx.db.fields("VM", vm)["is_control_domain"]:
        raise XenAPIError("CANNOT_RESET_CONTROL_DOMAIN", vm)


@implements("VM.power_state_reset")
def power_state_reset(ctx, vm):
    db, xen = ctx.db, ctx.server.xenops

    def look():
        fields = db.fields("VM", vm)
        if fields["power_state"] not in vmspec.LIVE_STATES or \
                fields["resident_on"] != ctx.server.host_ref:
            return reset(None)
        d = xen.call("domain_info", fields["uuid"])
        return d.addCallbacks(reset, lambda f: reset(None))

    def reset(info):
        if info is not None and info.state == "running":
            raise XenAPIError("DOMAIN_EXISTS", vm, str(info.domid))
        image = db.fields("VM", vm)["suspend_VDI"]
        db.update("VM", vm, {"suspend_VDI": NULL_REF})
        xen.mark_halted(vm, "Halted")
        return suspend_images.destroy_quietly(ctx, image).addCallback(
            lambda _: "")
    return defer.maybeDeferred(look)


def assert_plugin_call(ctx, vm, plugin, fn):
    """What VM.call_plugin refuses before it is marked."""
    ctx.db.fields("VM", vm)
    if plugin != "simulator" or \
            not hasattr(ctx.server.xenops.backend, "simulate_guest_shutdown"):
        raise XenAPIError("XENAPI_MISSING_PLUGIN", plugin)
    if fn not in SIMULATOR_TRIGGERS:
        raise XenAPIError("XENAPI_PLUGIN_FAILURE", "unknown function", "",
                          fn)


@implements("VM.call_plugin")
def call_plugin(ctx, vm, plugin, fn, args):
    """Plugin 'simulator' stands for what a guest may do on its own (the
    simulator backend only): fn crash, poweroff, halt, reboot, watchdog."""
    xen = ctx.server.xenops
    d = xen.call("simulate_guest_shutdown", _uuid(ctx, vm),
                 SIMULATOR_TRIGGERS[fn])
    d.addErrback(xen.translate, vm, ctx.task)
    return d.addCallback(_void)


@implements("VM.query_services")
def query_services(ctx, self):
    operations.check(ctx, "VM", self, "query_services")
    raise XenAPIError("NOT_IMPLEMENTED", "query_services")

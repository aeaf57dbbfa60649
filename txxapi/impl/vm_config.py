"""
VM configuration: create and destroy, the memory and vCPU setters with
XAPI's constraints, templates, and the questions clients ask about a VM
(allowed devices, overhead, operation validity).
"""

from twisted.internet import defer

from txxapi import operations, suspend_images, vmspec
from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.impl import devices
from txxapi.values import EPOCH, NULL_REF, DateTime, new_ref, new_uuid

MAC_SEED = "mac_seed"
VCPU_RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup \u2264 VCPUs_max"
# VM.create ignores these, as XAPI does.
_IGNORED_ON_CREATE = ("blocked_operations", "protection_policy",
                      "is_snapshot_from_vmpp", "snapshot_schedule",
                      "is_vmss_snapshot")


# --- create and destroy ------------------------------------------------------

@implements("VM.create")
def create(ctx, fields):
    """A VM record as XAPI makes one: a mac_seed for its VIFs, its own
    metrics, Halted unless a complete suspended state is given.  Its
    memory and vCPU settings are checked when it boots, not now."""
    db = ctx.db
    for name in _IGNORED_ON_CREATE:
        fields.pop(name, None)
    ref = new_ref()
    suspended = fields.get("power_state") == "Suspended"
    if suspended and (not fields.get("last_boot_CPU_flags")
                      or not fields.get("last_booted_record")
                      or fields.get("suspend_VDI", NULL_REF) == NULL_REF):
        raise XenAPIError("VM_BAD_POWER_STATE", ref, "halted", "suspended")
    if not suspended:
        fields.update(power_state="Halted", suspend_VDI=NULL_REF,
                      last_booted_record="", last_boot_CPU_flags={})
    other = dict(fields.get("other_config", {}))
    other.setdefault(MAC_SEED, new_uuid())
    fields["other_config"] = other
    if fields.get("domain_type", "unspecified") == "unspecified":
        fields["domain_type"] = "hvm" if fields.get("HVM_boot_policy") \
            else "pv"
    metrics = db.create("VM_metrics", {
        "start_time": EPOCH,
        "install_time": EPOCH, "last_updated": EPOCH,
        "current_domain_type": fields["domain_type"] if suspended
        else "unspecified"})
    fields.update(metrics=metrics, guest_metrics=NULL_REF, domid=-1,
                  is_default_template=False, resident_on=NULL_REF,
                  is_control_domain=False)
    db.create("VM", fields, ref=ref)
    db.update("VM", ref,
              {"memory_overhead": vmspec.vm_overhead(db.fields("VM", ref))})
    operations.refresh(db, "VM", ref)
    return ref


def delete_vm(ctx, ref):
    """Remove a VM record and what hangs off it (devices, metrics,
    consoles), but not its disks."""
    db = ctx.db
    vm = db.fields("VM", ref)
    for child in db.where("VM", parent=ref):
        db.update("VM", child, {"parent": vm["parent"]})
    for cls in ("VBD", "VIF", "console", "VTPM"):
        for dev in db.where(cls, VM=ref):
            db.delete(cls, dev)
    for cls, field in (("VM_metrics", "metrics"),
                       ("VM_guest_metrics", "guest_metrics")):
        if db.exists(cls, vm[field]):
            db.delete(cls, vm[field])
    db.delete("VM", ref)


@implements("VM.destroy")
def destroy(ctx, self):
    """A Suspended VM (or checkpoint) takes its suspend image with it."""
    def body():
        vm = ctx.db.fields("VM", self)
        if vm["other_config"].get("default_template") == "true":
            raise XenAPIError("VM_CANNOT_DELETE_DEFAULT_TEMPLATE")
        d = suspend_images.destroy(ctx, vm["suspend_VDI"])
        d.addCallback(lambda _: delete_vm(ctx, self))
        return d.addCallback(lambda _: "")
    return defer.maybeDeferred(body)


# --- templates ---------------------------------------------------------------

@implements("VM.set_is_a_template")
def set_is_a_template(ctx, self, value):
    db = ctx.db
    db.fields("VM", self)
    if value:
        def body():
            metrics = db.fields("VM", self)["metrics"]
            # Templates carry no metrics.
            db.update("VM", self, {"metrics": NULL_REF,
                                   "is_a_template": True})
            if db.exists("VM_metrics", metrics):
                db.delete("VM_metrics", metrics)
            return ""
        return body()
    make_vm(ctx, self)
    return ""


def make_vm(ctx, ref):
    """A template becomes a VM: installed now."""
    db = ctx.db
    db.update("VM", ref, {"is_a_template": False})
    metrics = ctx.server.xenops.ensure_metrics(ref)
    db.update("VM_metrics", metrics, {"install_time": DateTime.now()})
    ctx.server.xenops.refresh_allowed(ref)


# --- plain settings ----------------------------------------------------------

def _setter(field):
    def set_field(ctx, self, value):
        ctx.db.fields("VM", self)
        ctx.db.update("VM", self, {field: value})
        return ""
    return set_field


for _field in ("actions_after_crash", "start_delay", "shutdown_delay",
               "order"):
    implements("VM.set_" + _field)(_setter(_field))


@implements("VM.set_domain_type")
def set_domain_type(ctx, self, value):
    ctx.db.fields("VM", self)
    if value == "unspecified":
        raise XenAPIError("INVALID_VALUE", "domain_type", value)
    ctx.db.update("VM", self, {"domain_type": value, "HVM_boot_policy":
                               "BIOS order" if value == "hvm" else ""})
    return ""


@implements("VM.set_HVM_boot_policy")
def set_HVM_boot_policy(ctx, self, value):
    ctx.db.fields("VM", self)
    ctx.db.update("VM", self, {"HVM_boot_policy": value,
                               "domain_type": "hvm" if value else "pv"})
    return ""


@implements("VM.set_HVM_shadow_multiplier")
def set_HVM_shadow_multiplier(ctx, self, value):
    def body():
        if value < 1.0:
            raise XenAPIError("INVALID_VALUE", "multiplier", repr(value))
        ctx.db.update("VM", self, {"HVM_shadow_multiplier": value})
        _memory_changed(ctx, self)
        return ""
    return defer.maybeDeferred(body)


# --- memory ------------------------------------------------------------------

def assert_memory_valid(ctx, ref, smin, dmin, dmax, smax):
    """XAPI's constraints with dynamic memory control on (as on XCP-ng):
    static_min <= dynamic_min <= dynamic_max <= static_max; a control
    domain, or a nested-virt guest, is pinned at static_max."""
    vm = ctx.db.fields("VM", ref)
    pinned = None
    if vm["is_control_domain"]:
        pinned = "control domain"
    elif vm["platform"].get("nested-virt", "") in ("true", "1"):
        pinned = "nested virt"
    if pinned and not (smin <= dmin == dmax == smax):
        raise XenAPIError("MEMORY_CONSTRAINT_VIOLATION_MAXPIN", pinned)
    if not smin <= dmin <= dmax <= smax:
        raise XenAPIError("MEMORY_CONSTRAINT_VIOLATION_ORDER")


def _memory_changed(ctx, ref):
    db = ctx.db
    vm = db.fields("VM", ref)
    db.update("VM", ref, {"memory_overhead": vmspec.vm_overhead(vm)})
    if vm["is_control_domain"] and vm["power_state"] == "Running":
        db.update("VM", ref, {"requires_reboot": True})


def _set_static_range(ctx, ref, smin, smax):
    def body():
        vm = ctx.db.fields("VM", ref)
        assert_memory_valid(ctx, ref, smin, vm["memory_dynamic_min"],
                            vm["memory_dynamic_max"], smax)
        ctx.db.update("VM", ref, {"memory_static_min": smin,
                                  "memory_static_max": smax})
        _memory_changed(ctx, ref)
        return ""
    return defer.maybeDeferred(body)


@implements("VM.set_memory_static_range")
def set_memory_static_range(ctx, self, min, max):
    return _set_static_range(ctx, self, min, max)


@implements("VM.set_memory_static_max")
def set_memory_static_max(ctx, self, value):
    return _set_static_range(
        ctx, self, ctx.db.fields("VM", self)["memory_static_min"], value)


@implements("VM.set_memory_static_min")
def set_memory_static_min(ctx, self, value):
    return _set_static_range(
        ctx, self, value, ctx.db.fields("VM", self)["memory_static_max"])


def _set_limits(ctx, ref, smin, smax, dmin, dmax):
    def body():
        assert_memory_valid(ctx, ref, smin, dmin, dmax, smax)
        ctx.db.update("VM", ref, {
            "memory_static_min": smin, "memory_static_max": smax,
            "memory_dynamic_min": dmin, "memory_dynamic_max": dmax,
            "memory_target": dmin})
        _memory_changed(ctx, ref)
        return ""
    return defer.maybeDeferred(body)


@implements("VM.set_memory_limits")
def set_memory_limits(ctx, self, static_min, static_max, dynamic_min,
                      dynamic_max):
    return _set_limits(ctx, self, static_min, static_max, dynamic_min,
                       dynamic_max)


@implements("VM.set_memory")
def set_memory(ctx, self, value):
    smin = ctx.db.fields("VM", self)["memory_static_min"]
    return _set_limits(ctx, self, smin, value, value, value)


def _set_dynamic_range(ctx, ref, dmin, dmax):
    db, xen = ctx.db, ctx.server.xenops

    def body():
        vm = db.fields("VM", ref)
        assert_memory_valid(ctx, ref, vm["memory_static_min"], dmin, dmax,
                            vm["memory_static_max"])
        old = {k: vm[k] for k in ("memory_dynamic_min", "memory_dynamic_max",
                                  "memory_target")}
        if vm["power_state"] == "Running":
            # Every guest squeezed to dynamic_min must still fit.
            free = vmspec.host_free_memory(db, vm["resident_on"])
            grow = dmin - vm["memory_dynamic_min"]
            if grow > free:
                raise XenAPIError("HOST_NOT_ENOUGH_FREE_MEMORY",
                                  str(grow // 1024), str(free // 1024))
        db.update("VM", ref, {"memory_dynamic_min": dmin,
                              "memory_dynamic_max": dmax,
                              "memory_target": dmin})
        if vm["power_state"] != "Running":
            return ""
        d = xen.vm_op(ref, "set_memory_target", vm["uuid"], dmax,
                      task=ctx.task)

        def undo(failure):
            if db.exists("VM", ref):
                db.update("VM", ref, old)
            return failure
        return d.addCallbacks(lambda _: "", undo)
    return defer.maybeDeferred(body)


@implements("VM.set_memory_dynamic_range")
def set_memory_dynamic_range(ctx, self, min, max):
    return _set_dynamic_range(ctx, self, min, max)


@implements("VM.set_memory_dynamic_max")
def set_memory_dynamic_max(ctx, self, value):
    return _set_dynamic_range(
        ctx, self, ctx.db.fields("VM", self)["memory_dynamic_min"], value)


@implements("VM.set_memory_dynamic_min")
def set_memory_dynamic_min(ctx, self, value):
    return _set_dynamic_range(
        ctx, self, value, ctx.db.fields("VM", self)["memory_dynamic_max"])


@implements("VM.compute_memory_overhead")
def compute_memory_overhead(ctx, vm):
    return vmspec.vm_overhead(ctx.db.fields("VM", vm))


# --- vCPUs -------------------------------------------------------------------

def _is_dom0(vm):
    return vm["is_control_domain"] and vm["domid"] == 0


@implements("VM.set_VCPUs_max")
def set_VCPUs_max(ctx, self, value):
    def body():
        vm = ctx.db.fields("VM", self)
        if value < 1 or value < vm["VCPUs_at_startup"]:
            raise XenAPIError("INVALID_VALUE", VCPU_RULE, str(value))
        ctx.db.update("VM", self, {"VCPUs_max": value})
        _memory_changed(ctx, self)
        return ""
    return defer.maybeDeferred(body)


@implements("VM.set_VCPUs_at_startup")
def set_VCPUs_at_startup(ctx, self, value):
    vm = ctx.db.fields("VM", self)
    if _is_dom0(vm):
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "set_VCPUs_at_startup is not allowed on dom0")
    if value < 1 or value > vm["VCPUs_max"]:
        raise XenAPIError("INVALID_VALUE", VCPU_RULE, str(value))
    ctx.db.update("VM", self, {"VCPUs_at_startup": value})
    ctx.db.update("VM", self,
                  {"memory_overhead": vmspec.vm_overhead(
                      ctx.db.fields("VM", self))})
    return ""


@implements("VM.set_VCPUs_number_live")
def set_VCPUs_number_live(ctx, self, nvcpu):
    def body():
        vm = ctx.db.fields("VM", self)
        if not 1 <= nvcpu <= vm["VCPUs_max"]:
            raise XenAPIError(
                "INTERNAL_ERROR", "the maximum number of vcpus configured "
                "for this VM is currently: %d" % vm["VCPUs_max"])
        d = ctx.server.xenops.vm_op(self, "set_vcpus", vm["uuid"], nvcpu,
                                    task=ctx.task)
        return d.addCallback(lambda _: "")
    return defer.maybeDeferred(body)


# --- questions ---------------------------------------------------------------

@implements("VM.get_allowed_VBD_devices")
def get_allowed_VBD_devices(ctx, vm):
    ctx.db.fields("VM", vm)
    used = devices.used_disk_numbers(ctx.db, vm)
    top = 255 if ctx.db.fields("VM", vm)["is_control_domain"] else 254
    return [str(n) for n in range(top + 1) if n not in used]


@implements("VM.get_allowed_VIF_devices")
def get_allowed_VIF_devices(ctx, vm):
    return devices.allowed_vif_devices(ctx.db, vm)


@implements("VM.assert_operation_valid")
def assert_operation_valid(ctx, self, op):
    ctx.db.fields("VM", self)
    operations.check(ctx, "VM", self, op)
    return ""


@implements("VM.update_allowed_operations")
def update_allowed_operations(ctx, self):
    ctx.db.fields("VM", self)
    ctx.server.xenops.refresh_allowed(self)
    return ""

"""
VBD.*: virtual block devices, created against halted or running VMs,
hot-plugged into running ones through the xenops bridge, CDs inserted and
ejected.  A VBD's disk comes from the storage layer (txxapi.disks).
"""

from twisted.internet import defer

from txxapi import disks, operations, vmspec
from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.impl import devices
from txxapi.values import NULL_REF
from txxenops.errors import DeviceError

operations.rules("VBD", devices.checker(devices.vbd_errors),
                 devices.advertiser(devices.vbd_errors))

_VDI_TYPES_FOR_VBDS = ("system", "user", "ephemeral", "suspend", "crashdump",
                       "metadata", "rrd", "pvs_cache")


def _vm_busy_with_migration(db, vm_ref):
    for task, op in sorted(db.fields("VM", vm_ref)["current_operations"]
                           .items(), key=lambda kv: kv[1]):
        if op in ("migrate_send", "pool_migrate"):
            raise XenAPIError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref, op,
                              task)


@implements("VBD.create")
def create(ctx, f):
    db = ctx.db
    vm_ref = f["VM"]
    vm = db.fields("VM", vm_ref)
    vdi = f.get("VDI", NULL_REF)
    empty = f["empty"]
    if not empty:
        vdi_f = db.fields("VDI", vdi)
        if vdi_f["type"] not in _VDI_TYPES_FOR_VBDS:
            raise XenAPIError("VDI_INCOMPATIBLE_TYPE", vdi, vdi_f["type"])
    if f["type"] == "CD" and f["mode"] != "RO":
        raise XenAPIError("VBD_CDS_MUST_BE_READONLY")
    if f["type"] != "CD" and empty:
        raise XenAPIError("VBD_NOT_REMOVABLE_MEDIA", "in constructor")
    if not empty and f["mode"] == "RW" and \
            db.fields("VDI", vdi)["read_only"]:
        raise XenAPIError("VDI_READONLY", vdi)
    _vm_busy_with_migration(db, vm_ref)
    userdevice = f["userdevice"]
    if not devices.valid_userdevice(userdevice, f["type"]):
        raise XenAPIError("INVALID_DEVICE", userdevice)
    used = devices.used_disk_numbers(db, vm_ref)
    if userdevice == "autodetect":
        top = 255 if vm["is_control_domain"] else 254
        free = [n for n in range(top + 1) if n not in used]
        if not free:
            raise XenAPIError("INVALID_DEVICE", userdevice)
        userdevice = str(free[0])
    elif devices.disk_number(userdevice) in used:
        raise XenAPIError("DEVICE_ALREADY_EXISTS", userdevice)
    suspended = vm["power_state"] == "Suspended"
    f.update(userdevice=userdevice,
             device=f.get("device", "") if suspended else "",
             currently_attached=f.get("currently_attached", False)
             if suspended else False)
    ref = db.create("VBD", f)
    operations.refresh(db, "VBD", ref)
    return ref


@implements("VBD.destroy")
def destroy(ctx, self):
    db = ctx.db
    f = db.fields("VBD", self)
    if f["currently_attached"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "VBD '%s' still attached to '%s'"
                          % (f["uuid"], db.fields("VM", f["VM"])["uuid"]))
    db.delete("VBD", self)
    return ""


@implements("VBD.assert_attachable")
def assert_attachable(ctx, self):
    ctx.db.fields("VBD", self)
    operations.check(ctx, "VBD", self, "attach")
    return ""


@implements("VBD.plug")
def plug(ctx, self):
    def body():
        db = ctx.db
        vm_ref, vm = devices.vm_of(ctx.db, "VBD", self)
        f = db.fields("VBD", self)
        if vmspec.domain_type(vm) == "hvm" and f["type"] != "CD" and \
                f["mode"] == "RO":
            raise XenAPIError("DISK_VBD_MUST_BE_READWRITE_FOR_HVM", self)
        d = disks.with_disk(ctx, self, lambda: ctx.server.xenops.vm_op(
            vm_ref, "plug_vbd", vm["uuid"],
            vmspec.vbd_spec(db, ctx.server, self, f), task=ctx.task))
        return d.addCallback(lambda _: "")
    return defer.maybeDeferred(body)


def _unplug(ctx, ref, force):
    def rejected(failure):
        failure.trap(DeviceError)
        raise XenAPIError("DEVICE_DETACH_REJECTED", "VBD", ref,
                          failure.value.reason)
    return devices.unplug(ctx, "VBD", ref, force, errors=rejected)


@implements("VBD.unplug")
def unplug(ctx, self):
    return _unplug(ctx, self, False)


@implements("VBD.unplug_force")
def unplug_force(ctx, self):
    return _unplug(ctx, self, True)


@implements("VBD.insert")
def insert(ctx, vbd, vdi):
    db = ctx.db
    db.fields("VBD", vbd)
    db.fields("VDI", vdi)

    def body():
        vm_ref, vm = devices.vm_of(ctx.db, "VBD", vbd)
        if vm["power_state"] not in vmspec.LIVE_STATES:
            db.update("VBD", vbd, {"VDI": vdi, "empty": False})
            return ""
        device = db.fields("VBD", vbd)["device"]
        d = disks.with_disk(ctx, vbd, lambda: ctx.server.xenops.vm_op(
            vm_ref, "insert_cd", vm["uuid"], device,
            disks.vdi_path(ctx.server, vdi), task=ctx.task), vdi)

        def inserted(_):
            db.update("VBD", vbd, {"VDI": vdi, "empty": False})
            return ""
        return d.addCallback(inserted)
    return defer.maybeDeferred(body)


@implements("VBD.eject")
def eject(ctx, vbd):
    db = ctx.db
    db.fields("VBD", vbd)

    def ejected(_=None):
        db.update("VBD", vbd, {"VDI": NULL_REF, "empty": True})
        return ""

    def body():
        vm_ref, vm = devices.vm_of(ctx.db, "VBD", vbd)
        if vm["power_state"] not in vmspec.LIVE_STATES:
            return ejected()
        device = db.fields("VBD", vbd)["device"]
        d = ctx.server.xenops.vm_op(vm_ref, "eject_cd", vm["uuid"], device,
                                    task=ctx.task)
        return d.addCallback(ejected)
    return defer.maybeDeferred(body)

"""
New VMs from old: clone, copy, snapshot, checkpoint, revert, provision.

The VM-metadata side is done here: the new VM record (uuid, mac_seed,
snapshot_of/snapshots, is_a_snapshot, snapshot_time, snapshot_info and
snapshot_metadata, parent), its metrics, VBDs and VIFs (new MACs unless
it is a snapshot), which of them are Suspended.  Disks, and the suspend
VDI that travels with a Suspended VM, go through txxapi.disks:
clone_disk / copy_disk / snapshot_disk for a VBD that has a VDI (CDs keep
pointing at their ISO), create_disk for a provision <disk/>; those hooks
belong to the storage layer.
"""

import random
import xml.etree.ElementTree as ET

from twisted.internet import defer

from txxapi import disks
from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.impl import vif as vif_impl
from txxapi.impl.vm import _hard_shutdown, resume_from, suspend_to
from txxapi.impl.vm_config import make_vm
from txxapi.values import EPOCH, NULL_REF, DateTime, new_uuid
from txxapi.wire.xmlrpc import encode_value

CLONE, COPY, SNAPSHOT, CHECKPOINT = "clone", "copy", "snapshot", "checkpoint"
_SNAPSHOTS = (SNAPSHOT, CHECKPOINT)
# Fields a new VM never inherits: identity, what exists only at run time,
# what belongs to the old VM's place in the world.
_FRESH = {
    "allowed_operations": [], "current_operations": {},
    "blocked_operations": {}, "is_default_template": False,
    "resident_on": NULL_REF, "scheduled_to_be_resident_on": NULL_REF,
    "suspend_VDI": NULL_REF, "domid": -1, "domarch": "",
    "ha_always_run": False, "blobs": {}, "protection_policy": NULL_REF,
    "snapshot_schedule": NULL_REF, "is_vmss_snapshot": False,
    "appliance": NULL_REF, "start_delay": 0, "shutdown_delay": 0,
    "order": 0, "suspend_SR": NULL_REF, "version": 0,
    "requires_reboot": False, "transportable_snapshot_id": "",
    "pending_guidances": [], "pending_guidances_recommended": [],
    "pending_guidances_full": []}
# What a revert leaves as the VM had it.
_KEEP_ON_REVERT = frozenset([
    "uuid", "suspend_VDI", "power_state", "parent", "current_operations",
    "allowed_operations", "metrics", "guest_metrics", "resident_on",
    "domid", "protection_policy", "snapshot_schedule",
    "scheduled_to_be_resident_on", "tags", "affinity", "name_label",
    "is_a_snapshot", "is_a_template", "is_default_template", "snapshot_of",
    "snapshot_time", "transportable_snapshot_id", "snapshot_info",
    "snapshot_metadata", "is_snapshot_from_vmpp", "blobs"])
_VBD_COPIED = ("userdevice", "bootable", "mode", "type", "unpluggable",
               "other_config", "qos_algorithm_type", "qos_algorithm_params")
_VIF_COPIED = ("device", "network", "MTU", "other_config",
               "qos_algorithm_type", "qos_algorithm_params", "locking_mode",
               "ipv4_allowed", "ipv6_allowed", "ipv4_configuration_mode",
               "ipv4_addresses", "ipv4_gateway", "ipv6_configuration_mode",
               "ipv6_addresses", "ipv6_gateway")


def _fresh_genid(current):
    if current in ("", "0:0"):
        return current
    return "%d:%d" % (random.getrandbits(63), random.getrandbits(63))


# --- disks (storage layer) ---------------------------------------------------

@defer.inlineCallbacks
def _new_disks(ctx, vbds, op, sr=NULL_REF):
    """A Deferred of [(vbd, new VDI)] for the VBDs being carried over; a
    VDI is cloned, copied or snapshotted by the storage layer, a CD keeps
    its ISO.  If one fails, the new VDIs made before it are destroyed."""
    db = ctx.db
    out = []
    try:
        for vbd in vbds:
            f = db.fields("VBD", vbd)
            if f["empty"] or f["VDI"] == NULL_REF or f["type"] == "CD":
                out.append((vbd, f["VDI"]))
                continue
            if op == COPY:
                vdi = yield disks.copy_disk(ctx, f["VDI"], sr)
            elif op in _SNAPSHOTS:
                vdi = yield disks.snapshot_disk(ctx, f["VDI"])
            else:
                vdi = yield disks.clone_disk(ctx, f["VDI"])
            out.append((vbd, vdi))
    except Exception:
        yield _destroy_new_disks(ctx, out)
        raise
    return out


def _new_suspend_vdi(ctx, vm, op, sr=NULL_REF):
    """A Deferred of the suspend VDI the new VM gets from Suspended ``vm``
    (as XAPI: cloned, copied, or snapshotted for a checkpoint); NULL when
    there is none."""
    fields = ctx.db.fields("VM", vm)
    vdi = fields["suspend_VDI"]
    if fields["power_state"] != "Suspended" or op == SNAPSHOT or \
            not ctx.db.exists("VDI", vdi):
        return defer.succeed(NULL_REF)
    if op == COPY:
        return disks.copy_disk(ctx, vdi, sr)
    if op == CHECKPOINT:
        return disks.snapshot_disk(ctx, vdi)
    return disks.clone_disk(ctx, vdi)


def _copy_vbd(db, vbd, vm, vdi):
    f = db.fields("VBD", vbd)
    fields = {k: f[k] for k in _VBD_COPIED}
    fields.update(VM=vm, VDI=vdi, empty=f["empty"] or vdi == NULL_REF,
                  device=f["device"])
    if fields["type"] == "Disk":
        # The new VM owns the disks made for it.
        fields["other_config"] = dict(fields["other_config"])
        fields["other_config"].setdefault("owner", "")
    return db.create("VBD", fields)


def _copy_vif(db, vif, vm, keep_mac):
    f = db.fields("VIF", vif)
    fields = {k: f[k] for k in _VIF_COPIED}
    fields.update(VM=vm, MAC=f["MAC"] if keep_mac else "")
    return vif_impl.new_vif(db, fields)


def _copy_object(db, cls, ref):
    if not db.exists(cls, ref):
        return NULL_REF
    fields = dict(db.fields(cls, ref))
    del fields["uuid"]
    return db.create(cls, fields)


# --- the new VM record -------------------------------------------------------

def copy_vm(ctx, src, op, new_name, new_power, new_disks,
            ignore_vdis=()):
    """Create the record of a clone/copy/snapshot/checkpoint of ``src``
    with ``new_disks`` [(old vbd, new vdi)] and its VIFs; returns it."""
    db = ctx.db
    vm = db.fields("VM", src)
    record = db.record("VM", src)
    snap = op in _SNAPSHOTS
    fields = {k: v for k, v in vm.items() if k != "uuid"}
    fields.update(_FRESH)
    other = dict(vm["other_config"])
    if not snap:
        other["mac_seed"] = new_uuid()
    other.pop("default_template", None)
    other.pop("xensource_internal", None)
    if vm["is_a_template"] and "base_template_name" not in other:
        other["base_template_name"] = vm["name_label"]
    fields.update(
        name_label=new_name, power_state=new_power, other_config=other,
        is_a_template=snap or vm["is_a_template"], is_a_snapshot=snap,
        snapshot_of=src if snap else NULL_REF,
        snapshot_time=DateTime.now() if snap else EPOCH,
        snapshot_info={"power-state-at-snapshot": vm["power_state"],
                       "disk-snapshot-type": "crash_consistent"}
        if snap else {},
        snapshot_metadata=encode_value(record) if snap else "",
        parent=vm["parent"] if snap else NULL_REF,
        generation_id=_fresh_genid(vm["generation_id"]),
        metrics=_copy_object(db, "VM_metrics", vm["metrics"]),
        guest_metrics=_copy_object(db, "VM_guest_metrics",
                                   vm["guest_metrics"]))
    ref = db.create("VM", fields)
    if snap:
        db.update("VM", src, {"parent": ref})
    for vbd, vdi in new_disks:
        _copy_vbd(db, vbd, ref, vdi)
    for vif in db.where("VIF", VM=src):
        _copy_vif(db, vif, ref, keep_mac=snap)
    ctx.server.xenops.mark_halted(ref, new_power)
    return ref


@defer.inlineCallbacks
def _clone_or_copy(ctx, vm, op, new_name, sr=NULL_REF):
    """A clone or copy of a Suspended VM (a checkpoint) is Suspended with
    its own copy of the image, as on XAPI."""
    db = ctx.db
    vbds = db.where("VBD", VM=vm)
    new_disks = yield _new_disks(ctx, vbds, op, sr)
    try:
        image = yield _new_suspend_vdi(ctx, vm, op, sr)
    except Exception:
        yield _destroy_new_disks(ctx, new_disks)
        raise
    power = "Suspended" if image != NULL_REF else "Halted"
    ref = copy_vm(ctx, vm, op, new_name, power, new_disks)
    db.update("VM", ref, {"suspend_VDI": image})
    return ref


@defer.inlineCallbacks
def _destroy_new_disks(ctx, new_disks):
    """Undo _new_disks: destroy the VDIs it made (a CD's ISO stays)."""
    db = ctx.db
    for vbd, vdi in new_disks:
        if db.exists("VBD", vbd) and vdi == db.fields("VBD", vbd)["VDI"]:
            continue
        try:
            yield disks.destroy_disk(ctx, vdi)
        except Exception:
            pass


@implements("VM.clone")
def clone(ctx, vm, new_name):
    return _clone_or_copy(ctx, vm, CLONE, new_name)


def assert_copy_target(ctx, sr):
    """What VM.copy refuses before it is marked."""
    db = ctx.db
    if db.exists("SR", sr) and db.fields("SR", sr)["content_type"] == "iso":
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "Cannot copy a VM's disks to an ISO SR")


@implements("VM.copy")
def copy(ctx, vm, new_name, sr):
    target = sr if ctx.db.exists("SR", sr) else NULL_REF
    return _clone_or_copy(ctx, vm, COPY, new_name, target)


@implements("VM.snapshot")
def snapshot(ctx, vm, new_name, ignore_vdis):
    def body():
        db = ctx.db
        vbds = [v for v in db.where("VBD", VM=vm)
                if db.fields("VBD", v)["VDI"] not in ignore_vdis]
        return _new_disks(ctx, vbds, SNAPSHOT).addCallback(
            lambda new_disks: copy_vm(ctx, vm, SNAPSHOT, new_name, "Halted",
                                      new_disks))
    return defer.maybeDeferred(body)


@implements("VM.checkpoint")
def checkpoint(ctx, vm, new_name):
    """Suspend a running VM, snapshot it with a snapshot of its suspend
    VDI, resume it; the snapshot is Suspended and reverts to a running
    guest."""
    db = ctx.db

    @defer.inlineCallbacks
    def body():
        power = db.fields("VM", vm)["power_state"]
        if power == "Running":
            try:
                yield suspend_to(ctx, vm)
            except XenAPIError as e:
                if e.code == "TASK_CANCELLED":
                    raise
                raise XenAPIError("VM_CHECKPOINT_SUSPEND_FAILED", vm)
        error, snap = None, None
        try:
            new_disks = yield _new_disks(ctx, db.where("VBD", VM=vm),
                                         CHECKPOINT)
            try:
                image = yield _new_suspend_vdi(ctx, vm, CHECKPOINT)
            except Exception:
                yield _destroy_new_disks(ctx, new_disks)
                raise
            snap_power = "Suspended" if image != NULL_REF else "Halted"
            snap = copy_vm(ctx, vm, CHECKPOINT, new_name, snap_power,
                           new_disks)
            db.update("VM", snap, {"suspend_VDI": image})
            if power == "Running":
                info = dict(db.fields("VM", snap)["snapshot_info"])
                info["power-state-at-snapshot"] = "Running"
                db.update("VM", snap, {"snapshot_info": info})
        except Exception as e:
            error = e
        if power == "Running":
            try:
                yield resume_from(ctx, vm, False, ctx.server.host_ref)
            except XenAPIError:
                raise XenAPIError("VM_CHECKPOINT_RESUME_FAILED", vm)
        if error is not None:
            raise error
        return snap
    return defer.maybeDeferred(body)


# --- revert ------------------------------------------------------------------

@implements("VM.revert")
def revert(ctx, snapshot):
    db = ctx.db
    vm = db.fields("VM", snapshot)["snapshot_of"]

    def outer():
        if not db.exists("VM", vm):
            raise XenAPIError("VM_REVERT_FAILED", snapshot, vm)
        return inner()

    @defer.inlineCallbacks
    def inner():
        if db.fields("VM", vm)["power_state"] != "Halted":
            yield _hard_shutdown(ctx, vm)
        snap = db.fields("VM", snapshot)
        new_disks = yield _new_disks(ctx, db.where("VBD", VM=snapshot),
                                     CLONE)
        for vbd in db.where("VBD", VM=vm):
            f = db.fields("VBD", vbd)
            if f["type"] == "Disk" and not f["empty"]:
                yield disks.destroy_disk(ctx, f["VDI"])
            if db.exists("VBD", vbd):
                db.delete("VBD", vbd)
        for vif in db.where("VIF", VM=vm):
            db.delete("VIF", vif)
        db.update("VM", vm, {k: v for k, v in snap.items()
                             if k not in _KEEP_ON_REVERT})
        db.update("VM", vm, {"parent": snapshot})
        for vbd, vdi in new_disks:
            _copy_vbd(db, vbd, vm, vdi)
        for vif in db.where("VIF", VM=snapshot):
            _copy_vif(db, vif, vm, keep_mac=True)
        old = db.fields("VM", vm)["guest_metrics"]
        if db.exists("VM_guest_metrics", old):
            db.delete("VM_guest_metrics", old)
        db.update("VM", vm, {"guest_metrics": _copy_object(
            db, "VM_guest_metrics", snap["guest_metrics"])})
        image = yield _new_suspend_vdi(ctx, snapshot, CLONE)
        db.update("VM", vm, {"suspend_VDI": image})
        power = "Suspended" if image != NULL_REF else "Halted"
        ctx.server.xenops.mark_halted(vm, power)
        return ""
    return defer.maybeDeferred(outer)


# --- provision ---------------------------------------------------------------

def provision_disks(other_config):
    """The <disk/> entries of a template's other_config:disks."""
    text = other_config.get("disks", "")
    if not text.strip():
        return []
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise XenAPIError("INVALID_VALUE", "other_config:disks", text)
    return [d.attrib for d in root.iter("disk")]


@implements("VM.provision")
def provision(ctx, vm):
    """Make the template's disks (other_config:disks) and turn it into a
    VM; a template without disks to make just becomes a VM."""
    @defer.inlineCallbacks
    def body():
        db = ctx.db
        wanted = provision_disks(db.fields("VM", vm)["other_config"])
        made = []
        for disk in wanted:
            sr = disks.provision_sr(ctx, disk.get("sr", ""))
            vdi = yield disks.create_disk(
                ctx, sr, int(disk.get("size", "0")),
                db.fields("VM", vm)["name_label"], disk.get("type", "system"))
            made.append(db.create("VBD", {
                "VM": vm, "VDI": vdi, "userdevice": disk.get("device", "0"),
                "bootable": disk.get("bootable", "false") == "true",
                "mode": "RW", "type": "Disk", "empty": False,
                "other_config": {"owner": ""}}))
        other = dict(db.fields("VM", vm)["other_config"])
        other.pop("disks", None)
        db.update("VM", vm, {"other_config": other})
        make_vm(ctx, vm)
        return ""
    return defer.maybeDeferred(body)

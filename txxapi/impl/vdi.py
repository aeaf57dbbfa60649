"""
VDI.*: virtual disks.  The work is the storage component's
(txxapi.storage), which VM operations share; this module holds XAPI's
rules for when a VDI operation is allowed and the API entry points.
"""

from twisted.internet import defer

from txxapi import operations
from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.impl.sr import field_setter
from txxapi.nbd import info as nbd_info
from txxapi.storage import (data_path_users, register_rules, sm_features,
                            translate)

# What allowed_operations lists (XAPI leaves out blocked, force_unlock and
# the later CBT and on-boot operations).
_ADVERTISED = ("clone", "copy", "resize", "resize_online", "snapshot",
               "destroy", "forget", "update", "generate_config")
_CAPABILITY = {
    "snapshot": "VDI_SNAPSHOT", "destroy": "VDI_DELETE",
    "resize": "VDI_RESIZE", "update": "VDI_UPDATE",
    "resize_online": "VDI_RESIZE_ONLINE",
    "generate_config": "VDI_GENERATE_CONFIG", "clone": "VDI_CLONE",
    "mirror": "VDI_MIRROR", "enable_cbt": "VDI_CONFIG_CBT",
    "disable_cbt": "VDI_CONFIG_CBT", "data_destroy": "VDI_CONFIG_CBT",
    "list_changed_blocks": "VDI_CONFIG_CBT",
    "set_on_boot": "VDI_RESET_ON_BOOT"}
# Operations allowed while the VDI is attached, and those allowed while it
# is attached read-only only.
_LIVE = frozenset(["snapshot", "resize_online", "blocked", "clone", "mirror",
                   "enable_cbt", "disable_cbt", "data_destroy"])
_READ_ONLY_ATTACH = _LIVE | {"copy"}
_NOT_FOR_CBT_METADATA = frozenset([
    "clone", "copy", "disable_cbt", "enable_cbt", "mirror", "resize",
    "resize_online", "snapshot", "set_on_boot"])
_HA_TYPES = ("ha_statefile", "redo_log")


def vdi_error(db, ref, op):
    """The XenAPIError ``op`` would meet on the VDI now, or None (XAPI's
    checks, in XAPI's order)."""
    vdi = db.fields("VDI", ref)
    sr = vdi["SR"]
    current = sorted(vdi["current_operations"].items(), key=lambda kv: kv[1])
    mirroring = op == "destroy" and any(o == "mirror" for _, o in current)
    busy = [(t, o) for t, o in current if o != "copy"]
    if busy and not mirroring:
        task, running = busy[0]
        return XenAPIError("OTHER_OPERATION_IN_PROGRESS", "VDI", ref, running,
                           task)
    if op == "resize" and not any(
            db.fields("PBD", p)["currently_attached"]
            for p in db.where("PBD", SR=sr)):
        return XenAPIError("SR_HAS_NO_PBDS", sr)
    users = data_path_users(db, ref)
    if op in _LIVE:
        blocked = False
    elif op in _READ_ONLY_ATTACH:
        blocked = any(rw for rw, _ in users)
    else:
        blocked = bool(users)
    if blocked:
        return XenAPIError("VDI_IN_USE", ref, op)
    if op != "data_destroy":
        for vbd in db.where("VBD", VDI=ref):
            ops = db.fields("VBD", vbd)["current_operations"]
            for task, running in ops.items():
                return XenAPIError("OTHER_OPERATION_IN_PROGRESS", "VDI", ref,
                                   running, task)
    cap = _CAPABILITY.get(op)
    if cap is not None and db.exists("SR", sr) and \
            cap not in sm_features(db, db.fields("SR", sr)["type"]):
        return XenAPIError("SR_OPERATION_NOT_SUPPORTED", sr)
    if op in _NOT_FOR_CBT_METADATA and vdi["type"] == "cbt_metadata":
        return XenAPIError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
    if op in ("mirror", "set_on_boot") and vdi["cbt_enabled"]:
        return XenAPIError("VDI_CBT_ENABLED", ref)
    return _op_specific(db, ref, vdi, op, current)


def _op_specific(db, ref, vdi, op, current):
    sr = db.fields("SR", vdi["SR"]) if db.exists("SR", vdi["SR"]) else None
    reset = vdi["on_boot"] == "reset"
    if op == "forget" and vdi["type"] == "rrd":
        return XenAPIError("VDI_HAS_RRDS", ref)
    if op in ("destroy", "data_destroy"):
        if op == "data_destroy" and not vdi["is_a_snapshot"]:
            return XenAPIError("OPERATION_NOT_ALLOWED",
                               "VDI is not a snapshot: " + ref)
        if op == "data_destroy" and not vdi["cbt_enabled"]:
            return XenAPIError("VDI_NO_CBT_METADATA", ref)
        if sr is not None and sr["type"] == "udev":
            return XenAPIError("VDI_IS_A_PHYSICAL_DEVICE", ref)
        if sr is not None and sr["is_tools_sr"]:
            return XenAPIError("SR_OPERATION_NOT_SUPPORTED", vdi["SR"])
        if vdi["type"] == "rrd":
            return XenAPIError("VDI_HAS_RRDS", ref)
    if op == "snapshot" and vdi["sharable"]:
        return XenAPIError("VDI_IS_SHARABLE", ref)
    if op in ("snapshot", "copy") and reset:
        return XenAPIError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    if op == "snapshot" and any(o == "copy" for _, o in current):
        return XenAPIError("OPERATION_NOT_ALLOWED",
                           "Snapshot operation not allowed during copy.")
    if op == "copy" and vdi["type"] in _HA_TYPES:
        return XenAPIError(
            "OPERATION_NOT_ALLOWED", "VDI containing HA statefile or redo "
            "log cannot be copied (check the VDI's allowed operations).")
    if op in ("enable_cbt", "disable_cbt"):
        if vdi["is_a_snapshot"]:
            return XenAPIError("OPERATION_NOT_ALLOWED",
                               "VDI is a snapshot: " + ref)
        if vdi["type"] not in ("user", "system"):
            return XenAPIError("VDI_INCOMPATIBLE_TYPE", ref, vdi["type"])
        if reset:
            return XenAPIError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    return None


register_rules("VDI", vdi_error, _ADVERTISED)


def _storage(ctx):
    return ctx.server.storage


def _void(_):
    return ""


@implements("VDI.create")
def create(ctx, f):
    return _storage(ctx).create_vdi(
        ctx, f["SR"], f["virtual_size"], f["name_label"],
        f["name_description"], f["type"], f["sharable"], f["read_only"],
        f["other_config"], f["xenstore_data"], f["sm_config"], f["tags"])


@implements("VDI.destroy")
def destroy(ctx, self):
    return _storage(ctx).destroy_vdi(ctx, self).addCallback(_void)


@implements("VDI.snapshot")
def snapshot(ctx, vdi, driver_params):
    return _storage(ctx).snapshot_vdi(ctx, vdi, driver_params)


@implements("VDI.clone")
def clone(ctx, vdi, driver_params):
    """None where the driver cannot clone: forwarding then copies."""
    return _storage(ctx).clone_vdi(ctx, vdi, driver_params)


@implements("VDI.copy")
def copy(ctx, vdi, sr, base_vdi, into_vdi):
    return _storage(ctx).copy_vdi(ctx, vdi, sr, base_vdi, into_vdi,
                                  ctx.server.forwarder.storage)


@implements("VDI.resize")
def resize(ctx, vdi, size):
    return _storage(ctx).resize_vdi(ctx, vdi, size).addCallback(_void)


@implements("VDI.update")
def update(ctx, vdi):
    return _storage(ctx).refresh_vdi(vdi).addCallback(_void)


@implements("VDI.forget")
def forget(ctx, vdi):
    ctx.db.delete("VDI", vdi)
    return ""


@implements("VDI.introduce")
@defer.inlineCallbacks
def introduce(ctx, uuid, name_label, name_description, SR, type, sharable,
              read_only, other_config, location, xenstore_data, sm_config,
              managed, virtual_size, physical_utilisation, metadata_of_pool,
              is_a_snapshot, snapshot_time, snapshot_of):
    """LOCATION_NOT_UNIQUE and an SR not plugged are refused by the
    forwarding rule, before the mark."""
    db, st = ctx.db, _storage(ctx)
    driver, sr_uuid = st.driver_of(SR)
    d = st.run(driver.vdi_introduce, sr_uuid, uuid or None, location,
               dict(sm_config))
    info = yield d.addErrback(translate, SR)
    ref = st.record_vdi(SR, info)
    changes = {"other_config": other_config,
               "xenstore_data": xenstore_data, "sharable": sharable,
               "type": type}
    if name_label:
        changes["name_label"] = name_label
    if name_description:
        changes["name_description"] = name_description
    db.update("VDI", ref, changes)
    operations.refresh(db, "VDI", ref)
    return ref


implements("VDI.set_name_label")(field_setter("VDI", "name_label"))
implements("VDI.set_name_description")(field_setter("VDI",
                                                    "name_description"))


def _internal_only(ctx, self, value):
    """Flags only the SM backends' own sessions may change in XAPI."""
    ctx.db.fields("VDI", self)
    raise XenAPIError("PERMISSION_DENIED", "")


implements("VDI.set_read_only")(_internal_only)
implements("VDI.set_sharable")(_internal_only)


def assert_not_on_running_vm(db, vdi):
    for vbd in db.where("VBD", VDI=vdi):
        vm = db.fields("VBD", vbd)["VM"]
        if db.exists("VM", vm):
            state = db.fields("VM", vm)["power_state"]
            if state != "Halted":
                raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted",
                                  state.lower())


@implements("VDI.set_on_boot")
def set_on_boot(ctx, self, value):
    ctx.db.update("VDI", self, {"on_boot": value})
    return ""


@implements("VDI.set_allow_caching")
def set_allow_caching(ctx, self, value):
    db = ctx.db
    db.fields("VDI", self)
    assert_not_on_running_vm(db, self)
    db.update("VDI", self, {"allow_caching": value})
    return ""


@implements("VDI.get_nbd_info")
def get_nbd_info(ctx, self):
    return nbd_info.server_records(ctx, self)


@implements("VDI.enable_cbt")
def enable_cbt(ctx, self):
    return _storage(ctx).set_cbt(self, True)


@implements("VDI.disable_cbt")
def disable_cbt(ctx, self):
    return _storage(ctx).set_cbt(self, False)


@implements("VDI.data_destroy")
def data_destroy(ctx, self):
    return _storage(ctx).data_destroy_vdi(self)


@implements("VDI.list_changed_blocks")
def list_changed_blocks(ctx, vdi_from, vdi_to):
    db = ctx.db
    for vdi in (vdi_from, vdi_to):
        if not db.fields("VDI", vdi)["cbt_enabled"]:
            raise XenAPIError("VDI_NO_CBT_METADATA", vdi)
    return _storage(ctx).list_changed_blocks(vdi_from, vdi_to)

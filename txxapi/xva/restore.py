"""
The objects of an import, made from ova.xml as XAPI's import makes them:
class by class (host, SR, VDI, guest metrics, metrics, VM, network, VBD,
VIF), each export id mapped to the object that stands for it here.

* SR: the import's target SR (full import); by uuid (metadata import).
* VDI: a new VDI in the target SR, to be filled from the stream (full);
  an existing one (metadata): the client's vdi:<uuid>=<uuid> map, the
  SCSIid, the (SR, location), then the uuid.  A CD's ISO is looked up by
  location in the ISO SRs, else the CD is left empty.
* VM: Halted, new uuid and MAC seed, unless ``restore`` (uuid, MACs and
  device uuids kept; an older halted VM of that uuid is replaced).
* network: by name, then by bridge, else a new network.
* live (a VM moving here from another pool, VM.migrate_send): the VDIs
  and a VIF's network may be named by the exporter in their other_config
  (``maps_to``: the ref here, as XAPI's storage motion sends them; a
  snapshot's VDI so named becomes a snapshot of its disk's here); the
  VM keeps its generation id, and a running one must fit in this host's
  free memory (HOST_NOT_ENOUGH_FREE_MEMORY), which it is then scheduled
  to be resident on until its memory arrives (txxapi.migration.receiver).

Everything made is undone by ``undo()`` (a failed import leaves nothing),
except under ``force``, as XAPI leaves a forced import's remains.

``dry_run`` (a metadata import's, as XAPI's): every object is looked up
and checked as it would be, and the errors are the same, but nothing is
made, replaced or changed: what would be made stands in the table as a
ref that names nothing.  The VMs it answers are the existing default
templates the import would use (XAPI's dry run answers those too); a
live dry run does not count a running VM's CD that has no disk here, as
the sender ejects it before it moves.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi import operations, vmspec
from txxapi.datamodel.types import BadEnum, TypeMismatch
from txxapi.errors import XenAPIError
from txxapi.impl import vbd as vbd_impl
from txxapi.impl import vif as vif_impl
from txxapi.impl import vm_config
from txxapi.impl.vm_copy import _fresh_genid
from txxapi.values import NULL_REF, new_ref, new_uuid

log = Logger()

ORDER = ("host", "SR", "VDI", "VM_guest_metrics", "VM_metrics", "VM",
         "network", "VBD", "VIF")
UNSUPPORTED = ("GPU_group", "VGPU_type", "VGPU", "PVS_site", "PVS_proxy",
               "VTPM")
# The other_config key of an exported VDI or VIF naming its object here.
MAPS_TO = "maps_to"
# VM fields XAPI sets from the export after VM.create.
_VM_AFTER = ("last_booted_record", "last_boot_CPU_flags", "is_a_snapshot",
             "snapshot_info", "snapshot_of", "snapshot_time",
             "transportable_snapshot_id", "parent", "bios_strings")


def typed(model, cls, snapshot):
    """The stored fields of an exported record, typed as the datamodel
    says; fields it lacks are left out, ones this model lacks ignored."""
    out = {}
    for f in model.classes[cls].stored_fields:
        if f.internal or f.name not in snapshot:
            continue
        try:
            out[f.name] = f.type.coerce(snapshot[f.name])
        except (TypeMismatch, BadEnum, ValueError):
            raise XenAPIError("IMPORT_ERROR", "ova.xml: bad value for %s.%s"
                              % (cls, f.name))
    return out


class Restore:
    """Makes an import's objects (create()) and undoes them (undo())."""

    def __init__(self, ctx, header, sr=None, restore=False, force=False,
                 vdi_map=None, live=False, dry_run=False):
        self.ctx = ctx
        self.dry_run = dry_run
        self.db = ctx.db
        self.header = header
        self.sr = sr                 # None: a metadata import
        self.restore = restore
        self.force = force
        self.vdi_map = vdi_map or {}
        self.live = live
        self.table = {}              # export id -> ref here
        self.vms = []                # VMs made
        self.disks = []              # (export id, new VDI, size) to fill
        # The VMs' import mark: the task's, or a synchronous call's own.
        self.op_key = operations.key_for(ctx)
        self._undo = []

    # --- helpers -------------------------------------------------------------

    def _map(self, xid):
        return self.table.get(xid, NULL_REF)

    def _fields(self, cls, obj):
        return typed(self.db.model, cls, obj["snapshot"])

    def _constructor(self, cls, fields, **given):
        """The constructor record of ``fields``, references mapped, with
        the ``given`` values (already local) in place of theirs."""
        out = {}
        for f in self.db.model.classes[cls].stored_fields:
            if not f.in_constructor or f.internal:
                continue
            if f.name in given:
                out[f.name] = given[f.name]
                continue
            if f.name in fields:
                value = fields[f.name]
            elif f.default_literal is not None:
                value = f.type.coerce(f.default)
            else:
                raise XenAPIError("IMPORT_ERROR", "ova.xml: %s without %s"
                                  % (cls, f.name))
            if f.type.kind == "ref":
                value = self._map(value)
            out[f.name] = value
        out.pop("uuid", None)
        return out

    def _exported(self, xid, cls):
        obj = self.header.find(xid)
        if obj is None or obj["class"] != cls:
            return None
        return self._fields(cls, obj)

    def _would_make(self, xid):
        """Dry run: ``xid`` stands for an object that would be made."""
        self.table[xid] = new_ref()

    def _on_undo(self, fn, *args):
        self._undo.append((fn, args))

    def _delete(self, cls, ref):
        if self.db.exists(cls, ref):
            self.db.delete(cls, ref)

    # --- the whole ------------------------------------------------------------

    @defer.inlineCallbacks
    def create(self):
        for obj in self.header.objects:
            if obj["class"] in UNSUPPORTED:
                raise XenAPIError("NOT_IMPLEMENTED",
                                  "importing %s objects" % obj["class"])
        for cls in ORDER:
            handle = getattr(self, "_" + cls.lower())
            for obj in self.header.of_class(cls):
                yield handle(obj, self._fields(cls, obj))
        if self.dry_run:
            return
        self._link_disk_snapshots()
        self._link_snapshots()

    def _link_snapshots(self):
        db = self.db
        for vm in self.vms:
            f = db.fields("VM", vm)
            changes = {"parent": self._map(f["parent"])}
            if f["is_a_snapshot"] and f["snapshot_of"] != NULL_REF:
                if f["snapshot_of"] not in self.table:
                    raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
                                      f["snapshot_of"])
                changes["snapshot_of"] = self.table[f["snapshot_of"]]
            else:
                changes["snapshot_of"] = NULL_REF
            db.update("VM", vm, changes)

    def _link_disk_snapshots(self):
        """A live import's disks (copies made for it) are linked as the
        exporter's were: a snapshot's copy is a snapshot of its disk's."""
        if not self.live:
            return
        for obj in self.header.of_class("VDI"):
            f = self._fields("VDI", obj)
            vdi = self.table.get(obj["id"])
            if vdi is None or not f.get("is_a_snapshot") or \
                    f.get("other_config", {}).get(MAPS_TO) != vdi:
                continue
            self.db.update("VDI", vdi, {
                "is_a_snapshot": True,
                "snapshot_of": self._map(f.get("snapshot_of", NULL_REF)),
                "snapshot_time": f["snapshot_time"]})

    def finish(self):
        """The import is complete: the VMs lose their import mark.  The
        task's result: the VMs made (the snapshots only if nothing else)."""
        db = self.db
        if self.dry_run:
            return list(self.vms)
        for vm in self.vms:
            current = dict(db.fields("VM", vm)["current_operations"])
            if current.pop(self.op_key, None) is not None:
                db.update("VM", vm, {"current_operations": current})
            self.ctx.server.xenops.refresh_allowed(vm)
        plain = [vm for vm in self.vms
                 if not db.fields("VM", vm)["is_a_snapshot"]]
        self._undo = []
        return plain or list(self.vms)

    @defer.inlineCallbacks
    def undo(self):
        """Destroy what was made, newest first (not under force)."""
        steps, self._undo = self._undo, []
        if self.force:
            return
        for fn, args in reversed(steps):
            try:
                yield fn(*args)
            except Exception as e:
                log.warn("undoing an import: {error}", error=e)

    # --- per class -------------------------------------------------------------

    def _host(self, obj, f):
        try:
            self.table[obj["id"]] = self.db.by_uuid("host", f.get("uuid", ""))
        except XenAPIError:
            pass

    def _sr(self, obj, f):
        if self.sr is not None:
            if f.get("content_type") != "iso":
                self.table[obj["id"]] = self.sr
            return
        try:
            self.table[obj["id"]] = self.db.by_uuid("SR", f.get("uuid", ""))
        except XenAPIError:
            log.info("import: no SR {uuid}; its VDIs are looked up alone",
                     uuid=f.get("uuid"))

    def _iso(self, f):
        db = self.db
        for vdi in db.where("VDI", location=f.get("location", "")):
            sr = db.fields("SR", db.fields("VDI", vdi)["SR"])
            if sr["content_type"] == "iso" and sr["type"] != "udev":
                return vdi
        return None

    @defer.inlineCallbacks
    def _vdi(self, obj, f):
        original_sr = self._exported(f.get("SR", NULL_REF), "SR") or {}
        if original_sr.get("content_type") == "iso":
            vdi = self._iso(f)
            if vdi is not None:
                self.table[obj["id"]] = vdi
            return
        if self.sr is None:
            vdi = self._existing_vdi(f)
            if vdi is not None:
                self.table[obj["id"]] = vdi
            return
        ctx = self.ctx
        vdi = yield ctx.server.forwarder.storage.create_vdi(
            ctx, self.sr, f.get("virtual_size", 0), f.get("name_label", ""),
            f.get("name_description", ""), f.get("type", "user"),
            f.get("sharable", False), f.get("read_only", False),
            f.get("other_config", {}), f.get("xenstore_data", {}),
            None, f.get("tags", []))
        self._on_undo(ctx.server.forwarder.storage.destroy_vdi, ctx, vdi)
        self.table[obj["id"]] = vdi
        self.disks.append((obj["id"], vdi, f.get("virtual_size", 0)))

    def _existing_vdi(self, f):
        db = self.db

        def by(**kw):
            found = db.where("VDI", **kw)
            return found[0] if found else None

        named = f.get("other_config", {}).get(MAPS_TO)
        if self.live and named and db.exists("VDI", named):
            return named
        scsi = f.get("sm_config", {}).get("SCSIid")
        target = self.vdi_map.get(f.get("uuid")) or \
            (self.vdi_map.get(scsi) if scsi else None)
        if target:
            try:
                return db.by_uuid("VDI", target)
            except XenAPIError:
                found = [v for v in db.refs("VDI") if db.fields(
                    "VDI", v)["sm_config"].get("SCSIid") == target]
                if found:
                    return found[0]
        if scsi:
            found = [v for v in db.refs("VDI") if db.fields(
                "VDI", v)["sm_config"].get("SCSIid") == scsi]
            if found:
                return found[0]
        sr = self.table.get(f.get("SR"))
        if sr is not None:
            vdi = by(SR=sr, location=f.get("location", ""))
            if vdi is not None:
                return vdi
        try:
            return db.by_uuid("VDI", f.get("uuid", ""))
        except XenAPIError:
            pass
        if self.force:
            return None
        if sr is not None:
            raise XenAPIError("VDI_LOCATION_MISSING", sr,
                              f.get("location", ""))
        raise XenAPIError("VDI_CONTENT_ID_MISSING")

    def _copy_record(self, cls, obj, f):
        if self.dry_run:
            self._would_make(obj["id"])
            return
        fields = {k: v for k, v in f.items() if k != "uuid"}
        ref = self.db.create(cls, fields)
        self._on_undo(defer.maybeDeferred, self._delete, cls, ref)
        self.table[obj["id"]] = ref

    def _vm_guest_metrics(self, obj, f):
        self._copy_record("VM_guest_metrics", obj, f)

    def _vm_metrics(self, obj, f):
        self._copy_record("VM_metrics", obj, f)

    def _vm(self, obj, f):
        db, ctx = self.db, self.ctx
        other = f.get("other_config", {})
        if (f.get("is_default_template") or (
                f.get("is_a_template")
                and other.get("default_template") == "true")):
            same = db.by_name_label("VM", f.get("name_label", ""))
            if same:
                self.table[obj["id"]] = same[0]
                if self.dry_run:
                    self.vms.append(same[0])
                return
        if self.restore:
            try:
                old = db.by_uuid("VM", f.get("uuid", ""))
            except XenAPIError:
                old = None
            if old is not None and not self._replace(old, f):
                return
        fields = self._constructor("VM", f)
        if self.dry_run:
            if self.live and f.get("power_state") in ("Running", "Paused"):
                self._assert_room_here(fields)
            self._would_make(obj["id"])
            return
        other = dict(fields.get("other_config", {}))
        other.pop("grant_api_access", None)
        if not self.restore:
            other["mac_seed"] = new_uuid()
        if not self.force:
            other.pop("default_template", None)
            fields["is_default_template"] = False
        fields.update(
            other_config=other, power_state="Halted", suspend_VDI=NULL_REF,
            protection_policy=NULL_REF, appliance=NULL_REF,
            version=f.get("version", 0) + 1 if self.restore else 0)
        if not fields.get("is_a_template") and not self.live:
            fields["generation_id"] = _fresh_genid(
                fields.get("generation_id", ""))
        if fields.get("ha_restart_priority") in ("0", "1", "2", "3"):
            fields["order"] = int(fields["ha_restart_priority"])
            fields["ha_restart_priority"] = "restart"
        vm = vm_config.create(ctx, fields)
        self._on_undo(self._destroy_vm, vm)
        changes = {k: f[k] for k in _VM_AFTER if k in f}
        if self.restore:
            changes["uuid"] = f.get("uuid") or new_uuid()
        changes["affinity"] = self._map(f.get("affinity", NULL_REF))
        metrics = self.table.get(f.get("metrics"))
        if metrics is not None:
            self._delete("VM_metrics", db.fields("VM", vm)["metrics"])
            changes["metrics"] = metrics
        changes["guest_metrics"] = self._map(f.get("guest_metrics",
                                                   NULL_REF))
        if not self.force:
            changes["current_operations"] = {self.op_key: "import"}
        db.update("VM", vm, changes)
        if f.get("power_state") == "Suspended":
            image = self._map(f.get("suspend_VDI", NULL_REF))
            if image == NULL_REF and not self.force:
                raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
                                  f.get("suspend_VDI", NULL_REF))
            if image != NULL_REF:
                db.update("VM", vm, {"suspend_VDI": image})
                ctx.server.xenops.mark_halted(vm, "Suspended")
        if self.live and f.get("power_state") in ("Running", "Paused"):
            self._schedule_here(vm)
        operations.refresh(db, "VM", vm)
        self.table[obj["id"]] = vm
        self.vms.append(vm)

    def _schedule_here(self, vm):
        """A VM whose memory is to follow: room for it here, held."""
        self._assert_room_here(self.db.fields("VM", vm))
        self.db.update("VM", vm,
                       {"scheduled_to_be_resident_on": self.ctx.server.host_ref})

    def _assert_room_here(self, vm_fields):
        needed = vmspec.start_memory(vm_fields)
        free = vmspec.host_free_memory(self.db, self.ctx.server.host_ref)
        if free < needed:
            raise XenAPIError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed),
                              str(free))

    def _replace(self, old, f):
        """restore=true meets a VM of that uuid: replace it (Halted and
        older), skip it (force), or refuse.  True: go on and import."""
        db = self.db
        power = db.fields("VM", old)["power_state"]
        if power != "Halted":
            if self.force:
                return False
            raise XenAPIError("VM_BAD_POWER_STATE", old, "halted",
                              power.lower())
        existing = db.fields("VM", old)["version"]
        if existing >= f.get("version", 0) and not self.force:
            raise XenAPIError("VM_TO_IMPORT_IS_NOT_NEWER_VERSION", old,
                              str(existing), str(f.get("version", 0)))
        if not self.dry_run:
            vm_config.delete_vm(self.ctx, old)
        return True

    def _destroy_vm(self, vm):
        if self.db.exists("VM", vm):
            vm_config.delete_vm(self.ctx, vm)
        return defer.succeed(None)

    def _mapped_away(self, xid):
        """A live import's network whose every VIF names its network
        here: nothing to find or make for it."""
        vifs = [self._fields("VIF", o) for o in self.header.of_class("VIF")]
        return all(self.db.exists("network", v.get("other_config", {}).get(
            MAPS_TO, NULL_REF)) for v in vifs if v.get("network") == xid)

    def _network(self, obj, f):
        db = self.db
        if self.live and self._mapped_away(obj["id"]):
            return
        found = db.by_name_label("network", f.get("name_label", "")) or \
            (db.where("network", bridge=f["bridge"]) if f.get("bridge")
             else [])
        if found:
            self.table[obj["id"]] = found[0]
            return
        if self.dry_run:
            self._would_make(obj["id"])
            return
        fields = self._constructor("network", f)
        other = dict(fields.get("other_config", {}))
        other["import_task"] = self.ctx.task or ""
        fields["other_config"] = other
        net = db.create("network", fields)
        self._on_undo(defer.maybeDeferred, self._delete, "network", net)
        self.table[obj["id"]] = net

    def _existing_device(self, cls, f, xid):
        if not self.restore:
            return False
        try:
            self.table[xid] = self.db.by_uuid(cls, f.get("uuid", ""))
            return True
        except XenAPIError:
            return False

    def _owner(self, cls, f):
        vm = self.table.get(f.get("VM"))
        if vm is None:
            raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
                              f.get("VM", NULL_REF))
        exported = self._exported(f.get("VM"), "VM") or {}
        return vm, exported

    def _vbd(self, obj, f):
        if self._existing_device("VBD", f, obj["id"]):
            return
        vm, exported = self._owner("VBD", f)
        has_disk = f.get("VDI") in self.table
        hvm = bool(exported.get("HVM_boot_policy"))
        kind = f.get("type", "Disk")
        ejected = self.dry_run and self.live and \
            exported.get("power_state") != "Suspended"
        if f.get("currently_attached") and not has_disk and \
                not (kind == "CD" and (hvm or ejected)):
            raise XenAPIError("IMPORT_ERROR_ATTACHED_DISKS_NOT_FOUND")
        if not has_disk and kind not in ("CD", "Floppy"):
            log.warn("import: a disk VBD without its VDI is left out")
            return
        if self.dry_run:
            self._would_make(obj["id"])
            return
        given = {} if has_disk else {"VDI": NULL_REF, "empty": True}
        fields = self._constructor("VBD", f, VM=vm, **given)
        fields.update(device="", currently_attached=False)
        vbd = vbd_impl.create(self.ctx, fields)
        self._on_undo(defer.maybeDeferred, self._delete, "VBD", vbd)
        changes = {"currently_attached": f.get("currently_attached", False)
                   and self.db.fields("VM", vm)["power_state"] ==
                   "Suspended"}
        if self.restore and f.get("uuid"):
            changes["uuid"] = f["uuid"]
        self.db.update("VBD", vbd, changes)
        self.table[obj["id"]] = vbd

    def _vif(self, obj, f):
        if self._existing_device("VIF", f, obj["id"]):
            return
        vm, _ = self._owner("VIF", f)
        other = dict(f.get("other_config", {}))
        named = other.pop(MAPS_TO, None)
        net = self.table.get(f.get("network"))
        if self.live and named and self.db.exists("network", named):
            net = named
        if net is None:
            raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
                              f.get("network", NULL_REF))
        if self.dry_run:
            self._would_make(obj["id"])
            return
        fields = self._constructor(
            "VIF", f, VM=vm, network=net,
            MAC=f.get("MAC", "") if self.restore else "")
        fields.update(currently_attached=False, other_config=other)
        vif = vif_impl.new_vif(self.db, fields)
        self._on_undo(defer.maybeDeferred, self._delete, "VIF", vif)
        if self.restore and f.get("uuid"):
            self.db.update("VIF", vif, {"uuid": f["uuid"]})
        self.table[obj["id"]] = vif

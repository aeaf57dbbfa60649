"""
VDI operations for the API and for VM operations: create, destroy,
snapshot, clone, resize and changed-block tracking, as local steps.  The forwarding layer
(txxapi/forwarding/storage.py) makes the checks that come first
(``assert_can_create``, ``assert_vdi_op``), marks the operation and then
calls these.
"""

import base64

from twisted.internet import defer
from twisted.logger import Logger

from txstorage.errors import StorageError, Unimplemented
from txxapi import operations
from txxapi.errors import XenAPIError
from txxapi.storage.common import data_path_users, translate, xapi_error

log = Logger()


class VDIOperations:
    """The driver work of VDI.create, destroy, snapshot, clone, resize."""

    # --- VDI operations, for the API and for VM operations -------------------

    def assert_managed(self, vdi):
        if not self.db.fields("VDI", vdi)["managed"]:
            raise XenAPIError("VDI_NOT_MANAGED", vdi)

    def assert_can_create(self, sr, vdi_type, plugged=None):
        """What VDI.create refuses before it is marked.  ``plugged``: the
        check that the SR is plugged (by default: on this host; the
        forwarding layer's: on a host of the pool)."""
        if vdi_type == "cbt_metadata":
            raise XenAPIError("VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata")
        self.db.fields("SR", sr)
        (plugged or self.assert_plugged)(sr)

    def assert_vdi_op(self, vdi, plugged=None):
        """What destroy, snapshot, clone and resize refuse before they are
        marked; the VDI's SR."""
        sr = self.db.fields("VDI", vdi)["SR"]
        (plugged or self.assert_plugged)(sr)
        self.assert_managed(vdi)
        return sr

    @defer.inlineCallbacks
    def create_vdi(self, ctx, sr, virtual_size, name_label="",
                   name_description="", vdi_type="user", sharable=False,
                   read_only=False, other_config=None, xenstore_data=None,
                   sm_config=None, tags=None):
        """VDI.create: a Deferred of the new VDI's ref."""
        driver, sr_uuid = self.driver_of(sr)
        d = self.run(driver.vdi_create, sr_uuid, None, virtual_size,
                     name_label, name_description, dict(sm_config or {}),
                     vdi_type, read_only, sharable)
        info = yield d.addErrback(translate, sr)
        ref = self.record_vdi(sr, info)
        self.db.update("VDI", ref, {
            "name_label": name_label, "name_description": name_description,
            "type": vdi_type, "sharable": sharable,
            "other_config": dict(other_config or {}),
            "xenstore_data": dict(xenstore_data or {}),
            "tags": list(tags or [])})
        yield self._refresh_sizes(sr)
        return ref

    @defer.inlineCallbacks
    def destroy_vdi(self, ctx, vdi):
        """VDI.destroy (a Deferred)."""
        db = self.db
        sr = db.fields("VDI", vdi)["SR"]
        if data_path_users(db, vdi):
            raise XenAPIError("VDI_IN_USE", vdi, "destroy")
        # A device that just went away may still be letting go.
        yield self.settled(vdi)
        driver, sr_uuid = self.driver_of(sr)
        location = db.fields("VDI", vdi)["location"]
        d = self.run(driver.vdi_delete, sr_uuid, location)
        yield d.addErrback(translate, sr, vdi)
        self.forget_vdi_record(vdi)
        yield self._refresh_sizes(sr)
        self.kick_gc(sr)
        return ""

    def snapshot_vdi(self, ctx, vdi, driver_params=None):
        """VDI.snapshot: a Deferred of the snapshot's ref."""
        return self._snapshot_or_clone(vdi, driver_params, True)

    def clone_vdi(self, ctx, vdi, driver_params=None):
        """VDI.clone: a Deferred of the clone's ref, or of None where the
        driver cannot clone (the forwarding layer then copies, as XAPI
        does)."""
        return self._snapshot_or_clone(vdi, driver_params, False)

    @defer.inlineCallbacks
    def _snapshot_or_clone(self, vdi, driver_params, snapshot):
        db = self.db
        src = db.fields("VDI", vdi)
        sr = src["SR"]
        driver, sr_uuid = self.driver_of(sr)
        call = driver.vdi_snapshot if snapshot else driver.vdi_clone
        # The log says what a running guest wrote up to this point.
        yield self.guest_writes_marked(vdi)
        try:
            info = yield self.run(call, sr_uuid, src["location"],
                                  dict(driver_params or {}))
        except Unimplemented:
            if snapshot:
                raise XenAPIError("UNIMPLEMENTED_IN_SM_BACKEND", sr)
            return None
        except StorageError as e:
            raise xapi_error(e, sr, vdi)
        ref = self.record_vdi(sr, info)
        fields = _copy_vdi_fields(db.fields("VDI", vdi))
        if snapshot:
            fields.update(is_a_snapshot=True, snapshot_of=vdi)
        db.update("VDI", ref, fields)
        operations.refresh(db, "VDI", ref)
        yield self._refresh_tree(sr, [src["location"], info.parent])
        yield self._refresh_sizes(sr)
        return ref

    def resize_vdi(self, ctx, vdi, size):
        """VDI.resize (a Deferred)."""
        sr = self.db.fields("VDI", vdi)["SR"]
        driver, sr_uuid = self.driver_of(sr)
        d = self.run(driver.vdi_resize, sr_uuid,
                     self.db.fields("VDI", vdi)["location"], size)
        d.addErrback(translate, sr, vdi)
        d.addCallback(lambda info: self.record_vdi(sr, info))
        d.addCallback(lambda _: self._refresh_sizes(sr))
        return d.addCallback(lambda _: "")


    # --- changed-block tracking ------------------------------------------------

    def _driver_call(self, vdi, name, *args):
        """Run driver method ``name`` on the VDI's SR and location."""
        f = self.db.fields("VDI", vdi)
        sr = f["SR"]
        driver, sr_uuid = self.driver_of(sr)
        d = self.run(getattr(driver, name), sr_uuid, f["location"], *args)
        return d.addErrback(translate, sr, vdi)

    def set_cbt(self, vdi, enabled):
        """VDI.enable_cbt / disable_cbt: the driver starts or drops the
        VDI's log (a Deferred)."""
        if self.db.fields("VDI", vdi)["cbt_enabled"] == enabled:
            return defer.succeed("")
        d = self._driver_call(
            vdi, "vdi_enable_cbt" if enabled else "vdi_disable_cbt")
        d.addCallback(lambda info: self.record_vdi(
            self.db.fields("VDI", vdi)["SR"], info))
        if enabled:
            d.addCallback(lambda _: self.log_started(vdi))
        return d.addCallback(lambda _: "")

    def data_destroy_vdi(self, vdi):
        """VDI.data_destroy: the snapshot keeps only its CBT log."""
        sr = self.db.fields("VDI", vdi)["SR"]
        d = self._driver_call(vdi, "vdi_data_destroy")

        def destroyed(info):
            self.record_vdi(sr, info)
            self.db.update("VDI", vdi, {"type": "cbt_metadata"})
            operations.refresh(self.db, "VDI", vdi)
            return self._refresh_sizes(sr)
        d.addCallback(destroyed)
        return d.addCallback(lambda _: "")

    def list_changed_blocks(self, vdi_from, vdi_to):
        """VDI.list_changed_blocks: a Deferred of the base64 bitmap of the
        64 KiB blocks changed from one point to the other."""
        db = self.db
        sr = db.fields("VDI", vdi_to)["SR"]
        driver, sr_uuid = self.driver_of(sr)
        start = db.fields("VDI", vdi_from)["location"]
        end = db.fields("VDI", vdi_to)["location"]
        d = self.guest_writes_marked(vdi_to)
        d.addCallback(lambda _: self.run(driver.vdi_list_changed_blocks,
                                         sr_uuid, start, end))
        d.addErrback(translate, sr, vdi_to)
        return d.addCallback(lambda bits: base64.b64encode(bits).decode())


def _copy_vdi_fields(src):
    """The configuration a snapshot or clone takes from its source."""
    keep = ("name_label", "name_description", "type", "sharable",
            "other_config", "xenstore_data", "on_boot", "allow_caching",
            "tags")
    return {k: src[k] for k in keep}

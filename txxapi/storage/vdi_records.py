"""
VDI records: a driver's VDIInfo merged into the VDI table (the driver is
the truth about what exists, sizes and the snapshot tree; the database
about names, tags and configuration), SR scans, and SR garbage collection.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txstorage.errors import StorageError
from txxapi import operations
from txxapi.datamodel import MODEL
from txxapi.errors import XenAPIError
from txxapi.storage import host_srs
from txxapi.storage.common import translate
from txxapi.values import EPOCH, NULL_REF, DateTime

log = Logger()

# How long an operation waits for a conflicting one (XAPI retries for two
# hours), and how often it looks again without being woken.
SCAN_RETRIES = 10
VDI_TYPES = frozenset(MODEL.enums["vdi_type"])


class VDIRecords:
    """The VDI table in step with the drivers."""

    # --- VDI records ---------------------------------------------------------

    def _find_vdi(self, sr, info):
        db = self.db
        ref = db.table("VDI").by_uuid.get(info.uuid)
        if ref is not None and db.fields("VDI", ref)["SR"] == sr:
            return ref
        for ref in db.where("VDI", SR=sr):
            if db.fields("VDI", ref)["location"] == info.location:
                return ref
        return None

    def _vdi_by_uuid(self, uuid):
        return self.db.table("VDI").by_uuid.get(uuid, NULL_REF) if uuid \
            else NULL_REF

    def record_vdi(self, sr, info):
        """Create or bring up to date the record of a VDI the driver
        reported; returns its ref."""
        db = self.db
        ref = self._find_vdi(sr, info)
        old = db.fields("VDI", ref) if ref else None
        sm_config = {k: v for k, v in (old["sm_config"] if old else {})
                     .items() if k != "vhd-parent"}
        sm_config.update(info.sm_config)
        fields = {
            "virtual_size": info.virtual_size,
            "physical_utilisation": info.physical_utilisation,
            "read_only": info.read_only, "managed": info.managed,
            "missing": False, "location": info.location,
            "is_a_snapshot": info.is_snapshot,
            "snapshot_of": self._vdi_by_uuid(info.snapshot_of),
            "snapshot_time": DateTime(info.snapshot_time)
            if info.snapshot_time else EPOCH,
            "sm_config": sm_config,
            "is_tools_iso": sm_config.get("xs-tools") == "true",
            "cbt_enabled": info.cbt_enabled}
        if ref is not None:
            db.update("VDI", ref, fields)
        else:
            fields.update(
                uuid=info.uuid, SR=sr, name_label=info.name_label,
                name_description=info.name_description,
                type=info.type if info.type in VDI_TYPES else "user",
                sharable=info.sharable, other_config={}, xenstore_data={},
                storage_lock=False, on_boot="persist", tags=[])
            ref = db.create("VDI", fields)
        operations.refresh(db, "VDI", ref)
        return ref

    def forget_vdi_record(self, vdi):
        """Drop a VDI's record and what points at it (its VBDs, a VM's
        suspend_VDI)."""
        db = self.db
        if not db.exists("VDI", vdi):
            return
        vbds = db.where("VBD", VDI=vdi)
        db.delete("VDI", vdi)
        for vbd in vbds:
            if db.exists("VBD", vbd):
                db.delete("VBD", vbd)
        for vm in db.where("VM", suspend_VDI=vdi):
            db.update("VM", vm, {"suspend_VDI": NULL_REF})

    @defer.inlineCallbacks
    def scan(self, sr):
        """Make the SR's VDI records match what the driver finds.  A VDI
        created or destroyed by someone else during the driver's scan
        makes the scan start again, so neither is undone."""
        db = self.db
        driver, sr_uuid = self.driver_of(sr)
        for _ in range(SCAN_RETRIES):
            before = set(db.where("VDI", SR=sr))
            d = self.run(driver.sr_scan, sr_uuid)
            infos = yield d.addErrback(translate, sr)
            if not db.exists("SR", sr):
                return
            after = set(db.where("VDI", SR=sr))
            if before == after:
                break
        else:
            raise XenAPIError("INTERNAL_ERROR",
                              "SR.scan retry limit exceeded")
        if db.fields("SR", sr)["is_tools_sr"]:
            host_srs.mark_tools_iso(infos)
        seen = set()
        # Sources before their snapshots, so snapshot_of resolves.
        for info in sorted(infos, key=lambda i: i.is_snapshot):
            seen.add(self.record_vdi(sr, info))
        for info in infos:
            if info.snapshot_of:
                self.record_vdi(sr, info)
        for vdi in after - seen:
            log.info("SR {sr}: VDI {uuid} is gone", sr=sr_uuid,
                     uuid=db.fields("VDI", vdi)["uuid"])
            self.forget_vdi_record(vdi)
        yield self._refresh_sizes(sr)

    def refresh_vdi(self, vdi):
        """vdi_update into the record (a Deferred of the ref)."""
        f = self.db.fields("VDI", vdi)
        driver, sr_uuid = self.driver_of(f["SR"])
        d = self.run(driver.vdi_update, sr_uuid, f["location"])
        d.addErrback(translate, f["SR"], vdi)
        return d.addCallback(lambda info: self.record_vdi(f["SR"], info))

    @defer.inlineCallbacks
    def _refresh_tree(self, sr, uuids):
        """Records of the nodes a snapshot or clone changed: the source's
        parent moved and a hidden base copy appeared."""
        driver, sr_uuid = self.driver_of(sr)
        for uuid in uuids:
            if not uuid:
                continue
            try:
                info = yield self.run(driver.vdi_update, sr_uuid, uuid)
            except StorageError:
                continue
            self.record_vdi(sr, info)

    # --- garbage collection -------------------------------------------------

    def kick_gc(self, sr):
        """Start a GC pass of the SR in the background (again after the
        current one, if one is running)."""
        if not self._running or not self.db.exists("SR", sr):
            return
        if sr in self._gc:
            self._gc[sr] = True
            return
        self._gc[sr] = False
        self._gc_pass(sr)

    def _gc_pass(self, sr):
        try:
            driver, sr_uuid = self.driver_of(sr)
        except XenAPIError:
            self._gc.pop(sr, None)
            return
        d = self.run(driver.sr_gc, sr_uuid)

        def done(result):
            if result.removed or result.coalesced:
                log.info("GC of SR {sr}: removed {removed}, coalesced "
                         "{coalesced}, {n} bytes back", sr=sr_uuid,
                         removed=len(result.removed),
                         coalesced=len(result.coalesced),
                         n=result.reclaimed)
                return self.scan(sr)
            return self._refresh_sizes(sr)

        def again(_):
            if self._gc.pop(sr, False) and self._running:
                self._gc[sr] = False
                self._gc_pass(sr)

        d.addCallback(done)
        d.addErrback(lambda f: log.warn("GC of SR {sr}: {error}", sr=sr_uuid,
                                        error=f.getErrorMessage()))
        d.addBoth(again)

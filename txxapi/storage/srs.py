"""
SR and PBD records: the SM records of the drivers, the SRs a first start
makes (the local SR, an ISO library), introducing SRs and PBDs, plugging
and unplugging, and an SR's sizes.
"""

import os

from twisted.internet import defer
from twisted.logger import Logger

from txxapi import operations
from txxapi.errors import XenAPIError
from txxapi.storage.common import translate
from txxapi.values import NULL_REF, new_uuid

log = Logger()

LOCAL_SR_NAME = "Local storage"
ISO_SR_NAME = "ISO library"
LOCAL_SR_OTHER_CONFIG = {"i18n-key": "local-storage",
                         "i18n-original-value-name_label": LOCAL_SR_NAME}


class SRRecords:
    """SR, PBD and SM records kept in step with the drivers."""

    # --- SM records ---------------------------------------------------------

    def _register_sm(self):
        db = self.db
        known = {db.fields("SM", r)["type"]: r for r in db.refs("SM")}
        for sm_type, d in sorted(self.drivers.items()):
            fields = {
                "type": sm_type, "name_label": d.name_label,
                "name_description": d.name_description,
                "vendor": d.vendor, "copyright": d.copyright,
                "version": d.version,
                "required_api_version": d.required_api_version,
                "configuration": dict(d.configuration),
                "capabilities": list(d.capabilities),
                "features": dict(d.features),
                "driver_filename": d.driver_filename,
                "required_cluster_stack": list(d.required_cluster_stack)}
            if sm_type in known:
                db.update("SM", known[sm_type], fields)
            else:
                db.create("SM", fields)

    def driver_for_type(self, sm_type):
        d = self.drivers.get((sm_type or "").lower())
        if d is None:
            raise XenAPIError("SR_UNKNOWN_DRIVER", sm_type)
        return d

    def driver_of(self, sr):
        """(driver, SR uuid) of an SR record."""
        f = self.db.fields("SR", sr)
        return self.driver_for_type(f["type"]), f["uuid"]


    # --- first start and every start ---------------------------------------

    def _first_start(self):
        """A host with no storage at all: a fresh install, which gets the
        local SR XAPI's installer makes."""
        pool = self.db.fields("pool", self.identity.pool_ref)
        return (not self.db.where("PBD", host=self.identity.host_ref)
                and pool["default_SR"] == NULL_REF)

    @defer.inlineCallbacks
    def _create_local_sr(self):
        db, host = self.db, self.identity.host_ref
        sr_uuid = new_uuid()
        config = {"location": os.path.join(
            os.path.abspath(self.local_sr_dir), sr_uuid)}
        yield self.run(self.drivers["file"].sr_create, sr_uuid, config, 0)
        sr = self.introduce_sr(sr_uuid, LOCAL_SR_NAME, "", "file", "user",
                               False, {}, other_config=LOCAL_SR_OTHER_CONFIG)
        self.create_pbd(host, sr, config)
        db.update("pool", self.identity.pool_ref, {
            "default_SR": sr, "suspend_image_SR": sr, "crash_dump_SR": sr})
        db.update("host", host, {"suspend_image_sr": sr,
                                 "crash_dump_sr": sr})
        log.info("created the local SR {uuid} in {path}", uuid=sr_uuid,
                 path=config["location"])

    @defer.inlineCallbacks
    def _ensure_iso_sr(self):
        db, host = self.db, self.identity.host_ref
        path = os.path.abspath(self.iso_dir)
        present = yield self.run(os.path.isdir, path)
        if not present:
            log.warn("ISO directory {path} does not exist", path=path)
            return
        for pbd in db.where("PBD", host=host):
            f = db.fields("PBD", pbd)
            if db.exists("SR", f["SR"]) and \
                    db.fields("SR", f["SR"])["type"] == "iso" and \
                    f["device_config"].get("location") == path:
                return
        sr_uuid = new_uuid()
        config = {"location": path}
        yield self.run(self.drivers["iso"].sr_create, sr_uuid, config, 0)
        sr = self.introduce_sr(sr_uuid, ISO_SR_NAME, "", "iso", "iso", False,
                               {})
        self.create_pbd(host, sr, config)


    # --- SR and PBD records --------------------------------------------------

    def introduce_sr(self, uuid, name_label, name_description, sm_type,
                     content_type, shared, sm_config, other_config=None):
        db = self.db
        uuid = uuid or new_uuid()
        if uuid in db.table("SR").by_uuid:
            raise XenAPIError("SR_UUID_EXISTS", uuid)
        sr = db.create("SR", {
            "uuid": uuid, "name_label": name_label,
            "name_description": name_description,
            "virtual_allocation": 0, "physical_utilisation": -1,
            "physical_size": -1, "type": (sm_type or "").lower(),
            "content_type": content_type, "shared": shared,
            "other_config": dict(other_config or {}),
            "sm_config": dict(sm_config)})
        operations.refresh(db, "SR", sr)
        return sr

    def create_pbd(self, host, sr, device_config, other_config=None):
        db = self.db
        for pbd in db.where("PBD", SR=sr):
            if db.fields("PBD", pbd)["host"] == host:
                raise XenAPIError("PBD_EXISTS", sr, host, pbd)
        if "SRmaster" in device_config:
            raise XenAPIError("VALUE_NOT_SUPPORTED", "SRmaster",
                              device_config["SRmaster"],
                              "This key is for internal use only")
        pbd = db.create("PBD", {"host": host, "SR": sr,
                                "device_config": dict(device_config),
                                "currently_attached": False,
                                "other_config": dict(other_config or {})})
        operations.refresh(db, "SR", sr)
        return pbd

    def local_pbd(self, sr):
        for pbd in self.db.where("PBD", SR=sr):
            if self.db.fields("PBD", pbd)["host"] == self.identity.host_ref:
                return pbd
        return None

    def assert_plugged(self, sr):
        """SR_HAS_NO_PBDS unless the SR is attached on this host."""
        pbd = self.local_pbd(sr)
        if pbd is None or not self.db.fields("PBD", pbd)["currently_attached"]:
            raise XenAPIError("SR_HAS_NO_PBDS", sr)

    def attach_sr(self, pbd):
        """PBD.plug's driver work: sr_attach, then currently_attached."""
        device_config = dict(self.db.fields("PBD", pbd)["device_config"])
        return self._pbd_call(pbd, True, lambda d, uuid: d.sr_attach(
            uuid, device_config))

    def detach_sr(self, pbd):
        """PBD.unplug's driver work: sr_detach, then currently_attached."""
        return self._pbd_call(pbd, False, lambda d, uuid: d.sr_detach(uuid))

    def _pbd_call(self, pbd, attached, call):
        db = self.db
        sr = db.fields("PBD", pbd)["SR"]
        driver, sr_uuid = self.driver_of(sr)
        d = self.run(call, driver, sr_uuid)
        d.addErrback(translate, sr)

        def done(_):
            if db.exists("PBD", pbd):
                db.update("PBD", pbd, {"currently_attached": attached})
            operations.refresh(db, "SR", sr)
        return d.addCallback(done)

    def apply_sr_info(self, sr, info):
        if self.db.exists("SR", sr):
            self.db.update("SR", sr, {
                "physical_size": info.physical_size,
                "physical_utilisation": info.physical_utilisation,
                "virtual_allocation": info.virtual_allocation})

    def update_sr(self, sr):
        """Fresh sizes of an SR into its record (a Deferred)."""
        driver, sr_uuid = self.driver_of(sr)
        d = self.run(driver.sr_update, sr_uuid)
        d.addErrback(translate, sr)
        return d.addCallback(lambda info: self.apply_sr_info(sr, info))

    def _refresh_sizes(self, sr):
        """update_sr for after a change; its failure must not fail the
        change itself."""
        d = self.update_sr(sr)
        d.addErrback(lambda f: log.warn("updating SR {sr}: {error}", sr=sr,
                                        error=f.getErrorMessage()))
        return d

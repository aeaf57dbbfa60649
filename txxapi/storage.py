"""
The toolstack side of storage (XAPI's storage_access): SRs, PBDs, VDIs and
SM records kept in step with the txstorage drivers, and the small API the
rest of the toolstack uses for disks (VM lifecycle, HTTP data paths).

* Drivers block.  Every driver call runs on this component's own thread
  pool (``run``); the database is written on the reactor only, from the
  results.
* The drivers are the truth about what exists on disk, about sizes and
  about the snapshot tree; the database is the truth about names, tags and
  other configuration.  ``record_vdi`` merges a driver's VDIInfo into the
  VDI table by that rule, and a scan does it for a whole SR.
* Each use of a VDI's data on this host (a VBD of a running VM, an HTTP
  import or export, a copy) is a claim.  The driver keeps one activation
  per host, so it is asked to attach and activate on the first claim and
  to deactivate on the last.
* Operations on SRs and VDIs are recorded in current_operations.  One
  that conflicts with an operation in progress waits for it to end, as
  XAPI's storage calls retry, instead of failing at once.
"""

import os
import threading
import time

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from txstorage import transfer, vhd
from txstorage.drivers import DRIVERS
from txstorage.drivers.file import FileSRDriver
from txstorage.errors import StorageError, Unimplemented
from txxapi import host_srs, operations
from txxapi.datamodel import MODEL
from txxapi.datapath import ExportSession, ImportSession
from txxapi.errors import XenAPIError
from txxapi.values import EPOCH, NULL_REF, DateTime, new_uuid

log = Logger()

POOL_SIZE = 16
LOCAL_SR_NAME = "Local storage"
ISO_SR_NAME = "ISO library"
LOCAL_SR_OTHER_CONFIG = {"i18n-key": "local-storage",
                         "i18n-original-value-name_label": LOCAL_SR_NAME}
# How long an operation waits for a conflicting one (XAPI retries for two
# hours), and how often it looks again without being woken.
MARK_WAIT = 7200.0
MARK_POLL = 1.0
SCAN_RETRIES = 10
# The piece size of copies.
COPY_PIECE = 4 << 20
PROGRESS_INTERVAL = 1.0
VDI_TYPES = frozenset(MODEL.enums["vdi_type"])
LIVE_STATES = ("Running", "Paused")

# Every use of a VDI's data on this host, from the moment it is asked for
# until it is released: VDI ref -> {key: writable}, the key a VBD ref or a
# data path's name.  The VDI operation rules see only the database, so
# they read this too.
CLAIMS = {}


def xapi_error(error, sr="", vdi=""):
    """A driver's StorageError as the XenAPIError XAPI reports."""
    code, params = error.xapi_error(sr, vdi)
    return XenAPIError(code, *params)


def translate(failure, sr="", vdi=""):
    """Errback: a driver failure as the XenAPI error XAPI reports."""
    if failure.check(StorageError):
        raise xapi_error(failure.value, sr, vdi)
    return failure


def sm_features(db, sm_type):
    """Capability names the SM record of an SR type advertises."""
    for ref in db.where("SM", type=sm_type):
        return set(db.fields("SM", ref)["features"])
    return set()


def register_rules(cls_name, error, ops):
    """Operation rules of a storage class: ``error(db, ref, op)`` checks
    one operation, and allowed_operations lists the ``ops`` it passes."""
    def advertise(db, ref):
        return [op for op in ops if error(db, ref, op) is None]
    operations.rules(cls_name, error, advertise)


def data_path_users(db, vdi):
    """(writable, key) of everything using the VDI's data now: attached
    VBDs and claims."""
    users = {}
    for vbd in db.where("VBD", VDI=vdi):
        f = db.fields("VBD", vbd)
        if f["currently_attached"]:
            users[vbd] = f["mode"] == "RW"
    users.update(CLAIMS.get(vdi, {}))
    return [(w, key) for key, w in users.items()]


def _copy_vdi_fields(src):
    """The configuration a snapshot or clone takes from its source."""
    keep = ("name_label", "name_description", "type", "sharable",
            "other_config", "xenstore_data", "on_boot", "allow_caching",
            "tags")
    return {k: src[k] for k in keep}


class Storage:
    """The server component: drivers, their thread pool and the database
    records of storage objects."""

    def __init__(self, server, local_sr_dir=None, iso_dir=None,
                 pool_size=POOL_SIZE):
        self.server = server
        self.local_sr_dir = local_sr_dir or os.path.join(server.data_dir,
                                                         "sr")
        self.iso_dir = iso_dir or None
        self.pool = ThreadPool(minthreads=0, maxthreads=pool_size,
                               name="storage")
        # A reactor without threads (a test Clock) runs driver calls inline.
        self._inline = not IReactorThreads.providedBy(server.reactor)
        self.drivers = {}
        self._claims = {}          # (SR uuid, VDI location) -> {key: rw}
        self._claim_lock = threading.Lock()
        self._uses = {}            # (VDI ref, key) -> _Use
        self._releasing = {}       # VDI ref -> [Deferred] of detaches
        self._gc = {}              # SR ref -> rerun wanted
        self._waiters = {}         # (class, ref) -> [Deferred]
        self.transfers = set()     # open data paths, aborted at stop
        self._running = False

    @property
    def db(self):
        return self.server.db

    # --- lifetime -----------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        host_uuid = self.db.fields("host", self.server.host_ref)["uuid"]
        self.drivers = {t: self._make_driver(cls, host_uuid)
                        for t, cls in DRIVERS.items()}
        if not self._inline:
            self.pool.start()
        self._running = True
        self.db.listeners.append(self._changed)
        self._register_sm()
        if self._first_start():
            yield self._create_local_sr()
            yield host_srs.create_udev_srs(self)
        yield host_srs.ensure_tools_sr(self)
        if self.iso_dir:
            yield self._ensure_iso_sr()
        yield self._plug_all()

    @defer.inlineCallbacks
    def stop(self):
        self._running = False
        if self._changed in self.db.listeners:
            self.db.listeners.remove(self._changed)
        for session in list(self.transfers):
            try:
                yield session.abort()
            except Exception:
                log.failure("aborting a transfer at stop")
        if not self._inline:
            self.pool.stop()

    @staticmethod
    def _make_driver(cls, host_uuid):
        if issubclass(cls, FileSRDriver):
            # Space is taken as data arrives, as on XAPI's file SRs.
            return cls(host=host_uuid, thin_provisioning=True)
        return cls(host=host_uuid)

    def run(self, fn, *args, **kw):
        """Run blocking storage work on the pool: a Deferred."""
        if self._inline:
            return defer.maybeDeferred(fn, *args, **kw)
        return threads.deferToThreadPool(self.server.reactor, self.pool, fn,
                                         *args, **kw)

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
        pool = self.db.fields("pool", self.server.pool_ref)
        return (not self.db.where("PBD", host=self.server.host_ref)
                and pool["default_SR"] == NULL_REF)

    @defer.inlineCallbacks
    def _create_local_sr(self):
        db, host = self.db, self.server.host_ref
        sr_uuid = new_uuid()
        config = {"location": os.path.join(
            os.path.abspath(self.local_sr_dir), sr_uuid)}
        yield self.run(self.drivers["file"].sr_create, sr_uuid, config, 0)
        sr = self.introduce_sr(sr_uuid, LOCAL_SR_NAME, "", "file", "user",
                               False, {}, other_config=LOCAL_SR_OTHER_CONFIG)
        self.create_pbd(host, sr, config)
        db.update("pool", self.server.pool_ref, {
            "default_SR": sr, "suspend_image_SR": sr, "crash_dump_SR": sr})
        db.update("host", host, {"suspend_image_sr": sr,
                                 "crash_dump_sr": sr})
        log.info("created the local SR {uuid} in {path}", uuid=sr_uuid,
                 path=config["location"])

    @defer.inlineCallbacks
    def _ensure_iso_sr(self):
        db, host = self.db, self.server.host_ref
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

    @defer.inlineCallbacks
    def _plug_all(self):
        """Attach this host's SRs (a fresh process has none attached), drop
        the activations the previous process held, claim again what the
        VMs still running here use, and bring the database up to date."""
        db = self.db
        plugged = []
        for pbd in db.where("PBD", host=self.server.host_ref):
            db.update("PBD", pbd, {"currently_attached": False})
            try:
                yield self.attach_sr(pbd)
            except Exception as e:
                log.warn("cannot plug PBD {pbd}: {error}", pbd=pbd, error=e)
                continue
            plugged.append(db.fields("PBD", pbd)["SR"])
        for sr in plugged:
            driver, sr_uuid = self.driver_of(sr)
            try:
                yield self.run(driver.sr_reset_host, sr_uuid)
            except Exception as e:
                log.warn("resetting SR {sr}: {error}", sr=sr_uuid, error=e)
        yield self._reclaim_running()
        for sr in plugged:
            try:
                yield self.scan(sr)
            except Exception as e:
                log.warn("scanning SR {sr}: {error}", sr=sr, error=e)
            self.kick_gc(sr)

    @defer.inlineCallbacks
    def _reclaim_running(self):
        db = self.db
        for vbd in db.refs("VBD"):
            f = db.fields("VBD", vbd)
            if not f["currently_attached"] or f["empty"] or \
                    not db.exists("VDI", f["VDI"]) or \
                    not db.exists("VM", f["VM"]):
                continue
            vm = db.fields("VM", f["VM"])
            if vm["resident_on"] != self.server.host_ref or \
                    vm["power_state"] not in LIVE_STATES:
                continue
            try:
                yield self.attach(f["VDI"], f["mode"] == "RW", vbd)
            except Exception as e:
                log.warn("cannot claim VDI {vdi} again for VBD {vbd}: "
                         "{error}", vdi=f["VDI"], vbd=vbd, error=e)

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
            if self.db.fields("PBD", pbd)["host"] == self.server.host_ref:
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
            "is_tools_iso": sm_config.get("xs-tools") == "true"}
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

    # --- operations ---------------------------------------------------------

    def _wait_for(self, objects):
        """A Deferred that fires when an operation on one of the objects
        ends, or after MARK_POLL seconds."""
        d = defer.Deferred()
        for obj in objects:
            self._waiters.setdefault(obj, []).append(d)
        call = self.server.reactor.callLater(MARK_POLL, d.callback, None)

        def cleanup(result):
            if call.active():
                call.cancel()
            for obj in objects:
                waiting = self._waiters.get(obj, [])
                if d in waiting:
                    waiting.remove(d)
                if not waiting:
                    self._waiters.pop(obj, None)
            return result
        return d.addBoth(cleanup)

    def _wake(self, obj):
        for d in list(self._waiters.get(obj, [])):
            if not d.called:
                d.callback(None)

    @defer.inlineCallbacks
    def marked(self, ctx, marks, body):
        """Run ``body()`` with each (class, ref, op) of ``marks`` recorded
        in current_operations.  Refusals other than another operation in
        progress are raised at once; that one is waited out."""
        started = time.monotonic()
        while True:
            try:
                for cls, ref, op in marks:
                    operations.check(ctx, cls, ref, op)
                break
            except XenAPIError as e:
                if e.code != "OTHER_OPERATION_IN_PROGRESS" or \
                        time.monotonic() - started > MARK_WAIT:
                    raise
            ctx.check_cancelled()
            yield self._wait_for([(cls, ref) for cls, ref, _ in marks])
        keys = [(cls, ref, operations.begin(ctx, cls, ref, op))
                for cls, ref, op in marks]
        try:
            result = yield defer.maybeDeferred(body)
        finally:
            for cls, ref, key in keys:
                operations.end(self.db, cls, ref, key)
                self._wake((cls, ref))
        return result

    # --- claims: this host using a VDI's data --------------------------------

    def _claim_blocking(self, driver, sr_uuid, location, key, writable):
        info = driver.vdi_attach(sr_uuid, location, writable)
        try:
            with self._claim_lock:
                claims = self._claims.setdefault((sr_uuid, location), {})
                was_rw = any(claims.values())
                if not claims or (writable and not was_rw):
                    driver.vdi_activate(sr_uuid, location, writable or was_rw)
                claims[key] = writable
        except BaseException:
            with self._claim_lock:
                if not self._claims.get((sr_uuid, location)):
                    self._claims.pop((sr_uuid, location), None)
            driver.vdi_detach(sr_uuid, location)
            raise
        return info

    def _release_blocking(self, driver, sr_uuid, location, key):
        with self._claim_lock:
            claims = self._claims.get((sr_uuid, location), {})
            if key not in claims:
                return
            writable = claims.pop(key)
            if not claims:
                del self._claims[(sr_uuid, location)]
                driver.vdi_deactivate(sr_uuid, location)
            elif writable and not any(claims.values()):
                driver.vdi_activate(sr_uuid, location, False)
        driver.vdi_detach(sr_uuid, location)

    def attach(self, vdi, writable, key):
        """Attach and activate ``vdi`` on this host for one user (``key``,
        e.g. a VBD ref): a Deferred of its AttachInfo (``.path``,
        ``.format``), which ``path_of`` also answers until ``detach``.
        The use counts from this call on (CLAIMS)."""
        f = self.db.fields("VDI", vdi)
        sr = f["SR"]
        self.assert_plugged(sr)
        driver, sr_uuid = self.driver_of(sr)
        if (vdi, key) in self._uses:
            raise XenAPIError("INTERNAL_ERROR", "VDI %s already attached "
                              "for %s" % (vdi, key))
        use = _Use(writable, sr, sr_uuid, f["location"])
        self._uses[(vdi, key)] = use
        CLAIMS.setdefault(vdi, {})[key] = writable
        self._refresh_later(vdi)
        d = self.run(self._claim_blocking, driver, sr_uuid, f["location"],
                     key, writable)

        def attached(info):
            use.info = info
            use.settle(True)
            return info

        def failed(failure):
            use.settle(False)
            if self._uses.get((vdi, key)) is use:
                self._forget_use(vdi, key)
            return translate(failure, sr, vdi)
        return d.addCallbacks(attached, failed)

    def _forget_use(self, vdi, key):
        self._uses.pop((vdi, key), None)
        users = CLAIMS.get(vdi)
        if users is not None:
            users.pop(key, None)
            if not users:
                CLAIMS.pop(vdi, None)
        self._refresh_later(vdi)

    def _refresh_later(self, vdi):
        """Recompute the VDI's allowed_operations in a later turn: this
        may run inside a database listener, which must not write."""
        def refresh():
            if self.db.exists("VDI", vdi):
                operations.refresh(self.db, "VDI", vdi)
        self.server.reactor.callLater(0, refresh)

    def detach(self, vdi, key):
        """Undo ``attach`` (a Deferred); detaching twice is harmless.  The
        use stops counting at once; ``settled`` waits for the driver."""
        use = self._uses.get((vdi, key))
        if use is None:
            return defer.succeed(None)
        self._forget_use(vdi, key)
        done = defer.Deferred()
        self._releasing.setdefault(vdi, []).append(done)

        def release(attached):
            if not attached:
                return None
            try:
                driver = self.driver_of(use.sr)[0]
            except XenAPIError:
                return None
            return self.run(self._release_blocking, driver, use.sr_uuid,
                            use.location, key)

        def finished(result):
            pending = self._releasing.get(vdi, [])
            if done in pending:
                pending.remove(done)
            if not pending:
                self._releasing.pop(vdi, None)
            done.callback(None)
            return result
        # An attach still under way is released once it has happened.
        d = use.settled().addCallback(release)
        d.addBoth(finished)
        return d.addErrback(translate, use.sr, vdi)

    def settled(self, vdi=None):
        """A Deferred that fires when the releases under way (of ``vdi``,
        or all) have reached the driver."""
        if vdi is None:
            pending = [d for ds in self._releasing.values() for d in ds]
        else:
            pending = list(self._releasing.get(vdi, []))
        waits = []
        for d in pending:
            w = defer.Deferred()
            d.addBoth(lambda r, w=w: (w.callback(None), r)[1])
            waits.append(w)
        return defer.DeferredList(waits)

    def detach_key(self, key, keep=None):
        """Release every VDI attached for ``key`` but ``keep`` (in the
        background; failures are logged)."""
        for vdi, k in list(self._uses):
            if k == key and vdi != keep:
                self.detach(vdi, key).addErrback(
                    lambda f, vdi=vdi: log.warn(
                        "releasing {vdi}: {error}", vdi=vdi,
                        error=f.getErrorMessage()))

    def path_of(self, vdi, key=None):
        """The path an attach of ``vdi`` returned, or None."""
        for (ref, k), use in self._uses.items():
            if ref == vdi and use.info is not None and (key is None or
                                                        k == key):
                return use.info.path
        return None

    def attached_for(self, vdi, key):
        return (vdi, key) in self._uses

    def assert_attachable(self, vdi, key, writable):
        """XAPI's sharing rule for a VBD: a VDI that is not sharable may
        have one writer, or readers only; system domains and suspended
        VMs do not count."""
        db = self.db
        f = db.fields("VDI", vdi)
        if writable and f["read_only"]:
            raise XenAPIError("VDI_READONLY", vdi)
        if f["sharable"]:
            return
        users = dict(CLAIMS.get(vdi, {}))
        for vbd in db.where("VBD", VDI=vdi):
            g = db.fields("VBD", vbd)
            if g["currently_attached"] or g["current_operations"]:
                users.setdefault(vbd, g["mode"] == "RW")
        users.pop(key, None)
        for other in list(users):
            if db.exists("VBD", other):
                vm = db.fields("VBD", other)["VM"]
                if db.exists("VM", vm) and (
                        db.fields("VM", vm)["power_state"] == "Suspended"
                        or db.fields("VM", vm)["is_control_domain"]):
                    del users[other]
        if any(users.values()) or (writable and users):
            raise XenAPIError("VDI_IN_USE", vdi)

    def _changed(self, record, cls):
        """Database listener: a VBD's data is released when its device
        goes away (VM halted or suspended, VBD unplugged, emptied, moved
        to another VDI, destroyed)."""
        _, op, table, ref, fields = record
        if table == "VBD":
            vdi = (fields or {}).get("VDI")
            if vdi is None and op != "del":
                vdi = self.db.fields("VBD", ref)["VDI"]
            if vdi is not None and vdi != NULL_REF:
                self._refresh_later(vdi)
            if op == "del" or (op == "mod" and (
                    fields.get("currently_attached") is False or
                    fields.get("empty") is True)):
                self.detach_key(ref)
            elif op == "mod" and "VDI" in fields:
                self.detach_key(ref, keep=fields["VDI"])
        elif table == "VM" and op == "mod" and \
                fields.get("power_state") in ("Halted", "Suspended"):
            for vbd in self.db.where("VBD", VM=ref):
                self.detach_key(vbd)

    # --- VDI operations, for the API and for VM operations -------------------

    def assert_managed(self, vdi):
        if not self.db.fields("VDI", vdi)["managed"]:
            raise XenAPIError("VDI_NOT_MANAGED", vdi)

    def create_vdi(self, ctx, sr, virtual_size, name_label="",
                   name_description="", vdi_type="user", sharable=False,
                   read_only=False, other_config=None, xenstore_data=None,
                   sm_config=None, tags=None):
        """VDI.create: a Deferred of the new VDI's ref."""
        if vdi_type == "cbt_metadata":
            raise XenAPIError("VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata")
        self.db.fields("SR", sr)
        self.assert_plugged(sr)
        return self.marked(ctx, [("SR", sr, "vdi_create")],
                           lambda: self._create(
                               sr, virtual_size, name_label,
                               name_description, vdi_type, sharable,
                               read_only, other_config, xenstore_data,
                               sm_config, tags))

    @defer.inlineCallbacks
    def _create(self, sr, virtual_size, name_label, name_description,
                vdi_type, sharable, read_only, other_config, xenstore_data,
                sm_config, tags):
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

    def destroy_vdi(self, ctx, vdi):
        """VDI.destroy (a Deferred)."""
        db = self.db
        sr = db.fields("VDI", vdi)["SR"]
        self.assert_plugged(sr)
        self.assert_managed(vdi)

        @defer.inlineCallbacks
        def body():
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
        return self.marked(ctx, [("SR", sr, "vdi_destroy"),
                                 ("VDI", vdi, "destroy")], body)

    def snapshot_vdi(self, ctx, vdi, driver_params=None):
        """VDI.snapshot: a Deferred of the snapshot's ref."""
        return self._snapshot_or_clone(ctx, vdi, driver_params, True)

    def clone_vdi(self, ctx, vdi, driver_params=None):
        """VDI.clone: a Deferred of the clone's ref.  A driver that cannot
        clone gets a full copy instead, as XAPI does."""
        d = self._snapshot_or_clone(ctx, vdi, driver_params, False)

        def copy_instead(ref):
            if ref is not None:
                return ref
            return self.copy_vdi(ctx, vdi, self.db.fields("VDI", vdi)["SR"])
        return d.addCallback(copy_instead)

    def _snapshot_or_clone(self, ctx, vdi, driver_params, snapshot):
        db = self.db
        src = db.fields("VDI", vdi)
        sr = src["SR"]
        self.assert_plugged(sr)
        self.assert_managed(vdi)
        op = "snapshot" if snapshot else "clone"

        @defer.inlineCallbacks
        def body():
            driver, sr_uuid = self.driver_of(sr)
            call = driver.vdi_snapshot if snapshot else driver.vdi_clone
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
        return self.marked(ctx, [("SR", sr, "vdi_" + op), ("VDI", vdi, op)],
                           body)

    def resize_vdi(self, ctx, vdi, size):
        """VDI.resize (a Deferred)."""
        sr = self.db.fields("VDI", vdi)["SR"]
        self.assert_plugged(sr)
        self.assert_managed(vdi)

        def body():
            driver, sr_uuid = self.driver_of(sr)
            d = self.run(driver.vdi_resize, sr_uuid,
                         self.db.fields("VDI", vdi)["location"], size)
            d.addErrback(translate, sr, vdi)
            d.addCallback(lambda info: self.record_vdi(sr, info))
            d.addCallback(lambda _: self._refresh_sizes(sr))
            return d.addCallback(lambda _: "")
        return self.marked(ctx, [("SR", sr, "vdi_resize"),
                                 ("VDI", vdi, "resize")], body)

    def copy_vdi(self, ctx, vdi, sr, base_vdi=NULL_REF, into_vdi=NULL_REF):
        """VDI.copy: ``vdi``'s data into ``into_vdi``, or into a new VDI in
        ``sr``; with ``base_vdi``, only the blocks that differ from it (the
        target already holds the base's data).  A Deferred of the target's
        ref; a VDI created here is destroyed again if the copy fails."""
        db = self.db
        src = db.fields("VDI", vdi)
        self.assert_managed(vdi)
        into = into_vdi if db.exists("VDI", into_vdi) else None
        if into is None:
            db.fields("SR", sr)
        base = base_vdi if db.exists("VDI", base_vdi) else None

        @defer.inlineCallbacks
        def body():
            created = None
            try:
                if into is None:
                    created = yield self.create_vdi(
                        ctx, sr, src["virtual_size"], src["name_label"],
                        src["name_description"], src["type"],
                        src["sharable"], False, src["other_config"],
                        src["xenstore_data"], {}, src["tags"])
                    db.update("VDI", created,
                              {"allow_caching": src["allow_caching"]})
                dst = into or created
                d = db.fields("VDI", dst)
                if d["read_only"]:
                    raise XenAPIError("VDI_READONLY", dst)
                if d["virtual_size"] < src["virtual_size"]:
                    raise XenAPIError("VDI_TOO_SMALL", dst,
                                      str(src["virtual_size"]))
                yield self._copy_data(ctx, vdi, dst, base)
                yield self.refresh_vdi(dst)
                yield self._refresh_sizes(db.fields("VDI", dst)["SR"])
                return dst
            except Exception:
                if created is not None and db.exists("VDI", created):
                    log.info("copy failed: destroying the VDI it made")
                    try:
                        yield self.destroy_vdi(ctx, created)
                    except Exception as e:
                        log.warn("cleaning up {vdi}: {error}", vdi=created,
                                 error=e)
                raise
        return self.marked(ctx, [("VDI", vdi, "copy")], body)

    @defer.inlineCallbacks
    def _copy_data(self, ctx, src, dst, base):
        key = "copy/" + new_uuid()
        uses = [(src, False), (dst, True)] + ([(base, False)] if base else [])
        self.assert_free(dst, True)
        infos = []
        cancelled = threading.Event()
        if ctx.task is not None:
            self.server.tasks.set_canceller(ctx.task, cancelled.set)
        try:
            for vdi, writable in uses:
                infos.append((yield self.attach(vdi, writable, key)))
            progress = self._progress_reporter(ctx)
            yield self.run(_copy_blocking, infos[0], infos[1],
                           infos[2] if base else None, progress, cancelled)
        except _Cancelled:
            raise XenAPIError("TASK_CANCELLED", ctx.task or "")
        except StorageError as e:
            raise XenAPIError("VDI_IO_ERROR", "Device I/O errors", str(e))
        finally:
            if ctx.task is not None:
                self.server.tasks.clear_canceller(ctx.task)
            for vdi, _ in uses:
                try:
                    yield self.detach(vdi, key)
                except Exception as e:
                    log.warn("releasing {vdi}: {error}", vdi=vdi, error=e)

    def _progress_reporter(self, ctx):
        """A thread-safe callable(fraction) that sets the task's progress
        at most every PROGRESS_INTERVAL seconds."""
        if ctx.task is None:
            return lambda fraction: None
        last = [0.0]
        reactor = self.server.reactor

        def report(fraction):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                reactor.callFromThread(self.server.tasks.set_progress,
                                       ctx.task, min(fraction, 0.99))
        return report

    # --- HTTP data paths ----------------------------------------------------

    def assert_free(self, vdi, writable):
        """VDI_IN_USE if the VDI's data cannot be used this way now: a
        writer needs it to itself, a reader needs nobody writing."""
        users = data_path_users(self.db, vdi)
        if (writable and users) or any(rw for rw, _ in users):
            raise XenAPIError("VDI_IN_USE", vdi)

    def open_import(self, vdi, fmt, chunked=False, expected_size=None):
        """Start an upload into ``vdi`` (fmt "raw" or "vhd"; chunked: the
        vhd-tool record framing): a Deferred of an ImportSession."""
        return defer.maybeDeferred(
            ImportSession(self, vdi, fmt, chunked, expected_size).open)

    def open_export(self, vdi, fmt, base=None):
        """Start a download of ``vdi`` as "raw" or "vhd" (against ``base``
        for a differential VHD): a Deferred of an ExportSession."""
        return defer.maybeDeferred(ExportSession(self, vdi, fmt, base).open)


class _Cancelled(Exception):
    pass


class _Use:
    """One claim on a VDI by this host: where it lives, and the attach
    that made it (settle(ok) when that is over)."""

    def __init__(self, writable, sr, sr_uuid, location):
        self.writable = writable
        self.sr = sr
        self.sr_uuid = sr_uuid
        self.location = location
        self.info = None
        self._outcome = None
        self._waiting = []

    def settle(self, ok):
        self._outcome = ok
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(ok)

    def settled(self):
        """A Deferred of whether the attach succeeded, once it is over."""
        if self._outcome is not None:
            return defer.succeed(self._outcome)
        d = defer.Deferred()
        self._waiting.append(d)
        return d


def _copy_blocking(src, dst, base, progress, cancelled):
    """Copy src's data into dst (AttachInfos) through the staged writer;
    with base, only the blocks where src differs from base."""
    reader = transfer.open_raw_reader(src)
    base_reader = transfer.open_raw_reader(base) if base else None
    try:
        with transfer.open_raw_writer(dst) as writer:
            if base is None:
                extents = transfer.allocated_extents(src, reader.entries)
                pos = 0
                for start, length in extents + [(reader.size, 0)]:
                    if start > pos:
                        writer.write_zeroes(pos, start - pos)
                    end = min(start + length, reader.size)
                    for off in range(start, end, COPY_PIECE):
                        if cancelled.is_set():
                            raise _Cancelled()
                        writer.pwrite(off, reader.pread(
                            off, min(COPY_PIECE, end - off)))
                        progress(off / max(1, reader.size))
                    pos = max(pos, end)
            else:
                size = vhd.DEFAULT_BLOCK_SIZE
                blocks = transfer.candidate_blocks(
                    src, base, size, reader.entries, base_reader.entries)
                pairs = zip(blocks, reader.iter_blocks(blocks, size),
                            base_reader.iter_blocks(blocks, size))
                for n, (idx, mine, theirs) in enumerate(pairs):
                    if cancelled.is_set():
                        raise _Cancelled()
                    if mine != theirs[:len(mine)]:
                        writer.pwrite(idx * size, mine)
                    progress(n / max(1, len(blocks)))
    finally:
        reader.close()
        if base_reader is not None:
            base_reader.close()

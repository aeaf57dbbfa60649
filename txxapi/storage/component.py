"""
The storage component (XAPI's storage_access): the txstorage drivers, the
thread pool their blocking calls run on (the database is written on the
reactor only, from the results), and its lifetime: at start, the SM
records, the first start's SRs, and plugging this host's SRs again.

Its parts live beside it, one seam each: SR and PBD records (srs), VDI
records and GC (vdi_records), claims on VDI data (claims), VDI
operations (vdi_ops), copies (copies), HTTP data paths (datapath).  The
operations are marked by the forwarding layer (txxapi.forwarding), not
here.
"""

import os
import threading

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from txstorage.drivers import DRIVERS
from txstorage.drivers.file import FileSRDriver
from txxapi.interfaces import IStorageBridge
from txxapi.storage import host_srs
from txxapi.storage.claims import Claims
from txxapi.storage.copies import Copies
from txxapi.storage.datapath import DataPaths
from txxapi.storage.srs import SRRecords
from txxapi.storage.vdi_ops import VDIOperations
from txxapi.storage.vdi_records import VDIRecords
from txxapi.workers import Workers

log = Logger()

POOL_SIZE = 16
LIVE_STATES = ("Running", "Paused")


@implementer(IStorageBridge)
class Storage(SRRecords, VDIRecords, Claims, VDIOperations, Copies,
              DataPaths):
    """The server component: drivers, their thread pool and the database
    records of storage objects."""

    def __init__(self, db, identity, clock, tasks, local_sr_dir=None,
                 iso_dir=None, workers=None):
        """``workers``: where driver calls run (by default a pool of
        POOL_SIZE threads, inline under a test Clock)."""
        self.db = db
        self.identity = identity
        self.clock = clock
        self.tasks = tasks
        self.local_sr_dir = local_sr_dir or os.path.join(identity.data_dir,
                                                         "sr")
        self.iso_dir = iso_dir or None
        self.workers = workers or Workers(clock, "storage", POOL_SIZE)
        self.drivers = {}
        self._claims = {}          # (SR uuid, VDI location) -> {key: rw}
        self._claim_lock = threading.Lock()
        self._uses = {}            # (VDI ref, key) -> Use
        self._releasing = {}       # VDI ref -> [Deferred] of detaches
        self._gc = {}              # SR ref -> rerun wanted
        self.transfers = set()     # open data paths, aborted at stop
        self._running = False

    # --- lifetime -----------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        host_uuid = self.db.fields("host", self.identity.host_ref)["uuid"]
        self.drivers = {t: self._make_driver(cls, host_uuid)
                        for t, cls in DRIVERS.items()}
        self.workers.start()
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
        self.workers.stop()

    @staticmethod
    def _make_driver(cls, host_uuid):
        if issubclass(cls, FileSRDriver):
            # Space is taken as data arrives, as on XAPI's file SRs.
            return cls(host=host_uuid, thin_provisioning=True)
        return cls(host=host_uuid)

    def run(self, fn, *args, **kw):
        """Run blocking storage work on the storage threads: a
        Deferred."""
        return self.workers.run(fn, *args, **kw)


    def _plug_all(self):
        """Attach this host's SRs (a fresh process has none attached), drop
        the activations the previous process held, claim again what the
        VMs still running here use, and bring the database up to date."""
        db = self.db
        plugged = []
        for pbd in db.where("PBD", host=self.identity.host_ref):
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
            if vm["resident_on"] != self.identity.host_ref or \
                    vm["power_state"] not in LIVE_STATES:
                continue
            try:
                # Its guest's writes since are still the backend's to tell
                # (as at a start), not every block.
                yield self.attach(f["VDI"], f["mode"] == "RW", vbd,
                                  tracked=self.guest_writes is not None)
            except Exception as e:
                log.warn("cannot claim VDI {vdi} again for VBD {vbd}: "
                         "{error}", vdi=f["VDI"], vbd=vbd, error=e)

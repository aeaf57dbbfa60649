"""
Where a VM's RRD goes when its domain leaves a host, and where a host's
own comes from when it starts without one, as XAPI's hosts pass them
(txxapi.metrics.transfer carries them):

* a VM stopped (halted or suspended) on a slave: its RRD is archived to
  the master, which keeps it among its own set-aside RRDs, so /vm_rrd
  asked of the pool answers it there;
* a VM whose domain starts on a slave that keeps no RRD of it: the
  master's copy is fetched before the sample that would begin a fresh
  one, so the history continues;
* a VM that moved (VM.pool_migrate): the source hands its RRD to the
  destination once the move is done; a domain found gone whose VM the
  database says runs elsewhere is handed over the same way;
* a slave's RRDs (its host's, its VMs' live ones, its SRs') are backed
  up to the master every BACKUP_INTERVAL and by host.backup_rrds, its
  host's as the server stops (unless it stops to leave that master: a
  change of master, an emergency); the host's and its SRs' are fetched
  back from there when the host starts without them (its disk lost
  them);
* a change of master keeps every host's own RRDs (its disk holds them
  across the restart, as xcp-rrdd's memory holds them across xapi's);
  a slave sends what it sends to the master to the new one;
* a host that starts as a slave after being the master (a new master
  was designated, or took over while it was down) sends the new master
  what it kept for the pool: the RRDs of the VMs stopped (as those of
  domains gone), the other hosts' backups, and its copies of the RRDs
  of VMs running elsewhere, to keep (not to replace the running host's,
  which are newer).

On the master a stopped VM's RRD simply stays set aside.  Failures are
logged and leave the RRD where it was, sent again later: metrics never
fail a VM operation.  The store is only touched on the metrics threads.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.forwarding.hosts import RESIDENT_STATES
from txxapi.metrics import storage, transfer
from txxapi.metrics.store import HOST, SR, VM

log = Logger()

BACKUP_INTERVAL = 86400.0
# How long a sample waits for the master's copies (a start for the host's
# RRD), and a stop for the master to take the backup.
FETCH_TIMEOUT = STOP_TIMEOUT = 5.0
STOPPED_STATES = ("Halted", "Suspended")
# RRDs fetched from the master, or sent to it, at once.
FETCHES = SENDS = 4


def _xml(rrd):
    return None if rrd is None else storage.to_xml(rrd)


class Handover:
    def __init__(self, metrics):
        self.metrics = metrics
        self.store = metrics.store
        self.leaving = set()    # VMs whose domains went, not yet settled
        self.backups = set()    # other hosts' backups for the master
        # VMs of ``leaving`` whose RRDs were read back at the start (no
        # domain of theirs was seen going).
        self.read_back = set()
        self.sending = set()
        # Set when this host leaves the master it followed (it takes the
        # mastership, or follows another): nothing is backed up to it
        # any more (a gone one would hold the stop for a timeout).
        self.master_failed = False
        self._fetches = defer.DeferredSemaphore(FETCHES)
        self._sends = defer.DeferredSemaphore(SENDS)

    # --- who and where ---------------------------------------------------------

    @property
    def _identity(self):
        return self.metrics.identity

    @property
    def is_slave(self):
        return not self._identity.is_master

    @property
    def _master(self):
        return self._identity.role.master_address

    def _host_uuid(self):
        db = self.metrics.db
        return db.fields("host", self._identity.host_ref)["uuid"]

    def _put(self, address, uuid, body, archive, timeout=transfer.TIMEOUT):
        return transfer.put(self.metrics.clock, address,
                            self._identity.pool_secret, uuid, body, archive,
                            timeout)

    @defer.inlineCallbacks
    def _fetch(self, kind, uuid, timeout=FETCH_TIMEOUT):
        data = yield transfer.fetch(self.metrics.clock, self._master,
                                    self._identity.pool_secret,
                                    transfer.PATHS[kind], uuid, timeout)
        if data is not None:
            yield self.metrics.run(
                lambda: self.store.adopt(kind, uuid, storage.from_xml(data)))

    # --- a host starting, a host backing up --------------------------------------

    @defer.inlineCallbacks
    def restore_host(self, srs=()):
        """On a slave: the master's backups of this host's RRD and of the
        SRs plugged here (``srs``) it has none of.  The VMs' RRDs read
        back are sent on as those of domains gone (a VM stopped while
        this host was down, or while it was the master, goes to the
        master), and so are other hosts' backups it kept as the
        master."""
        if not self.is_slave:
            return
        self.read_back.update((yield self.metrics.run(
            self.store.set_aside_vms)))
        self.leaving.update(self.read_back)
        self.backups.update((yield self.metrics.run(
            self.store.archived_host_uuids)))
        wanted = [] if (yield self.metrics.run(self.store.has_host)) else \
            [(HOST, self._host_uuid())]
        wanted += [(SR, uuid) for uuid in (yield self.metrics.run(
            self.store.unknown_srs, list(srs)))]
        # At once (a master that does not answer delays the first sample
        # by one timeout).
        yield defer.DeferredList([self._fetches.run(self._fetch_kept, *w)
                                  for w in wanted])

    @defer.inlineCallbacks
    def backup(self, timeout=transfer.TIMEOUT, host_only=False):
        """On a slave: its RRDs to the master (backup_rrds), or its
        host's alone (send_host_rrd_to_master, as it stops)."""
        if not self.is_slave or self.master_failed:
            return
        copies = yield self.metrics.run(self.store.backup)
        if host_only:
            copies = [c for c in copies if c[0] == HOST]

        @defer.inlineCallbacks
        def send(kind, uuid, rrd):
            body = yield self.metrics.run(storage.to_xml, rrd)
            try:
                yield self._put(self._master, uuid, body, True, timeout)
            except transfer.TransferFailed as e:
                log.warn("metrics: backing up the RRD of {kind} {uuid} to "
                         "the master: {e}", kind=kind, uuid=uuid, e=e)
        yield defer.DeferredList([self._sends.run(send, *c)
                                  for c in copies])

    # --- a sample's VMs ----------------------------------------------------------

    @defer.inlineCallbacks
    def arriving(self, uuids, srs=()):
        """Before a sample is archived on a slave: the master's RRDs of
        the VMs whose domains are new here, and of the SRs newly plugged
        here (a restart plugs its SRs after the metrics have started).
        Asked in emergency mode too: a slave's first samples are taken
        before its master has answered its hello; a master that is gone
        delays one sample by one timeout, then they start afresh."""
        if not self.is_slave or not (uuids or srs) or self.master_failed:
            return
        unknown = yield self.metrics.run(self.store.unknown_vms, uuids)
        unknown_srs = yield self.metrics.run(self.store.unknown_srs,
                                             list(srs))
        fetches = [self._fetches.run(self._fetch_kept, kind, uuid)
                   for kind, uuids in ((VM, unknown), (SR, unknown_srs))
                   for uuid in uuids]
        yield defer.DeferredList(fetches)

    @defer.inlineCallbacks
    def _fetch_kept(self, kind, uuid):
        try:
            yield self._fetch(kind, uuid)
        except Exception as e:
            log.warn("metrics: the master's copy of the RRD of {kind} "
                     "{uuid}: {e}", kind=kind, uuid=uuid, e=e)

    def left(self, gone=(), came=()):
        """After a sample: the VMs whose domains went (and those still
        to be sent), each sent where the database says it is now once it
        says so; those whose domains came back stay."""
        self.leaving.update(gone)
        self.leaving.difference_update(came)
        self.read_back.difference_update(came)
        self.read_back.difference_update(gone)
        if self._identity.in_emergency_mode:
            return      # (without a master: once there is one again)
        for uuid in self.backups - self.sending:
            self.backups.discard(uuid)
            self._send(HOST, uuid, self._master, True)
        if not self.leaving:
            return
        db, here = self.metrics.db, self._identity.host_ref
        by_uuid = db.table("VM").by_uuid
        for uuid in list(self.leaving):
            if uuid in self.sending:
                continue
            ref = by_uuid.get(uuid)
            if ref is None:
                self.leaving.discard(uuid)      # destroyed: pruned
                continue
            f = db.fields("VM", ref)
            state, host = f["power_state"], f["resident_on"]
            if state in RESIDENT_STATES and host != here and \
                    db.exists("host", host) and uuid in self.read_back:
                # A copy kept here (this host was the master, or down
                # while the VM moved): the running host's RRD is newer,
                # the copy goes to the master's archive.
                self.leaving.discard(uuid)
                self.read_back.discard(uuid)
                self._send(VM, uuid, self._master, True)
            elif state in RESIDENT_STATES and host != here and \
                    db.exists("host", host):
                self.leaving.discard(uuid)
                self._send(VM, uuid, db.fields("host", host)["address"],
                           False)
            elif state in STOPPED_STATES:
                self.leaving.discard(uuid)
                self.read_back.discard(uuid)
                if self.is_slave:
                    self._send(VM, uuid, self._master, True)
            # Else still resident here (a reboot's new domain is taken
            # up by the next sample, or the database is behind): later.

    def migrated(self, uuid, address):
        """A VM moved to the host at ``address``: its RRD goes there (a
        Deferred that never fails)."""
        self.leaving.discard(uuid)
        return self._send(VM, uuid, address, False, live=True)

    def _send(self, kind, uuid, address, archive, live=False):
        """Release an RRD and send it; one that could not be sent is put
        back as it was and sent again after a later sample."""
        self.sending.add(uuid)

        @defer.inlineCallbacks
        def send():
            owner = yield self.metrics.run(self.store.release, kind, uuid,
                                           live)
            if owner is None:
                return
            try:
                body = yield self.metrics.run(storage.to_xml, owner.rrd)
                yield self._put(address, uuid, body, archive)
            except Exception as e:
                kept = yield self.metrics.run(self.store.put_back, owner)
                log.warn("metrics: the RRD of {kind} {uuid} to {address}: "
                         "{e} ({what})", kind=kind, uuid=uuid,
                         address=address, e=e,
                         what="kept here, sent again later" if kept else
                         "a newer one is here")
                if kept:
                    (self.leaving if kind == VM else self.backups).add(uuid)
        d = send()
        d.addErrback(lambda f: log.failure("metrics: handing over {uuid}",
                                           f, uuid=uuid))
        d.addBoth(lambda _: self.sending.discard(uuid))
        return d

    # --- what the others send (the handlers) ---------------------------------------

    def received(self, kind, uuid, body, archive, host_uuid):
        """On a metrics thread: a PUT /rrd body taken in; ValueError if it
        is no RRD document."""
        self.store.receive(kind, uuid, storage.from_xml(body), archive,
                           host_uuid)

    def kept(self, kind, uuid, host_uuid):
        """On a metrics thread: the document of what is kept here for
        ``uuid`` (dbsync), None without it."""
        return _xml(self.store.kept(kind, uuid, host_uuid))

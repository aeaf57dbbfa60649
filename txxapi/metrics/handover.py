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
* a slave's host RRD (and its VMs' live ones) is backed up to the master
  every BACKUP_INTERVAL and as the server stops, and fetched back from
  there when the host starts without its own (its disk lost it).

On the master a stopped VM's RRD simply stays set aside.  Failures are
logged and leave the RRD where it was: metrics never fail a VM
operation.  The store is only touched on the metrics threads.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.forwarding.hosts import RESIDENT_STATES
from txxapi.metrics import storage, transfer

log = Logger()

BACKUP_INTERVAL = 86400.0
# How long a sample waits for the master's copies (a start for the host's
# RRD), and a stop for the master to take the backup.
FETCH_TIMEOUT = STOP_TIMEOUT = 5.0
STOPPED_STATES = ("Halted", "Suspended")
# VMs whose RRDs are fetched from the master at once.
FETCHES = 4


def _encoded_pack(encoded):
    return None if encoded is None else storage.pack([encoded])


class Handover:
    def __init__(self, metrics):
        self.metrics = metrics
        self.store = metrics.store
        self.leaving = set()    # VMs whose domains went, not yet settled
        self.sending = set()
        # Set when this slave takes the failed master's place: nothing is
        # backed up to it any more (its stop would wait out a timeout).
        self.master_failed = False
        self._fetches = defer.DeferredSemaphore(FETCHES)

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
    def _fetch(self, path, uuid, timeout=FETCH_TIMEOUT):
        data = yield transfer.fetch(self.metrics.clock, self._master,
                                    self._identity.pool_secret, path, uuid,
                                    timeout)
        if data is not None:
            owners = yield self.metrics.run(storage.unpack, data)
            yield self.metrics.run(self.store.adopt, owners)

    # --- a host starting, a host backing up --------------------------------------

    @defer.inlineCallbacks
    def restore_host(self):
        """On a slave without its host RRD: the master's backup of it.
        The VMs' RRDs read back are sent on as those of domains gone
        (a VM stopped while this host was down goes to the master)."""
        if not self.is_slave:
            return
        self.leaving.update((yield self.metrics.run(
            self.store.set_aside_vms)))
        has = yield self.metrics.run(self.store.has_host)
        if has:
            return
        try:
            yield self._fetch(transfer.HOST_PATH, self._host_uuid(),
                              FETCH_TIMEOUT)
        except Exception as e:
            log.warn("metrics: the master's copy of this host's RRD: {e}",
                     e=e)

    @defer.inlineCallbacks
    def backup(self, timeout=transfer.TIMEOUT):
        """On a slave: its RRDs to the master (backup_rrds)."""
        if not self.is_slave or self.master_failed:
            return
        body = yield self.metrics.run(
            lambda: storage.pack(self.store.backup(storage.encode)))
        try:
            yield self._put(self._master, self._host_uuid(), body, True,
                            timeout)
        except transfer.TransferFailed as e:
            log.warn("metrics: backing up the RRDs to the master: {e}", e=e)

    # --- a sample's VMs ----------------------------------------------------------

    @defer.inlineCallbacks
    def arriving(self, uuids):
        """Before a sample is archived on a slave: the master's RRDs of
        the VMs whose domains are new here."""
        if not self.is_slave or not uuids or \
                self._identity.in_emergency_mode:
            return      # (without a master, the domains start afresh)
        unknown = yield self.metrics.run(self.store.unknown_vms, uuids)
        fetches = [self._fetches.run(self._fetch_vm, uuid)
                   for uuid in unknown]
        yield defer.DeferredList(fetches)

    @defer.inlineCallbacks
    def _fetch_vm(self, uuid):
        try:
            yield self._fetch(transfer.VM_PATH, uuid)
        except Exception as e:
            log.warn("metrics: the master's RRD of VM {uuid}: {e}",
                     uuid=uuid, e=e)

    def left(self, gone=(), came=()):
        """After a sample: the VMs whose domains went (and those still
        to be sent), each sent where the database says it is now once it
        says so; those whose domains came back stay."""
        self.leaving.update(gone)
        self.leaving.difference_update(came)
        if not self.leaving or self._identity.in_emergency_mode:
            return      # (without a master: once there is one again)
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
                    db.exists("host", host):
                self.leaving.discard(uuid)
                self._send(uuid, db.fields("host", host)["address"], False)
            elif state in STOPPED_STATES:
                self.leaving.discard(uuid)
                if self.is_slave:
                    self._send(uuid, self._master, True)
            # Else still resident here (a reboot's new domain is taken
            # up by the next sample, or the database is behind): later.

    def migrated(self, uuid, address):
        """A VM moved to the host at ``address``: its RRD goes there (a
        Deferred that never fails)."""
        self.leaving.discard(uuid)
        return self._send(uuid, address, False, live=True)

    def _send(self, uuid, address, archive, live=False):
        self.sending.add(uuid)
        d = self.metrics.run(lambda: _encoded_pack(
            self.store.release_vm(uuid, storage.encode, live)))

        @defer.inlineCallbacks
        def sent(body):
            if body is None:
                return
            try:
                yield self._put(address, uuid, body, archive)
            except transfer.TransferFailed as e:
                log.warn("metrics: the RRD of VM {uuid} to {address}: {e}"
                         " (kept here, sent again later)", uuid=uuid,
                         address=address, e=e)
                owners = yield self.metrics.run(storage.unpack, body)
                yield self.metrics.run(self.store.adopt, owners)
                self.leaving.add(uuid)
        d.addCallback(sent)
        d.addErrback(lambda f: log.failure("metrics: handing over {uuid}",
                                           f, uuid=uuid))
        d.addBoth(lambda _: self.sending.discard(uuid))
        return d

    # --- what the others send (the handlers) ---------------------------------------

    def received(self, body, archive, host_uuid):
        """On a metrics thread: a PUT /rrd body taken in; ValueError if it
        is no RRD document."""
        self.store.receive(storage.unpack(body), archive, host_uuid)

    def kept(self, kind, uuid, host_uuid):
        """On a metrics thread: the pack document of what is kept here
        for ``uuid`` (dbsync), None without it."""
        return _encoded_pack(self.store.kept(kind, uuid, host_uuid,
                                             storage.encode))

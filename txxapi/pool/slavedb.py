"""
A slave's database: a hot Replica of the pool's log on etcd (it reads
locally), and its own writes shipped to the master.

A slave changes records while it works (its host, the VMs it runs, its
PBDs).  Each persistent change is applied locally at once (the slave's
next read sees it) and queued; the queue goes to the master in order, one
``pool.db_write`` call at a time under a pool session (the pool secret),
where the master applies it as its own ordinary writes, on its log.  A
call on the slave that wrote answers only once the master has
acknowledged those writes, that is once a quorum holds them.  The
Replica's echo of them, as every batch it applies, is not shipped again
(Database.replicated).  Session and task records stay local, as they are not
persistent.

Operation marks (current_operations) are the master's: a slave's change
of them is shipped as what it added and removed (MARKS_FIELD), which the
master merges into its own marks, recomputing allowed_operations, so a
mark made on the master meanwhile is never overwritten.

A call ships at most SHIP_BYTES of records.  The master being away or
between states (TRANSIENT errors) only delays the queue; a write the
master refuses (any other error) is dropped from it: the records of the
refused call are found by shipping them one by one, the calls waiting for
them get the master's error, the replica is reloaded (what the master
holds replaces the refused change here), and the later writes go on.
"""

import collections

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi import operations
from txxapi.db import redolog
from txxapi.errors import XenAPIError
from txxapi.pool.client import ANSWER_TIMEOUT, PeerClient, PeerUnreachable
from txxapi.pool.dblog import Keys, PoolDatabaseUnavailable
from txxapi.pool.logwriter import DURABLE_TIMEOUT, MAX_RETRY_DELAY, \
    RETRY_DELAY
from txxapi.pool.replica import Replica

log = Logger()

WRITE_CALL = "pool.db_write"
MARKS = "current_operations"
MARKS_FIELD = "__current_operations_delta__"
SHIP_BYTES = 128 * 1024
# The master answers a write once it is durable, or fails it after its
# own DURABLE_TIMEOUT: a master silent for longer than that and an
# answer's time is not answering (the batch goes again, as after any
# lost connection).
WRITE_TIMEOUT = DURABLE_TIMEOUT + ANSWER_TIMEOUT
# The master's answers that say "not now" rather than "no".
TRANSIENT = frozenset(["SESSION_INVALID", "HOST_IS_SLAVE",
                       "HOST_STILL_BOOTING", "HA_LOST_STATEFILE"])


def encode_records(records):
    return b"\n".join(redolog.encode_payload(r) for r in records).decode()


def _first_bytes(records, limit):
    """The longest head of records whose encoding fits in limit bytes
    (one record at least)."""
    head, size = [], 0
    for record in records:
        size += len(redolog.encode_payload(record)) + 1
        if head and size > limit:
            break
        head.append(record)
    return head


def apply_shipped(db, text):
    """On the master: a slave's records as ordinary writes, in order.  A
    change to a row that is gone by now is dropped (the row's deletion
    won)."""
    for line in text.split("\n"):
        if not line:
            continue
        _gen, op, table, ref, fields = redolog.decode_payload(line.encode())
        exists = db.exists(table, ref)
        if op == "add" and not exists:
            uuid = fields.get("uuid")
            if uuid and uuid in db.table(table).by_uuid:
                raise XenAPIError("DB_UNIQUENESS_CONSTRAINT_VIOLATION",
                                  table, "uuid", uuid)
            db.create(table, fields, ref=ref)
        elif op == "add" or (op == "mod" and exists):
            delta = fields.get(MARKS_FIELD)
            changes = {k: v for k, v in fields.items()
                       if k not in ("uuid", MARKS_FIELD)}
            if delta is not None:
                marks = dict(db.fields(table, ref)[MARKS])
                for key in delta["removed"]:
                    marks.pop(key, None)
                marks.update(delta["added"])
                changes[MARKS] = marks
                changes.pop("allowed_operations", None)
            db.update(table, ref, changes)
            if delta is not None:
                operations.refresh(db, table, ref)
        elif op == "del" and exists:
            db.delete(table, ref)
        elif op == "touch" and exists:
            db.touch(table, ref)


class SlavePersistence:
    """The persistence of a slave's Database (the Persistence interface:
    open, is_durable, wait_durable, snapshot, close)."""

    def __init__(self, client, prefix, directory, identity, reactor,
                 durable_timeout=DURABLE_TIMEOUT):
        self.client = client
        self.keys = Keys(prefix)
        self.directory = directory
        self.identity = identity
        self.reactor = reactor
        self.durable_timeout = durable_timeout
        self.db = None
        self.replica = None
        self.acknowledged = 0       # last local generation the master holds
        self.shipped = 0            # records the master acknowledged
        self._queue = collections.deque()
        self._singly = 0            # records to ship one by one (a refusal)
        self._refusals = []         # (generation, XenAPIError)
        self._marks = {}            # (table, ref) -> its marks, as known
        self._waiters = []
        self._sending = False
        self._session = None
        self._peer = None
        self._running = False

    @defer.inlineCallbacks
    def open(self, db):
        """Fires once the replica holds the pool's database."""
        self.db = db
        delay = RETRY_DELAY
        # A joiner may start before the master's first snapshot is out.
        while not (yield self._has_log()):
            yield task.deferLater(self.reactor, delay, lambda: None)
            delay = min(delay * 2, MAX_RETRY_DELAY)
        self.replica = Replica(self.client, self.keys.prefix, db,
                               self.directory, on_loaded=self._known_marks)
        yield self.replica.start()
        self.acknowledged = db.generation
        self._running = True
        db.listeners.append(self._changed)
        return db.generation

    @defer.inlineCallbacks
    def _has_log(self):
        try:
            manifest = yield self.client.get(self.keys.manifest)
        except Exception as e:
            log.info("slave database: etcd not ready ({e})", e=e)
            return False
        return manifest is not None

    # -- local writes, shipped --------------------------------------------------

    def _changed(self, record, cls):
        if not (cls.persistent and self._running):
            return
        if self.db.replicated:
            self._note_marks(record)
            return
        self._queue.append(self._with_marks_delta(record))
        if len(self._queue) == 1:
            # At the end of this reactor turn: the turn's writes (a
            # migrated VM's new home and its metrics) reach the master
            # in one call, so its clients see them all at once.
            self.reactor.callLater(0, self._kick)

    # -- marks: shipped as deltas -----------------------------------------------

    def _known_marks(self):
        """After a (re)load: every object's marks, as they are now."""
        self._marks = {}
        for name, table in self.db.tables.items():
            if MARKS in table.defaults:
                for ref, row in table.rows.items():
                    if row.fields[MARKS]:
                        self._marks[(name, ref)] = row.fields[MARKS]

    def _note_marks(self, record):
        _gen, op, table, ref, fields = record
        if op == "del":
            self._marks.pop((table, ref), None)
        elif fields and MARKS in fields:
            if fields[MARKS]:
                self._marks[(table, ref)] = fields[MARKS]
            else:
                self._marks.pop((table, ref), None)

    def _with_marks_delta(self, record):
        gen, op, table, ref, fields = record
        before = self._marks.get((table, ref), {})
        self._note_marks(record)
        if op != "mod" or MARKS not in fields:
            return record
        after = fields[MARKS]
        shipped = {k: v for k, v in fields.items()
                   if k not in (MARKS, "allowed_operations")}
        shipped[MARKS_FIELD] = {
            "added": {k: v for k, v in after.items() if before.get(k) != v},
            "removed": [k for k in before if k not in after]}
        return (gen, op, table, ref, shipped)

    def _kick(self):
        if not self._sending and self._queue:
            self._sending = True
            self._send().addErrback(
                lambda f: log.failure("slave database: shipping", f))

    @defer.inlineCallbacks
    def _send(self):
        delay = RETRY_DELAY
        try:
            while self._queue and self._running:
                batch = [self._queue[0]] if self._singly else \
                    _first_bytes(self._queue, SHIP_BYTES)
                try:
                    yield self._ship(batch)
                except (PeerUnreachable, XenAPIError) as e:
                    if isinstance(e, XenAPIError) and \
                            e.code not in TRANSIENT:
                        self._refused(batch, e)
                        continue
                    log.warn("slave database: the master did not take "
                             "{n} writes ({e}); retrying", n=len(batch), e=e)
                    self._session = None
                    yield task.deferLater(self.reactor, delay, lambda: None)
                    delay = min(delay * 2, MAX_RETRY_DELAY)
                    continue
                delay = RETRY_DELAY
                self._done(batch)
                self.shipped += len(batch)
                self._wake()
        finally:
            self._sending = False

    def _done(self, batch):
        for _ in batch:
            self._queue.popleft()
        self._singly = max(0, self._singly - len(batch))
        self.acknowledged = batch[-1][0]

    def _refused(self, batch, error):
        if len(batch) > 1:
            # Which of them: one by one.
            self._singly = len(batch)
            return
        log.warn("slave database: the master refused generation {g} "
                 "({e}); dropped, and the replica reloaded", g=batch[0][0],
                 e=error)
        self._done(batch)
        self._refusals.append((batch[0][0], error))
        self._wake()
        if self.replica is not None:
            self.replica.reload()

    @defer.inlineCallbacks
    def _ship(self, batch):
        identity = self.identity
        if self._peer is None or \
                self._peer.address != identity.role.master_address:
            self._peer = PeerClient(self.reactor,
                                    identity.role.master_address)
            self._session = None
        if self._session is None:
            self._session = yield self._peer.call(
                "session.slave_login", identity.host_ref,
                identity.pool_secret)
        yield self._peer.call(WRITE_CALL, self._session,
                              encode_records(batch), timeout=WRITE_TIMEOUT)

    def _pending_through(self, generation):
        return bool(self._queue) and self._queue[0][0] <= generation

    def is_durable(self, generation):
        """Whether every local write up to generation is on the master's
        log."""
        return not self._pending_through(generation)

    def wait_durable(self, generation):
        """Fires once every local write up to generation is on the
        master's log (the master's own writes are the master's to wait
        for); HA_LOST_STATEFILE after durable_timeout."""
        if self.is_durable(generation):
            return defer.succeed(generation)
        d = defer.Deferred()
        timeout = self.reactor.callLater(
            self.durable_timeout, self._timed_out, d, generation)
        # Its writes are among those after what the master holds now.
        self._waiters.append((generation, d, timeout, self.acknowledged))
        return d

    def _timed_out(self, d, generation):
        self._waiters = [w for w in self._waiters if w[1] is not d]
        d.errback(PoolDatabaseUnavailable(
            "the master did not acknowledge generation %d in %.0f s"
            % (generation, self.durable_timeout)))

    def _wake(self):
        keep = []
        for waiter in self._waiters:
            generation, d, timeout, floor = waiter
            if self._pending_through(generation):
                keep.append(waiter)
                continue
            timeout.cancel()
            refusal = [e for g, e in self._refusals if floor < g <= generation]
            if refusal:
                d.errback(refusal[0])
            else:
                d.callback(generation)
        self._waiters = keep
        if not keep:
            del self._refusals[:]

    def caught_up(self, generation, timeout=DURABLE_TIMEOUT):
        """Fires once the replica holds the master's writes up to
        ``generation`` (a call the master forwards here reads what the
        master saw); HA_LOST_STATEFILE after ``timeout``."""
        if self.replica is None or self.replica.generation >= generation:
            return defer.succeed(generation)

        # The replica's own Deferred is left alone (it fires it later).
        d = defer.Deferred()

        def reached(result):
            if not d.called:
                timer.cancel()
                d.callback(result)
        timer = self.reactor.callLater(
            timeout, lambda: d.errback(PoolDatabaseUnavailable(
                "the replica did not reach generation %d in %.0f s"
                % (generation, timeout))))
        self.replica.wait_for(generation).addCallback(reached)
        return d

    def check_writable(self):
        pass

    def snapshot(self):
        """Nothing to keep here: the pool's log is the master's."""
        return defer.succeed(None)

    def leave(self):
        """The host is out of the pool (ejected) and restarts: the pool's
        later writes are not followed (the master forgets this host's
        records next, which its periodic jobs read until the restart)
        and its own are not shipped (its database is dropped at stop)."""
        self._running = False
        if self.replica is None:
            return defer.succeed(None)
        return self.replica.stop()

    @defer.inlineCallbacks
    def close(self):
        if self.db is not None and self._changed in self.db.listeners:
            self.db.listeners.remove(self._changed)
        self._running = False
        if self.replica is not None:
            yield self.replica.stop()

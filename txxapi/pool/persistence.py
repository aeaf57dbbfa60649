"""
PoolPersistence: the pool master's persistence.  It keeps everything the
local Persistence keeps (redo log and state.db in the data dir, so a
restart can still read its disk) and also writes every group commit to
the pool's log on etcd (logwriter.LogWriter), so a write is acknowledged
only once a quorum of etcd members holds it.

- open(db): etcd is the pool's truth.  If it holds a log, that state
  (snapshot + batches) replaces the local disk's before loading, so a
  master starting on a host whose disk is behind (it was a slave) or
  ahead (batches that never reached etcd, never acknowledged) starts from
  exactly what the pool acknowledged.  If etcd is empty, the local state
  is published as the log's first snapshot.
- wait_durable(g): the local log's wait and etcd's, both; is_durable(g)
  says whether both hold g already.
- snapshot(): the local one, then its bytes are uploaded as parts and the
  manifest put (fenced, in order with the batches) along with the deletion
  of the log keys it covers; etcd's history is then compacted to the
  revision of the previous snapshot, so a replica less than one snapshot
  behind still resumes its watch.
- close(): a last snapshot as Persistence does, then the writer stops
  (within durable_timeout when etcd has no quorum).
"""

import os

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from txxapi.db import redolog, statedb
from txxapi.db.persist import Persistence, settle_heap
from txxapi.pool import dblog
from txxapi.pool.dblog import PART_BYTES, Keys
from txxapi.pool.etcd import EtcdError, Put
from txxapi.pool.logwriter import DURABLE_TIMEOUT, LogWriter, RETRY_DELAY

__all__ = ["PoolPersistence"]

log = Logger()

# How long a closing master waits for etcd to take its last snapshot.
CLOSE_TIMEOUT = 3.0


class PoolPersistence(Persistence):
    """``client``: an EtcdClient; ``prefix``: the log's key prefix;
    ``master_key`` and ``lease_id``: the mastership this host holds (the
    key etcd.Election created under its lease) — every write is fenced on
    it.  ``lease_keeper`` (optional, a LeaseKeeper of that lease): its
    loss stops the writer at once."""

    def __init__(self, directory, reactor, client, prefix, master_key,
                 lease_id, lease_keeper=None, durable_timeout=DURABLE_TIMEOUT,
                 **options):
        Persistence.__init__(self, directory, reactor, **options)
        self.client = client
        self.keys = Keys(prefix)
        self.writer = LogWriter(client, self.keys, master_key, lease_id,
                                reactor, durable_timeout)
        self.compacted_to = 0
        self._manifest_revisions = []
        if lease_keeper is not None:
            lease_keeper.lost.addCallback(self.writer.lose_mastership)

    @defer.inlineCallbacks
    def open(self, db):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fetched = self.snapshot_path + ".etcd"
        state = yield dblog.read_state(self.client, self.keys, fetched)
        if state is not None:
            yield threads.deferToThread(_replace_local, self.directory,
                                        fetched, self.snapshot_path)
            yield _write_log(self.directory, self.reactor, state.batches)
            self.writer.prev = state.last_generation
            self._manifest_revisions.append(state.revision)
        generation = yield Persistence.open(self, db)
        if state is None:
            self.writer.prev = db.generation
        self.writer.start()
        if state is None:
            yield self.snapshot()       # the log's first snapshot
        return generation

    def attach(self, db):
        """Take over a database already loaded and served (the first join
        of a pool of one): the log starts from its state, and the first
        snapshot() publishes it."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        for _first, name in redolog.list_segments(self.directory):
            os.unlink(os.path.join(self.directory, name))
        self.log = redolog.RedoLog(self.directory, reactor=self.reactor)
        self.writer.prev = db.generation
        self.writer.start()
        self._follow(db)

    def _changed(self, record, cls):
        if cls.persistent:
            # Before the base: a snapshot it starts must follow this record.
            self.writer.append(record)
        Persistence._changed(self, record, cls)

    def is_durable(self, generation):
        return self.log.is_durable(generation) and \
            self.writer.is_durable(generation)

    def wait_durable(self, generation):
        # Only the sides not there yet are waited for.
        waits = []
        if not self.log.is_durable(generation):
            waits.append(self.log.wait_durable(generation))
        if not self.writer.is_durable(generation):
            waits.append(self.writer.wait(generation))
        if not waits:
            return defer.succeed(generation)
        if len(waits) == 1:
            return waits[0].addCallback(lambda _: generation)
        d = defer.gatherResults(waits, consumeErrors=True)
        d.addCallbacks(lambda _: generation, _first_error)
        return d

    def check_writable(self):
        self.writer.check_writable()

    def snapshot(self):
        """The local snapshot, then the same bytes published on etcd."""
        if self._snapshotting is not None:
            return self._snapshotting
        snap = statedb.capture(self.db)
        generation = snap.generation
        if self.freeze_heap:
            settle_heap()
        self.log.rotate(generation)
        self._since_snapshot = 0
        self._log_bytes = 0
        self.writer.flush_pending()

        @defer.inlineCallbacks
        def run():
            size = yield threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), statedb.write,
                snap, self.snapshot_path)
            self._snapshot_bytes = size
            yield self.log.drop_through(generation)
            yield self._publish(generation, size)

        def done(result):
            self._snapshotting = None
            return result

        def failed(f):
            log.failure("snapshot at generation {g} failed", f, g=generation)

        d = run().addBoth(done)
        d.addErrback(failed)
        self._snapshotting = d
        return d

    @defer.inlineCallbacks
    def _publish(self, generation, size):
        parts = max(1, -(-size // PART_BYTES))
        with open(self.snapshot_path, "rb") as f:   # this very file
            for index in range(parts):
                data = yield threads.deferToThread(f.read, PART_BYTES)
                yield self._fenced_put(self.keys.snap_key(generation, index),
                                       data)
        revision = yield self.writer.publish_snapshot(generation, size,
                                                      parts)
        log.info("pool log: snapshot at generation {g} published "
                 "({mb:.1f} MB, revision {rev})", g=generation,
                 mb=size / 1e6, rev=revision)
        self._manifest_revisions.append(revision)
        if len(self._manifest_revisions) > 1:
            yield self._compact(self._manifest_revisions[-2])
        del self._manifest_revisions[:-1]

    @defer.inlineCallbacks
    def _fenced_put(self, key, value):
        """A snapshot part: fenced, retried while etcd is unavailable."""
        delay = RETRY_DELAY
        while True:
            if self.writer.failure is not None:
                raise self.writer.failure
            try:
                result = yield self.client.txn(
                    self.writer.fenced().then(Put(key, value)))
            except EtcdError as e:
                log.debug("pool log: snapshot part: {e}", e=e)
                yield task.deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, 2.0)
                continue
            if not result.succeeded:
                raise dblog.MastershipLost("", "snapshot part refused: "
                                           "mastership lost")
            return result

    @defer.inlineCallbacks
    def _compact(self, revision):
        if revision <= self.compacted_to:
            return
        try:
            yield self.client.compact(revision)
            self.compacted_to = revision
        except EtcdError as e:
            # Already compacted further (by another host): fine.
            log.info("pool log: compaction to {rev}: {e}", rev=revision, e=e)

    @defer.inlineCallbacks
    def close(self):
        """The local close (a last snapshot, the redo log closed) with the
        etcd side given CLOSE_TIMEOUT: without quorum (a whole pool
        stopping) the writer is stopped then, so a stop never hangs on
        etcd.  Every acknowledged write is already in etcd's batches; the
        last snapshot only shortens the next load."""
        give_up = self.reactor.callLater(
            min(CLOSE_TIMEOUT, self.writer.durable_timeout), self.writer.stop)
        try:
            yield Persistence.close(self)
        finally:
            if give_up.active():
                give_up.cancel()
            self.writer.stop()


def _first_error(failure):
    failure.trap(defer.FirstError)
    return failure.value.subFailure


def _replace_local(directory, fetched, snapshot_path):
    """The local disk becomes etcd's state: its snapshot, no redo log."""
    for _first, name in redolog.list_segments(directory):
        os.unlink(os.path.join(directory, name))
    os.replace(fetched, snapshot_path)


@defer.inlineCallbacks
def _write_log(directory, reactor, batches):
    """The batches after etcd's snapshot, as the local redo log."""
    if not batches:
        return
    local = redolog.RedoLog(directory, reactor=reactor)
    try:
        for batch in batches:
            for record in batch.records:
                local.append(record)
    finally:
        yield local.close()

"""
Persistence: keeps the in-memory database on disk.

Every change to a persistent table goes to the redo log, group-committed,
and a call that wrote waits for the log before it answers, so an
acknowledged write survives kill -9.  A snapshot in XAPI's state.db layout
is written now and then (and at a clean stop) so that a restart replays
only the log written since; after a snapshot at generation G the log
segments it covers are dropped.

On disk, in <data dir>/db:  state.db and redo-<generation>.log segments.
Startup: load state.db (generation G), replay the log after G, then open
the log for appending.

When to snapshot: whichever comes first of SNAPSHOT_EVERY_RECORDS records,
a log as large as the snapshot (at least SNAPSHOT_LOG_BYTES), or
SNAPSHOT_EVERY_SECONDS with anything logged.  The size bound keeps a
restart's replay no longer than its load of state.db (a log of large
records reaches 100,000 records only after gigabytes), while a snapshot
costs disk time in proportion to the log it retires.  What a start
replays counts too, and a start that finds the log past a bound
snapshots at once: a process killed again and again before its first
snapshot cannot grow the log without end.
"""

import gc
import os

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from txxapi.db import redolog, statedb

log = Logger()

SNAPSHOT_EVERY_RECORDS = 100000
SNAPSHOT_EVERY_SECONDS = 600
# Replay reads 45-100 MB/s: 32 MiB of log is under a second.
SNAPSHOT_LOG_BYTES = 32 << 20


class NoPersistence:
    """Keeps nothing: for unit tests of the layers above."""

    def open(self, db):
        return defer.succeed(None)

    def is_durable(self, generation):
        return True

    def wait_durable(self, generation):
        return defer.succeed(None)

    def snapshot(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)


# Cyclic collector thresholds for a server process: the first generation
# is collected every GC_YOUNG allocations rather than every 700.
GC_YOUNG = 50000


def settle_heap():
    """Tune the cyclic collector for a large, acyclic database.

    The database is millions of long-lived containers without cycles.
    Left in the collector's generations, every full collection walks all
    of them again, and a call that builds many records (event.from or
    VM.get_all_records on a large pool) sets off collection after
    collection, each also walking all it built so far: on 50,000 VMs that
    was most of the cost of building the answer.  So: collect (garbage
    cycles must not be frozen), put every object alive now out of the
    collector's reach (gc.freeze; frozen objects are still freed by
    reference counting), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


class Persistence:
    def __init__(self, directory, reactor,
                 snapshot_every_records=SNAPSHOT_EVERY_RECORDS,
                 snapshot_every_seconds=SNAPSHOT_EVERY_SECONDS,
                 snapshot_log_bytes=SNAPSHOT_LOG_BYTES,
                 freeze_heap=False):
        self.directory = directory
        self.reactor = reactor
        # Whether to settle_heap() after loading and at each snapshot: for
        # the one database of a server process, not for tests that open
        # many.
        self.freeze_heap = freeze_heap
        self.snapshot_path = os.path.join(directory, "state.db")
        self.snapshot_every_records = snapshot_every_records
        self.snapshot_every_seconds = snapshot_every_seconds
        self.snapshot_log_bytes = snapshot_log_bytes
        self.db = None
        self.log = None
        self._since_snapshot = 0
        self._log_bytes = 0         # log written since the last snapshot
        self._snapshot_bytes = 0    # size of the last state.db
        self._snapshotting = None
        self._timer = None

    def open(self, db):
        """Load what is on disk into ``db`` and start logging its changes.
        Blocking file reads at startup, before any listener exists."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.db = db
        generation = 0
        if os.path.exists(self.snapshot_path):
            generation = statedb.load(self.snapshot_path, db)
            self._snapshot_bytes = os.path.getsize(self.snapshot_path)
        replayed = 0
        for record in redolog.replay(self.directory, generation):
            cls = db.model.classes.get(record[2])
            if cls is not None and cls.persistent:
                db.apply_change(record)
            db.generation = max(db.generation, record[0])
            replayed += 1
        # Operations in flight when the last process stopped are gone.
        db.reset_runtime(statedb.RESET_ON_LOAD)
        db.persistent_generation = db.generation
        # The change log of this process starts here; event.from answers
        # older tokens from row generations.
        db.log_start = db.generation
        log.info("database loaded: snapshot generation {g}, {n} log records "
                 "replayed, generation now {now}", g=generation, n=replayed,
                 now=db.generation)
        self.log = redolog.RedoLog(self.directory, reactor=self.reactor)
        self._since_snapshot = replayed
        self._log_bytes = redolog.log_bytes(self.directory)
        if self.freeze_heap:
            settle_heap()
        self._follow(db)
        if self._snapshot_due():
            log.info("replayed {mb:.1f} MB of redo log: snapshotting now",
                     mb=self._log_bytes / 1e6)
            self.snapshot()
        return defer.succeed(generation)

    def _follow(self, db):
        """Log db's changes from now on, with the periodic snapshots."""
        self.db = db
        db.listeners.append(self._changed)
        self._timer = task.LoopingCall(self._periodic)
        self._timer.clock = self.reactor
        self._timer.start(self.snapshot_every_seconds, now=False)

    def detach(self):
        """Stop logging the database's changes (another persistence takes
        them over in the same reactor step); close() still finishes what
        this one holds."""
        if self.db is not None and self._changed in self.db.listeners:
            self.db.listeners.remove(self._changed)

    def _snapshot_due(self):
        return (self._since_snapshot >= self.snapshot_every_records
                or self._log_bytes >= max(self.snapshot_log_bytes,
                                          self._snapshot_bytes))

    def _changed(self, record, cls):
        if not cls.persistent:
            return
        self._log_bytes += self.log.append(record)
        self._since_snapshot += 1
        if self._snapshot_due():
            self.snapshot()

    def is_durable(self, generation):
        return self.log.is_durable(generation)

    def wait_durable(self, generation):
        return self.log.wait_durable(generation)

    def _periodic(self):
        if self._since_snapshot:
            self.snapshot()

    def snapshot(self):
        """Write a snapshot of the current state; the log it covers is
        dropped once the snapshot is safely on disk.  Returns a Deferred."""
        if self._snapshotting is not None:
            return self._snapshotting
        snap = statedb.capture(self.db)
        generation = snap.generation
        if self.freeze_heap:
            settle_heap()  # what was written since the last one
        self.log.rotate(generation)
        self._since_snapshot = 0
        self._log_bytes = 0

        def written(size):
            self._snapshot_bytes = size
            return self.log.drop_through(generation)

        d = threads.deferToThreadPool(self.reactor,
                                      self.reactor.getThreadPool(),
                                      statedb.write, snap, self.snapshot_path)
        d.addCallback(written)

        def done(result):
            self._snapshotting = None
            return result

        def failed(f):
            log.failure("snapshot at generation {g} failed", f, g=generation)

        d.addBoth(done).addErrback(failed)
        self._snapshotting = d
        return d

    @defer.inlineCallbacks
    def close(self):
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self.log is None:
            return
        if self.db is not None and self._changed in self.db.listeners:
            self.db.listeners.remove(self._changed)
        if self._snapshotting is not None:
            yield self._snapshotting
        if self._since_snapshot:
            yield self.snapshot()
        yield self.log.close()
        self.log = None


def open_persistence(data_dir, reactor):
    return Persistence(os.path.join(data_dir, "db"), reactor,
                       freeze_heap=True)

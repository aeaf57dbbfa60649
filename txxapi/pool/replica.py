"""
Replica: a slave's hot copy of the pool database, kept from the log on
etcd (dblog.py).  It loads the latest snapshot and the batches after it,
all read at one revision, then watches the log from the next revision and
applies each batch, in generation order, to its in-memory Database as
that database's own writes (apply_announced: under local generations,
seen by event.from on this host, never shipped back).  So the slave reads locally and, once
promoted, already holds every write the master had acknowledged.

- A batch whose ``prev`` is past the applied generation means a batch was
  missed: the replica reloads.  A batch at or below it (seen twice across
  a reload) is skipped.  A reload while serving applies what differs as
  writes of the database's own, so event.from tokens keep working.
- A dropped watch resumes by itself (etcd.Watcher) from the revision
  after the last batch applied.
- A compaction past that revision (the replica was stopped, or fell more
  than a snapshot behind): the snapshot is loaded again.

Loading parses the snapshot into a fresh Database in a worker thread, then
adopts its tables in one reactor step: readers never see half a database.
"""

import collections
import os

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from txxapi.db import statedb
from txxapi.db.memory import Database
from txxapi.pool import dblog
from txxapi.pool.dblog import Keys
from txxapi.pool.etcd import EtcdError, Watcher
from txxapi.pool.logwriter import MAX_RETRY_DELAY, RETRY_DELAY

__all__ = ["Replica"]

log = Logger()


class Replica:
    def __init__(self, client, prefix, db, directory, on_loaded=None):
        self.client = client
        self.on_loaded = on_loaded or (lambda: None)
        self.keys = Keys(prefix)
        self.db = db
        self.directory = directory
        self.generation = 0     # the last generation applied
        self.revision = 0       # etcd revision it is up to date with
        self.loads = 0          # snapshot loads (1 + reloads)
        self.batches = 0
        self._watcher = None
        self._events = collections.deque()
        self._applying = False
        self._running = False
        self._waiters = []

    @defer.inlineCallbacks
    def start(self):
        """Load and start following; fires once loaded (False: no log)."""
        self._running = True
        loaded = yield self._load()
        self._watch()
        return loaded

    def stop(self):
        self._running = False
        watcher, self._watcher = self._watcher, None
        return watcher.stop() if watcher is not None else defer.succeed(None)

    def resume(self):
        """Start following again from where it stopped."""
        self._running = True
        self._watch()

    def reload(self):
        """Load the log afresh (in order with the batches being applied):
        what the master holds replaces any local change."""
        self._events.append(None)
        self._drain()

    def wait_for(self, generation):
        """Fires once generation is applied."""
        if self.generation >= generation:
            return defer.succeed(self.generation)
        d = defer.Deferred()
        self._waiters.append((generation, d))
        return d

    # -- loading ------------------------------------------------------------------

    @defer.inlineCallbacks
    def _load(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, "state.db")
        delay = RETRY_DELAY
        while True:
            try:
                state = yield dblog.read_state(self.client, self.keys, path)
            except EtcdError as e:
                # No quorum, say: keep the copy held and try again.
                log.info("replica: cannot read the log ({e}); retrying", e=e)
                yield task.deferLater(self.client.reactor, delay,
                                      lambda: None)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            if state is None:
                self.revision = (yield self.client.range(
                    self.keys.manifest)).revision
                return False
            fresh = Database(self.db.model)
            yield threads.deferToThread(statedb.load, path, fresh)
            for batch in state.batches:
                for record in batch.records:
                    if record[0] > fresh.generation:
                        fresh.apply_change(record)
            if self.loads:
                _announce_difference(self.db, fresh)
            else:
                _adopt(self.db, fresh)
            self.on_loaded()
            self.generation = state.last_generation
            self.revision = state.revision
            self.loads += 1
            log.info("replica: loaded snapshot {g}, {n} batches, generation "
                     "{now} (revision {rev})", g=state.generation,
                     n=len(state.batches), now=self.generation,
                     rev=state.revision)
            self._wake()
            return True

    def _watch(self):
        if self._watcher is not None or not self._running:
            return
        self._watcher = Watcher(self.client, self.keys.log, self._on_events,
                                prefix=True, start_revision=self.revision + 1,
                                on_compacted=self._on_compacted)
        self._watcher.start().addErrback(lambda f: None)

    def _on_compacted(self, revision):
        log.info("replica: revision {rev} compacted away; reloading",
                 rev=self.revision + 1)
        self._watcher = None
        self._events.append(None)       # a reload, in order with batches
        self._drain()

    # -- applying -------------------------------------------------------------------

    def _on_events(self, events):
        self._events.extend(e for e in events if e.type == "put")
        self._drain()

    def _drain(self):
        self._drain_events().addErrback(
            lambda f: log.failure("replica: stopped following the log", f))

    @defer.inlineCallbacks
    def _drain_events(self):
        if self._applying:
            return
        self._applying = True
        try:
            while self._events and self._running:
                event = self._events.popleft()
                if event is None or not (yield self._apply(event)):
                    yield self._reload()
        except Exception:
            log.failure("replica: applying the log failed; reloading")
            yield self._reload()
        finally:
            self._applying = False

    @defer.inlineCallbacks
    def _apply(self, event):
        """Apply one log put; False when a batch was missed."""
        kv = event.kv
        value = yield dblog.read_value(self.client, self.keys, kv,
                                       kv.mod_revision)
        batch = dblog.decode_batch(value)
        if batch.last <= self.generation:
            self.revision = max(self.revision, kv.mod_revision)
            return True
        if batch.prev > self.generation:
            log.warn("replica: batch {first} follows generation {prev}, "
                     "applied only {g}: reloading", first=batch.first,
                     prev=batch.prev, g=self.generation)
            return False
        # As writes of this host's database (event.from here sees them),
        # which are not this host's to ship (Database.replicated).
        for record in batch.records:
            if record[0] > self.generation:
                self.db.apply_announced(record)
        self.db.persistent_generation = self.db.generation
        self.generation = batch.last
        self.revision = max(self.revision, kv.mod_revision)
        self.batches += 1
        self._wake()
        return True

    @defer.inlineCallbacks
    def _reload(self):
        self._events.clear()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            yield watcher.stop()
        yield self._load()
        self._watch()

    def _wake(self):
        ready = [w for w in self._waiters if w[0] <= self.generation]
        self._waiters = [w for w in self._waiters if w[0] > self.generation]
        for _g, d in ready:
            d.callback(self.generation)


def _announce_difference(db, fresh):
    """A reload while serving: db brought to fresh's content by what
    differs, each difference a write of db's own (apply_announced), so
    the change log goes on and an event.from token from before the
    reload still gets exactly what changed, not a scan.  Linear in rows,
    as the load itself is."""
    for name, table in fresh.tables.items():
        if not db.model.cls(name).persistent:
            continue
        old, new = db.tables[name].rows, table.rows
        for ref in [r for r in old if r not in new]:
            db.apply_announced((0, "del", name, ref, None))
        for ref, row in new.items():
            was = old.get(ref)
            if was is None:
                db.apply_announced((0, "add", name, ref, dict(row.fields)))
            elif was.fields != row.fields:
                db.apply_announced((0, "mod", name, ref, {
                    k: v for k, v in row.fields.items()
                    if was.fields.get(k) != v}))
    db.generation = max(db.generation, fresh.generation)
    db.persistent_generation = db.generation


def _adopt(db, fresh):
    """db takes fresh's content: tables (with their indexes), generation.
    The change log restarts there (event.from falls back to a scan).
    What is this host's own (sessions, tasks: not in the log) stays."""
    for name, table in db.tables.items():
        if not db.model.cls(name).persistent:
            fresh.tables[name] = table
    db.tables = fresh.tables
    # Never backwards: this host's generations run past the master's.
    db.generation = max(db.generation, fresh.generation)
    db.persistent_generation = db.generation
    db.log_gens, db.log_items = [], []
    db.log_start = db.generation
    db.tombstones = {}

"""
LogWriter: the master's side of the database log on etcd (keys and values
in dblog.py).  The master is the one writer, and every etcd write it makes
is fenced: a transaction whose first compare is that the mastership key is
still held under this host's lease.  A deposed master's writes fail in
etcd itself; they never land.

Group commit: records queue up as the database announces them; one
transaction is in flight at a time and, when it returns, everything that
queued meanwhile goes out as the next one (cut at BATCH_BYTES).  So the
batch grows with the load, as the local redo log's grows with the disk's
latency, and batches land in generation order.

When etcd fails:
- no quorum, unreachable, no answer in time: the batch is retried, in
  order, with a growing delay, until etcd takes it; the log resumes by
  itself when quorum returns.  A waiter whose generation is not
  acknowledged within ``durable_timeout`` fails with
  PoolDatabaseUnavailable, but the write stays queued: it is in memory
  and in the local log, so it must land too, or memory, disk and the pool
  would disagree.  A retry after an outcome-unknown failure finds its key
  already written with its own value and counts it as landed.
- the fence fails (mastership lost) or etcd refuses the request outright:
  the writer stops for good.  Every waiter, and every later write, fails
  with MastershipLost (or PoolDatabaseUnavailable); nothing more is sent.
"""

import collections
import heapq
import json

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.db import redolog
from txxapi.pool import dblog
from txxapi.pool.dblog import (
    BATCH_BYTES, PART_BYTES, DeleteRange, MastershipLost,
    PoolDatabaseUnavailable)
from txxapi.pool.etcd import (
    Compare, EtcdError, EtcdRequestError, Put, Range, Txn)
from txxapi.pool.etcd.types import prefix_end

__all__ = ["LogWriter", "DURABLE_TIMEOUT"]

log = Logger()

DURABLE_TIMEOUT = 10.0
RETRY_DELAY, MAX_RETRY_DELAY = 0.1, 2.0


class _Job:
    """Transactions to run in order; ``generation`` is acknowledged once
    the last one succeeds (None: a job that acknowledges nothing)."""

    def __init__(self, txns, generation, own_key=None, own_value=None,
                 awaited=False):
        self.txns = txns
        self.generation = generation
        # The key the last transaction creates, and its value: a retry
        # that finds them there knows the first attempt landed.
        self.own_key, self.own_value = own_key, own_value
        # Batches are awaited through wait(); a snapshot's job by itself.
        self.done = defer.Deferred() if awaited else None


class LogWriter:
    def __init__(self, client, keys, master_key, lease_id, reactor=None,
                 durable_timeout=DURABLE_TIMEOUT):
        self.client = client
        self.keys = keys
        self.master_key = master_key
        self.lease_id = lease_id
        self.reactor = reactor or client.reactor
        self.durable_timeout = durable_timeout
        self.prev = 0               # last generation handed to etcd
        self.queued = 0             # last generation queued
        self.acknowledged = 0       # last generation etcd acknowledged
        self.failure = None         # set once the writer stopped for good
        self.last_error = None      # the last transient failure, if any
        self.stats = {"txns": 0, "batches": 0, "records": 0, "retries": 0}
        self._pending = []
        self._jobs = collections.deque()
        self._waiters = []
        self._seq = 0
        self._running = False
        self._sending = False
        self._kick_call = None

    # -- feeding --------------------------------------------------------------

    def append(self, record):
        """Queue one change record (reactor thread, generation order)."""
        # Counted even once stopped: it is one etcd never acknowledges.
        self.queued = record[0]
        if self.failure is not None:
            return
        self._pending.append(record)
        self._kick()

    def flush_pending(self):
        """Turn the records queued so far into batch jobs now (before a job
        that must follow them)."""
        records, self._pending = self._pending, []
        if not records:
            return
        group, size = [], 0
        for record in records:
            payload = redolog.encode_payload(record)
            if group and size + len(payload) + 1 > BATCH_BYTES:
                self._jobs.append(self._batch_job(group))
                group, size = [], 0
            group.append((record, payload))
            size += len(payload) + 1
        self._jobs.append(self._batch_job(group))

    def _batch_job(self, group):
        records = [r for r, _ in group]
        value = dblog.encode_batch(self.prev, records, [p for _, p in group])
        first, last = records[0][0], records[-1][0]
        self.prev = last
        self.stats["batches"] += 1
        self.stats["records"] += len(records)
        key = self.keys.log_key(first)
        txns = []
        if len(value) > PART_BYTES:
            parts = dblog.split_parts(value)
            txns = [self.fenced().then(Put(self.keys.part_key(first, i), p))
                    for i, p in enumerate(parts)]
            value = dblog.parts_value(len(b"".join(parts)), len(parts))
        txns.append(self.fenced().when(Compare.create_revision(key) == 0)
                    .then(Put(key, value))
                    .otherwise(Range(self.master_key), Range(key)))
        return _Job(txns, last, key, value)

    def publish_snapshot(self, generation, size, parts):
        """Queue the manifest of a snapshot whose parts are already in etcd,
        with the deletion of everything it covers; fires with the revision
        of that transaction."""
        self.flush_pending()
        k = self.keys
        manifest = json.dumps({"generation": generation, "size": size,
                               "parts": parts}).encode()
        txn = self.fenced().then(
            Put(k.manifest, manifest),
            DeleteRange(k.log, k.log_key(generation + 1)),
            DeleteRange(k.part, k.part + b"%020d" % (generation + 1)),
            DeleteRange(k.snap, k.snap + b"%020d" % generation),
            DeleteRange(k.snap + b"%020d/%06d" % (generation, parts),
                        prefix_end(k.snap + b"%020d/" % generation)),
        ).otherwise(Range(self.master_key))
        job = _Job([txn], None, awaited=True)
        self._jobs.append(job)
        self._kick()
        return job.done

    def fenced(self):
        """A Txn that runs only while this host holds the mastership."""
        return Txn().when(Compare.lease(self.master_key) == self.lease_id)

    # -- waiting ----------------------------------------------------------------

    def is_durable(self, generation):
        """Whether etcd holds every queued record up to generation: what
        wait() answers at once (what etcd acknowledged stays so after the
        writer stopped)."""
        return min(generation, self.queued) <= self.acknowledged

    def wait(self, generation):
        """Fires once etcd holds every queued record up to generation."""
        if self.is_durable(generation):
            return defer.succeed(generation)
        if self.failure is not None:
            return defer.fail(self.failure)
        target = min(generation, self.queued)
        d = defer.Deferred()
        self._seq += 1
        timer = self.reactor.callLater(self.durable_timeout, self._timed_out,
                                       d, generation)
        heapq.heappush(self._waiters, (target, self._seq, d, timer))
        return d

    def _timed_out(self, d, generation):
        if not d.called:
            reason = "etcd has not acknowledged generation %d in %.0f s" \
                % (generation, self.durable_timeout)
            if self.last_error is not None:
                reason += " (%s)" % (self.last_error,)
            d.errback(PoolDatabaseUnavailable(reason))

    def _acknowledge(self, generation):
        self.acknowledged = max(self.acknowledged, generation)
        while self._waiters and self._waiters[0][0] <= self.acknowledged:
            _target, _seq, d, timer = heapq.heappop(self._waiters)
            if timer.active():
                timer.cancel()
            if not d.called:
                d.callback(generation)

    def check_writable(self):
        """Raise what a write would fail with now (for a caller that
        prefers refusing a write to failing its wait)."""
        if self.failure is not None:
            raise self.failure
        if self.last_error is not None:
            raise PoolDatabaseUnavailable(str(self.last_error))

    # -- sending ------------------------------------------------------------------

    def start(self):
        self._running = True
        self._kick()

    def stop(self, failure=None):
        """Stop sending; waiting writes and queued jobs fail with failure
        (PoolDatabaseUnavailable by default)."""
        self._running = False
        self._fail(failure or PoolDatabaseUnavailable("pool log closed"))

    def _fail(self, failure):
        if self.failure is None:
            self.failure = failure
        self._pending = []
        waiters, self._waiters = self._waiters, []
        for _target, _seq, d, timer in waiters:
            if timer.active():
                timer.cancel()
            if not d.called:
                d.errback(self.failure)
        jobs, self._jobs = self._jobs, collections.deque()
        for job in jobs:
            if job.done is not None and not job.done.called:
                job.done.errback(self.failure)

    def _kick(self):
        if self._running and not self._sending and self._kick_call is None:
            # Everything that becomes ready in this reactor turn goes in
            # the same batch.
            self._kick_call = self.reactor.callLater(0, self._send)

    @defer.inlineCallbacks
    def _send(self):
        self._kick_call = None
        if self._sending:
            return
        self._sending = True
        try:
            while self._running and self.failure is None:
                if not self._jobs:
                    self.flush_pending()
                if not self._jobs:
                    break
                job = self._jobs[0]
                revision = yield self._run_job(job)
                if self.failure is not None:
                    break
                self._jobs.popleft()
                if job.generation is not None:
                    self._acknowledge(job.generation)
                if job.done is not None:
                    job.done.callback(revision)
        except Exception:
            log.failure("pool log writer crashed")
            self._fail(PoolDatabaseUnavailable("pool log writer crashed"))
        finally:
            self._sending = False

    @defer.inlineCallbacks
    def _run_job(self, job):
        delay = RETRY_DELAY
        while job.txns:
            try:
                result = yield self.client.txn(job.txns[0])
            except EtcdRequestError as e:
                self._stop_for_good(PoolDatabaseUnavailable(
                    "etcd refused the pool log's write: %s" % e))
                return None
            except EtcdError as e:
                if not self._running:
                    return None
                if self.last_error is None:
                    log.warn("pool log: etcd write failed ({error}); "
                             "retrying until it answers", error=e)
                self.last_error = e
                self.stats["retries"] += 1
                yield task.deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            self.stats["txns"] += 1
            if not result.succeeded and not self._landed(job, result):
                self._stop_for_good(self._fenced(result))
                return None
            if self.last_error is not None:
                log.info("pool log: etcd writes resumed")
                self.last_error = None
            job.txns.pop(0)
            delay = RETRY_DELAY
        return result.revision

    def _landed(self, job, result):
        """A failed compare because an earlier attempt of this very write
        (outcome unknown then) did land."""
        if job.own_key is None or len(job.txns) != 1:
            return False
        kvs = result.responses[-1].kvs
        return bool(kvs) and kvs[0].value == job.own_value and \
            self._holds(result)

    def _holds(self, result):
        kvs = result.responses[0].kvs
        return bool(kvs) and kvs[0].lease == self.lease_id

    def _fenced(self, result):
        kvs = result.responses[0].kvs
        holder = kvs[0].value.decode("utf-8", "replace") if kvs else ""
        if self._holds(result):
            return MastershipLost("", "generation %d already written by "
                                  "another master" % self.queued)
        return MastershipLost(holder, "mastership key %r is no longer held "
                              "under lease %x" % (self.master_key,
                                                  self.lease_id))

    def _stop_for_good(self, failure):
        log.error("pool log: {failure}; this host accepts no more writes",
                  failure=failure)
        self._running = False
        self._fail(failure)

    def lose_mastership(self, reason):
        """The mastership lease is gone (LeaseKeeper.on_lost)."""
        self._stop_for_good(MastershipLost("", reason))

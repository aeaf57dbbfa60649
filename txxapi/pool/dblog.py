"""
The pool database's log on etcd: its keys, how batches and snapshots are
encoded in them, the errors a writer reports, and reading the whole state
back (what a replica, or a master starting up, loads).

Keys, under a prefix P (bytes; generations are zero-padded to 20 digits
so that key order is generation order):

- ``P/log/<first generation>``: one group commit of the master, a batch
  of change records.  Value ``B`` + a JSON header line
  ``{"first", "last", "prev", "n"}`` + the records, each in the redo log's
  payload encoding (redolog.encode_payload: JSON, never a raw newline),
  one per line.  ``prev`` is the last generation the master logged
  before this batch, so a reader can tell a gap (a batch it never saw)
  from the gaps of non-logged generations.  A batch larger than
  PART_BYTES is stored as ``P`` + ``{"parts": n, "size": bytes}`` with
  its bytes split over ``P/part/<first generation>/<i>``.
- ``P/snapshot``: the manifest of the latest snapshot,
  ``{"generation", "size", "parts"}``; its bytes (a state.db document)
  are split over ``P/snap/<generation>/<i>``, PART_BYTES each (etcd
  refuses a request over 1.5 MiB by default).

Every non-empty log has a snapshot: the first master publishes one before
any batch, and each later snapshot's manifest is written in the same
transaction that deletes the log keys and parts it covers.
"""

import json
import os

from twisted.internet import defer, threads

from txxapi.db import redolog
from txxapi.errors import XenAPIError
from txxapi.pool.etcd import EtcdCompacted, Range
from txxapi.pool.etcd.types import RangeResult, key_range, prefix_end

__all__ = [
    "Keys", "Batch", "encode_batch", "decode_batch", "split_parts",
    "PoolDatabaseError", "PoolDatabaseUnavailable", "MastershipLost",
    "read_state", "KeyRange", "DeleteRange",
]

PART_BYTES = 1 << 20
# A batch is cut before it would pass this size, so one transaction stays
# well under etcd's request limit even with its keys and compares.
BATCH_BYTES = 1 << 20
RANGE_PAGE = 256


def _gen(generation):
    return b"%020d" % generation


class Keys:
    """The key names of one pool database log under ``prefix``."""

    def __init__(self, prefix):
        prefix = prefix.encode() if isinstance(prefix, str) else prefix
        self.prefix = prefix.rstrip(b"/")
        self.log = self.prefix + b"/log/"
        self.part = self.prefix + b"/part/"
        self.snap = self.prefix + b"/snap/"
        self.manifest = self.prefix + b"/snapshot"

    def log_key(self, generation):
        return self.log + _gen(generation)

    def part_key(self, generation, index):
        return self.part + _gen(generation) + b"/%06d" % index

    def snap_key(self, generation, index):
        return self.snap + _gen(generation) + b"/%06d" % index

    @staticmethod
    def generation_of(log_key):
        return int(log_key.rsplit(b"/", 1)[1])


# -- values -------------------------------------------------------------------

class Batch:
    """One group commit: records (generation order) between prev and last."""

    __slots__ = ("first", "last", "prev", "records")

    def __init__(self, first, last, prev, records):
        self.first, self.last, self.prev = first, last, prev
        self.records = records


def encode_batch(prev, records, payloads):
    header = {"first": records[0][0], "last": records[-1][0], "prev": prev,
              "n": len(records)}
    return b"B" + json.dumps(header).encode() + b"\n" + b"\n".join(payloads)


def decode_batch(value):
    if value[:1] != b"B":
        raise ValueError("not a batch value: %r" % value[:16])
    head, _, body = value[1:].partition(b"\n")
    header = json.loads(head)
    records = [redolog.decode_payload(line) for line in body.split(b"\n")] \
        if header["n"] else []
    if len(records) != header["n"]:
        raise ValueError("batch %d: %d records, header says %d"
                         % (header["first"], len(records), header["n"]))
    return Batch(header["first"], header["last"], header["prev"], records)


def parts_value(size, count):
    return b"P" + json.dumps({"parts": count, "size": size}).encode()


def split_parts(data, size=PART_BYTES):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


# -- errors -------------------------------------------------------------------

class PoolDatabaseError(XenAPIError):
    """A write the pool's log could not make durable.  A XenAPIError, so a
    dispatcher that lets it through answers the client with it."""


class PoolDatabaseUnavailable(PoolDatabaseError):
    """etcd has no quorum, cannot be reached or did not acknowledge in
    time.  Answered as HA_LOST_STATEFILE: in XAPI the HA statefile is the
    shared store that proves a host is still in the pool's quorum, and
    losing it is exactly "this server cannot reach the pool's quorum
    state"; none of XAPI's database errors (DB_UNIQUENESS_..., the redo
    log's CANNOT_ENABLE_REDO_LOG) describes an unreachable store.  The
    write is not lost: it stays queued and lands, in order, once quorum
    returns; what the client learns is that it was not acknowledged."""

    def __init__(self, reason):
        PoolDatabaseError.__init__(self, "HA_LOST_STATEFILE")
        self.reason = reason

    def __str__(self):
        return "HA_LOST_STATEFILE (%s)" % self.reason


class MastershipLost(PoolDatabaseError):
    """This host no longer holds the mastership key: its writes are
    fenced off and will never land.  Answered as HOST_IS_SLAVE with the
    new holder's address (the SDK, XO and Ansible reconnect to it), or as
    HA_LOST_STATEFILE when nobody holds the key yet."""

    def __init__(self, holder, reason):
        if holder:
            PoolDatabaseError.__init__(self, "HOST_IS_SLAVE", holder)
        else:
            PoolDatabaseError.__init__(self, "HA_LOST_STATEFILE")
        self.holder = holder
        self.reason = reason

    def __str__(self):
        return "%s (%s)" % (" ".join(self.description), self.reason)


# -- range requests with an explicit end (etcd's [key, range_end)) -----------

class KeyRange(Range):
    """Range over [key, end)."""

    def __init__(self, key, end, **options):
        Range.__init__(self, key, **options)
        object.__setattr__(self, "end", end)

    def body(self):
        body = Range.body(self)
        body.update(key_range(self.key, range_end=self.end))
        return body


class DeleteRange:
    """Delete every key in [key, end)."""
    KIND = "request_delete_range"

    def __init__(self, key, end):
        self.key, self.end = key, end

    def body(self):
        return key_range(self.key, range_end=self.end)

    def txn_op(self):
        return {self.KIND: self.body()}


def range_between(client, key, end, **options):
    request = KeyRange(key, end, **options)
    d = client.transport.call("/kv/range", request.body(), idempotent=True)
    return d.addCallback(RangeResult.parse)


@defer.inlineCallbacks
def scan(client, key, end, revision):
    """Every KeyValue in [key, end) at revision, page by page."""
    found = []
    while True:
        result = yield range_between(client, key, end, revision=revision,
                                     limit=RANGE_PAGE)
        found.extend(result.kvs)
        if not result.more or not result.kvs:
            return found
        key = result.kvs[-1].key + b"\0"


# -- reading the state back -----------------------------------------------------

class State:
    """The log as read at ``revision``: the snapshot's generation (its
    state.db was written to the path given) and the batches after it."""

    def __init__(self, revision, generation, batches):
        self.revision = revision
        self.generation = generation
        self.batches = batches

    @property
    def last_generation(self):
        return self.batches[-1].last if self.batches else self.generation


@defer.inlineCallbacks
def read_value(client, keys, kv, revision):
    """The batch bytes of a log KeyValue (joining its parts if split)."""
    value = kv.value
    if value[:1] != b"P":
        return value
    meta = json.loads(value[1:])
    first = Keys.generation_of(kv.key)
    parts = yield scan(client, keys.part_key(first, 0),
                       prefix_end(keys.part + _gen(first) + b"/"), revision)
    data = b"".join(p.value for p in parts)
    if len(parts) != meta["parts"] or len(data) != meta["size"]:
        raise ValueError("batch %d: parts missing" % first)
    return data


@defer.inlineCallbacks
def read_state(client, keys, snapshot_path, reactor=None):
    """Read the latest snapshot (to snapshot_path, part by part: memory
    holds one part) and the log after it, all at one revision.  None when
    the log is empty (no snapshot yet).  A compaction in the middle
    restarts the read."""
    while True:
        result = yield client.range(keys.manifest)
        if not result.kvs:
            return None
        revision = result.revision
        manifest = json.loads(result.kvs[0].value)
        generation = manifest["generation"]
        try:
            yield _read_snapshot(client, keys, manifest, revision,
                                 snapshot_path)
            batches = []
            for kv in (yield scan(client, keys.log, prefix_end(keys.log),
                                  revision)):
                value = yield read_value(client, keys, kv, revision)
                batch = decode_batch(value)
                if batch.last > generation:
                    batches.append(batch)
        except EtcdCompacted:
            continue        # a newer snapshot replaced this one: read it
        return State(revision, generation, batches)


@defer.inlineCallbacks
def _read_snapshot(client, keys, manifest, revision, path):
    generation = manifest["generation"]
    tmp = path + ".part"
    out = yield threads.deferToThread(open, tmp, "wb")
    size = 0
    try:
        for index in range(manifest["parts"]):
            result = yield client.range(keys.snap_key(generation, index),
                                        revision=revision)
            if not result.kvs:
                raise ValueError("snapshot %d: part %d missing"
                                 % (generation, index))
            data = result.kvs[0].value
            size += len(data)
            yield threads.deferToThread(out.write, data)
        if size != manifest["size"]:
            raise ValueError("snapshot %d: %d bytes, manifest says %d"
                             % (generation, size, manifest["size"]))
        yield threads.deferToThread(_finish, out, tmp, path)
    except BaseException:
        out.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finish(out, tmp, path):
    out.flush()
    os.fsync(out.fileno())
    out.close()
    os.replace(tmp, path)

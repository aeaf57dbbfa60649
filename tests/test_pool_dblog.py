"""
The pool database's log on etcd (txxapi.pool: PoolPersistence, Replica)
against a real 3-member etcd cluster on loopback, with in-process
Databases of the real datamodel: writes through the master reach replicas
record for record, an acknowledgement waits for a quorum, the log survives
a killed member and resumes after quorum returns, a deposed master cannot
write, replicas catch up from snapshot + log and across a compaction, and
a promoted replica holds every acknowledged write of a crashed master.
"""

import itertools
import time

import pytest
from twisted.internet import defer

from tests.support.etcd import needs_etcd
from tests.support.etcd_fixtures import client, cluster, rt  # noqa: F401
from txxapi.datamodel import MODEL
from txxapi.db import redolog, statedb
from txxapi.db.memory import Database
from txxapi.pool.dblog import (
    Keys, MastershipLost, PoolDatabaseUnavailable, decode_batch,
    encode_batch)
from txxapi.pool.etcd import LeaseKeeper
from txxapi.pool.persistence import PoolPersistence
from txxapi.pool.replica import Replica

pytestmark = [needs_etcd, pytest.mark.timeout(120)]

_prefixes = itertools.count()


class Pool:
    """One test's log: its prefix, mastership key, hosts' dirs."""

    def __init__(self, rt, client, tmp_path):
        self.rt, self.client, self.tmp = rt, client, tmp_path
        self.prefix = b"t/pool%d" % next(_prefixes)
        self.master_key = self.prefix + b"/master"
        self.opened = []
        self.replicas = []

    def lease(self, ttl=30):
        return self.rt.call(self.client.grant, ttl)

    def master(self, name, lease=None, campaign=True, db=None, **options):
        lease = lease or self.lease()
        if campaign:
            won, _ = self.rt.call(self.client.campaign, self.master_key,
                                  name.encode(), lease.id)
            assert won
        p = PoolPersistence(str(self.tmp / name), self.rt.reactor,
                            self.client, self.prefix, self.master_key,
                            lease.id, **options)
        db = db or Database(MODEL)
        self.rt.call(p.open, db)
        self.opened.append(p)
        return p, db, lease

    def replica(self, name):
        db = Database(MODEL)
        r = Replica(self.client, self.prefix, db, str(self.tmp / name))
        self.rt.call(r.start)
        self.replicas.append(r)
        return r, db

    def close(self):
        for r in self.replicas:
            self.rt.call(r.stop)
        for p in self.opened:
            self.rt.call(lambda p=p: p.close().addErrback(lambda f: None))


@pytest.fixture
def pool(rt, client, tmp_path):
    p = Pool(rt, client, tmp_path)
    yield p
    p.close()


def write(db, persistence, label, **extra):
    """Create a network (on the reactor); the wait for its durability."""
    fields = {"name_label": label, "name_description": "d-" + label,
              "MTU": 1500, "other_config": {"writer": label}}
    fields.update(extra)
    db.create("network", fields)
    return persistence.wait_durable(db.persistent_generation)


def writes(rt, db, persistence, labels):
    """Write each (one after the other, each acknowledged)."""
    for label in labels:
        rt.call(write, db, persistence, label)


def burst(db, persistence, labels):
    """All at once, in one reactor turn: one group commit."""
    waits = [write(db, persistence, label) for label in labels]
    return defer.gatherResults(waits)


def tables(db):
    return {name: {ref: row.fields for ref, row in t.rows.items()}
            for name, t in db.tables.items() if t.cls.persistent}


def wait_until(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def labels_of(db):
    return sorted(r.fields["name_label"]
                  for r in db.tables["network"].rows.values())


def test_writes_reach_replicas_identically(rt, pool):
    master, db, _ = pool.master("a")
    follower, fdb = pool.replica("follower")
    writes(rt, db, master, ["n%d" % i for i in range(5)])
    rt.call(burst, db, master, ["b%d" % i for i in range(20)])
    ref = db.where("network", name_label="n1")[0]

    def change():
        db.update("network", ref, {"name_description": "changed",
                                   "other_config": {"k": "v w"}})
        db.delete("network", db.where("network", name_label="n2")[0])
        return master.wait_durable(db.persistent_generation)
    rt.call(change)
    # The burst was one batch: one key, all 20 records in it.
    log = rt.call(pool.client.range, pool.prefix + b"/log/", prefix=True)
    batches = [decode_batch(kv.value) for kv in log.kvs]
    assert sorted(len(b.records) for b in batches)[-1] == 20
    assert [b.first for b in batches] == sorted(b.first for b in batches)
    wait_until(lambda: follower.generation >= db.persistent_generation)
    assert tables(fdb) == tables(db)
    assert fdb.generation == db.persistent_generation
    # Started late: snapshot (the first, published at open) + the log.
    late, ldb = pool.replica("late")
    assert late.generation == db.persistent_generation
    assert tables(ldb) == tables(db)
    assert late.loads == 1 and follower.loads == 1
    rt.call(follower.stop)


def test_ack_waits_for_quorum_and_the_log_resumes(rt, pool, cluster):
    master, db, _ = pool.master("a", durable_timeout=3)
    writes(rt, db, master, ["before"])
    for m in cluster.members[1:]:
        cluster.kill(m)
    outcome = []
    started = time.monotonic()
    rt.call(lambda: write(db, master, "during").addBoth(outcome.append)
            and None)
    time.sleep(1.5)
    assert outcome == []                    # no quorum: not acknowledged
    # On the local disk, not on etcd: the persistence says it is not
    # durable, and a wait is not answered from the disk alone.
    during = db.persistent_generation
    assert rt.call(lambda: (master.log.is_durable(during),
                            master.is_durable(during))) == (True, False)
    wait_until(lambda: outcome, timeout=6)
    assert time.monotonic() - started < 3 + 2
    error = outcome[0].value
    assert isinstance(error, PoolDatabaseUnavailable)
    assert error.description == ["HA_LOST_STATEFILE"]
    with pytest.raises(PoolDatabaseUnavailable):
        master.check_writable()
    for m in cluster.members[1:]:
        cluster.start_member(m)
    for m in cluster.members:
        cluster.wait_healthy(m)
    # The write that was not acknowledged was kept and lands first.
    writes(rt, db, master, ["after"])
    after = db.persistent_generation
    assert rt.call(lambda: (master.is_durable(during),
                            master.is_durable(after),
                            master.wait_durable(after).called)) == (
        True, True, True)
    late, ldb = pool.replica("late")
    assert labels_of(ldb) == ["after", "before", "during"]
    assert tables(ldb) == tables(db)
    master.check_writable()
    assert master.writer.stats["retries"] >= 1


def test_close_without_quorum_keeps_the_local_disk(rt, pool, cluster):
    master, db, _ = pool.master("a", durable_timeout=2)
    writes(rt, db, master, ["acknowledged"])
    for m in cluster.members[1:]:
        cluster.kill(m)
    rt.call(lambda: write(db, master, "local only").addErrback(
        lambda f: f.trap(PoolDatabaseUnavailable)))
    pool.opened.remove(master)
    started = time.monotonic()
    rt.call(master.close, within=10)
    assert time.monotonic() - started < 2 + 2
    on_disk = Database(MODEL)
    statedb.load(str(pool.tmp / "a" / "state.db"), on_disk)
    assert labels_of(on_disk) == ["acknowledged", "local only"]


def test_killed_member_writes_continue_and_watch_resumes(rt, pool, cluster):
    master, db, _ = pool.master("a")
    follower, fdb = pool.replica("follower")
    writes(rt, db, master, ["n0"])
    watched = follower._watcher.client.transport.current.url
    [victim] = [m for m in cluster.members if m.client_url == watched]
    cluster.kill(victim)
    started = time.monotonic()
    writes(rt, db, master, ["n%d" % i for i in range(1, 11)])
    assert time.monotonic() - started < 15
    wait_until(lambda: follower.generation >= db.persistent_generation)
    assert tables(fdb) == tables(db)
    assert follower._watcher.reconnects >= 1 and follower.loads == 1
    rt.call(follower.stop)


def test_a_deposed_master_cannot_write(rt, pool):
    a, adb, alease = pool.master("a")
    writes(rt, adb, a, ["a1"])
    # A contender that does not hold the key: every write is fenced off.
    intruder, idb, _ = pool.master("b", campaign=False)
    assert labels_of(idb) == ["a1"]         # it loaded the pool's state
    with pytest.raises(MastershipLost) as refused:
        rt.call(write, idb, intruder, "intruder")
    # The client is sent to the holder, as XAPI's slaves send it.
    assert refused.value.description == ["HOST_IS_SLAVE", "a"]
    # a loses its lease; b wins the key.
    rt.call(pool.client.revoke, alease.id)
    with pytest.raises(MastershipLost):
        rt.call(write, adb, a, "after-deposed")
    b, bdb, _ = pool.master("b2")
    assert labels_of(bdb) == ["a1"]
    writes(rt, bdb, b, ["b1"])
    late, ldb = pool.replica("late")
    assert labels_of(ldb) == ["a1", "b1"]
    assert tables(ldb) == tables(bdb)
    log = rt.call(pool.client.range, pool.prefix + b"/", prefix=True)
    assert b"intruder" not in b"".join(kv.value for kv in log.kvs)
    assert b"after-deposed" not in b"".join(kv.value for kv in log.kvs)


def test_a_lost_lease_stops_writes_at_once(rt, pool):
    lease = pool.lease(ttl=2)
    keeper = rt.call(lambda: LeaseKeeper(pool.client, lease).start())
    master, db, _ = pool.master("a", lease=lease, lease_keeper=keeper)
    writes(rt, db, master, ["kept"])
    rt.call(pool.client.revoke, lease.id)
    rt.call(lambda: keeper.lost, within=5)
    kept = db.persistent_generation
    started = time.monotonic()
    with pytest.raises(MastershipLost) as refused:
        rt.call(write, db, master, "refused")
    assert time.monotonic() - started < 0.5      # no etcd round needed
    assert refused.value.description == ["HA_LOST_STATEFILE"]
    # What etcd acknowledged stays durable; the refused write never is.
    assert rt.call(lambda: (master.is_durable(kept),
                            master.is_durable(db.persistent_generation))) \
        == (True, False)
    with pytest.raises(MastershipLost):
        master.check_writable()
    late, ldb = pool.replica("late")
    assert labels_of(ldb) == ["kept"]


def test_compaction_while_a_replica_is_behind(rt, pool):
    master, db, _ = pool.master("a")
    follower, fdb = pool.replica("follower")
    writes(rt, db, master, ["n0"])
    wait_until(lambda: follower.generation >= db.persistent_generation)
    rt.call(follower.stop)
    behind = follower.revision
    token = fdb.generation          # an event.from token of the follower's
    writes(rt, db, master, ["n1", "n2"])
    rt.call(master.snapshot)
    writes(rt, db, master, ["n3"])
    rt.call(master.snapshot)
    assert master.compacted_to > behind
    # The snapshots dropped the log they cover.
    keys = Keys(pool.prefix)
    log = rt.call(pool.client.range, keys.log, prefix=True)
    assert log.kvs == ()
    follower.resume()
    wait_until(lambda: follower.loads == 2)
    wait_until(lambda: follower.generation >= db.persistent_generation)
    assert tables(fdb) == tables(db)
    # The reload kept the follower's change log going: the token from
    # before it gets exactly the networks made meanwhile, not a scan.
    changed = fdb.changes_since(token)
    assert changed is not None
    assert sorted(fdb.fields(t, ref)["name_label"] for t, ref in changed
                  if t == "network") == ["n1", "n2", "n3"]
    writes(rt, db, master, ["n4"])
    wait_until(lambda: follower.generation >= db.persistent_generation)
    assert tables(fdb) == tables(db)
    rt.call(follower.stop)


def test_a_missed_batch_makes_the_replica_reload(rt, pool):
    master, db, _ = pool.master("a")
    follower, fdb = pool.replica("follower")
    writes(rt, db, master, ["n0"])
    wait_until(lambda: follower.generation >= db.persistent_generation)
    # A batch that says it follows a generation the replica never saw.
    g = db.generation + 100
    record = (g, "touch", "network", db.refs("network")[0], {})
    value = encode_batch(g - 1, [record], [redolog.encode_payload(record)])
    rt.call(pool.client.put, Keys(pool.prefix).log_key(g), value)
    wait_until(lambda: follower.loads == 2)
    assert follower.generation == g         # reloaded: etcd's state
    rt.call(follower.stop)


def test_large_records_and_snapshots_go_in_parts(rt, pool):
    master, db, _ = pool.master("a")
    big = "x" * (1536 << 10)
    rt.call(write, db, master, "big", other_config={"blob": big})
    assert rt.call(pool.client.range, pool.prefix + b"/part/",
                   prefix=True, count_only=True).count == 2
    late, ldb = pool.replica("late")
    assert tables(ldb) == tables(db)
    rt.call(master.snapshot)
    keys = Keys(pool.prefix)
    assert rt.call(pool.client.range, keys.snap, prefix=True,
                   count_only=True).count == 2
    assert rt.call(pool.client.range, keys.part, prefix=True,
                   count_only=True).count == 0
    later, ldb2 = pool.replica("later")
    assert tables(ldb2) == tables(db)


def test_promoted_replica_has_every_acknowledged_write(rt, pool):
    master, db, lease = pool.master("a", snapshot_every_records=40)
    follower, fdb = pool.replica("follower")
    acknowledged = []
    for i in range(10):
        labels = ["w%d-%d" % (i, j) for j in range(10)]
        if i < 9:
            rt.call(burst, db, master, labels)
        else:
            # The master "crashes" as it acknowledges the last burst:
            # nothing more leaves it, no close.
            rt.call(lambda: burst(db, master, labels).addCallback(
                lambda _: master.writer.stop()))
        acknowledged += labels
    pool.opened.remove(master)
    rt.call(pool.client.revoke, lease.id)
    wait_until(lambda: follower.generation >= db.persistent_generation)
    assert len(acknowledged) == 100
    assert labels_of(fdb) == sorted(acknowledged)
    # Promoted: it opens the pool's log as the new master, and writes.
    rt.call(follower.stop)
    new, ndb, _ = pool.master("follower")
    assert labels_of(ndb) == sorted(acknowledged)
    writes(rt, ndb, new, ["after-failover"])
    late, ldb = pool.replica("late")
    assert labels_of(ldb) == sorted(acknowledged + ["after-failover"])


def test_a_replica_stops_while_its_watch_opens(rt, pool):
    master, db, _ = pool.master("a")
    replica = Replica(pool.client, pool.prefix, Database(MODEL),
                      str(pool.tmp / "r"))

    @defer.inlineCallbacks
    def start_then_stop():
        yield replica.start()           # the watch is still opening
        yield replica.stop()
    rt.call(start_then_stop, within=10)


def test_a_retry_of_a_write_that_landed_unseen_succeeds(rt, pool):
    """A transaction whose answer was lost (outcome unknown) is sent
    again: it finds its own key there and counts as landed, not as a
    rival master's write."""
    master, db, _ = pool.master("a")
    writes(rt, db, master, ["n0"])
    writer = master.writer

    @defer.inlineCallbacks
    def first_attempt_lands_unseen():
        writer._running = False         # hold the writer for a moment
        durable = write(db, master, "n1")
        writer.flush_pending()
        yield pool.client.txn(writer._jobs[0].txns[0])
        writer.start()                  # sends the same transaction again
        yield durable
    rt.call(first_attempt_lands_unseen)
    assert writer.failure is None
    writes(rt, db, master, ["n2"])
    late, ldb = pool.replica("late")
    assert labels_of(ldb) == ["n0", "n1", "n2"]

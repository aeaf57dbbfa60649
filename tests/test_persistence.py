"""
Durability against a real server: an acknowledged write survives kill -9,
and a restart on the same data directory keeps every object and UUID.
When snapshots are taken (log size, record count, age; at once after a
start that replayed too much), on the persistence layer itself.
"""

import os
import queue
import threading
import time
from types import SimpleNamespace

import pytest
import XenAPI
from twisted.internet import task
from twisted.python.threadpool import ThreadPool

from tests.support.inprocess import ClockReactor
from tests.support.servers import PASSWORD, USER, RunningServer
from txxapi.datamodel import MODEL
from txxapi.db import redolog
from txxapi.db.memory import Database
from txxapi.db.persist import Persistence
from txxapi.pool.dblog import PoolDatabaseUnavailable
from txxapi.pool.slavedb import SlavePersistence


def _net(label):
    return {"name_label": label, "name_description": "d-" + label,
            "MTU": "1500", "other_config": {"writer": label}}


def test_restart_keeps_uuids_and_objects(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    try:
        x = s.session().xenapi
        pool = x.pool.get_all()[0]
        host = x.pool.get_master(pool)
        before = (x.pool.get_uuid(pool), x.host.get_uuid(host),
                  x.host.get_record(host)["host_CPUs"])
        net = x.network.create(_net("kept"))
        net_uuid = x.network.get_uuid(net)
    finally:
        s.stop()
    s.start()
    try:
        x = s.session().xenapi
        pool = x.pool.get_all()[0]
        host = x.pool.get_master(pool)
        after = (x.pool.get_uuid(pool), x.host.get_uuid(host),
                 x.host.get_record(host)["host_CPUs"])
        assert after == before
        net = x.network.get_by_uuid(net_uuid)
        assert x.network.get_record(net)["other_config"] == {
            "writer": "kept"}
        assert len(x.host.get_all()) == 1 and len(x.pool.get_all()) == 1
    finally:
        s.stop()


def test_acknowledged_writes_survive_sigkill(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    acknowledged = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        session = XenAPI.Session(s.http_url)
        session.xenapi.login_with_password(USER, PASSWORD, "1.0", "w")
        i = 0
        while not stop.is_set():
            label = "w%d-%d" % (n, i)
            try:
                session.xenapi.network.create(_net(label))
            except Exception:
                return  # the server died under us
            with lock:
                acknowledged.append(label)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.kill()
    stop.set()
    for t in threads:
        t.join(30)
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= 300

    s.start()
    try:
        x = s.session().xenapi
        found = {r["name_label"]: r for r in
                 x.network.get_all_records().values()}
        missing = [label for label in acked if label not in found]
        assert missing == []
        for label, rec in found.items():
            if label.startswith("w"):
                # Each create is all or nothing.
                assert rec["name_description"] == "d-" + label
                assert rec["other_config"] == {"writer": label}
        assert os.listdir(os.path.join(s.data_dir, "db"))
    finally:
        s.stop()


def test_database_files_are_private(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    db_dir = os.path.join(s.data_dir, "db")

    def modes():
        return {name: os.stat(os.path.join(db_dir, name)).st_mode & 0o777
                for name in os.listdir(db_dir)}

    try:
        s.session().xenapi.network.create(_net("private"))
        running = modes()
    finally:
        s.stop()
    assert any(n.startswith("redo-") for n in running)
    stopped = modes()
    assert "state.db" in stopped
    assert os.stat(db_dir).st_mode & 0o777 == 0o700
    for name, mode in list(running.items()) + list(stopped.items()):
        assert mode == 0o600, (name, oct(mode))


# -- when snapshots are taken (the persistence layer, no server) ------------

class Reactor(task.Clock):
    """Enough of a reactor for Persistence: a clock, a thread pool, and
    callFromThread calls run when the test (the reactor thread) asks."""

    def __init__(self):
        super().__init__()
        self.from_threads = queue.SimpleQueue()
        self.pool = ThreadPool(minthreads=1, maxthreads=2)
        self.pool.start()

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, f, *args, **kw):
        self.from_threads.put((f, args, kw))

    def result(self, d, timeout=10.0):
        box = []
        d.addBoth(box.append)
        deadline = time.monotonic() + timeout
        while not box:
            assert time.monotonic() < deadline, "timed out"
            try:
                f, args, kw = self.from_threads.get(timeout=0.1)
            except queue.Empty:
                continue
            f(*args, **kw)
        return box[0]


@pytest.fixture
def reactor():
    r = Reactor()
    yield r
    r.pool.stop()


def _open(directory, reactor, **bounds):
    persistence = Persistence(str(directory), reactor, **bounds)
    db = Database(MODEL)
    persistence.open(db)
    return persistence, db


def _crash(reactor, persistence):
    """What kill -9 leaves: the log as written, no snapshot at the end."""
    persistence._timer.stop()
    reactor.result(persistence.log.close())


def _write(db, n, prefix="n"):
    for i in range(n):
        db.create("network", {"name_label": "%s%d" % (prefix, i),
                              "other_config": {"pad": "x" * 1000}})


def test_snapshot_once_the_log_passes_its_size_bound(tmp_path, reactor):
    bound = 100000
    p, db = _open(tmp_path, reactor, snapshot_log_bytes=bound)
    written = 0
    while p._snapshotting is None:
        assert written < bound
        before = redolog.log_bytes(str(tmp_path))
        _write(db, 1)
        reactor.result(p.wait_durable(db.generation))
        written += redolog.log_bytes(str(tmp_path)) - before
    # The record that took the log past the bound started it.
    assert written >= bound
    reactor.result(p._snapshotting)
    assert os.path.exists(p.snapshot_path)
    # The segments the snapshot covers are gone.
    assert redolog.log_bytes(str(tmp_path)) == 0
    count = len(db.refs("network"))
    reactor.result(p.close())
    p2, db2 = _open(tmp_path, reactor, snapshot_log_bytes=bound)
    assert len(db2.refs("network")) == count
    reactor.result(p2.close())


def test_a_crash_loop_cannot_grow_the_log(tmp_path, reactor):
    bound = 200000
    # Each process writes half a bound and is killed before any
    # snapshot: without counting what a start replays, the log would
    # grow by that much per crash.
    for run in range(6):
        p, db = _open(tmp_path, reactor, snapshot_log_bytes=bound)
        if p._snapshotting is not None:
            reactor.result(p._snapshotting)
        # The bound grows with the database: a replay no longer than
        # loading state.db.
        limit = max(bound, os.path.getsize(p.snapshot_path)
                    if os.path.exists(p.snapshot_path) else 0)
        assert redolog.log_bytes(str(tmp_path)) < limit
        _write(db, 100, prefix="r%d-" % run)
        if p._snapshotting is not None:
            reactor.result(p._snapshotting)
        _crash(reactor, p)
        assert redolog.log_bytes(str(tmp_path)) < 2 * limit
    p, db = _open(tmp_path, reactor, snapshot_log_bytes=bound)
    assert len(db.refs("network")) == 600
    reactor.result(p.close())


def test_durable_generation_is_known_without_a_wait(tmp_path, reactor):
    p, db = _open(tmp_path, reactor)
    assert p.is_durable(db.generation)      # nothing written yet
    _write(db, 3)
    written = db.generation
    # The writer's word comes through the reactor, which has not run yet.
    d = p.wait_durable(written)
    assert not d.called and not p.is_durable(written)
    reactor.result(d)
    assert p.is_durable(written) and p.is_durable(written - 1)
    assert p.wait_durable(written).called   # answered at once
    # A later generation with nothing logged (a non-persistent change)
    # has nothing to wait for.
    assert p.is_durable(written + 5)
    _write(db, 1)
    assert p.is_durable(written)
    reactor.result(p.wait_durable(db.generation))
    assert p.is_durable(db.generation)
    reactor.result(p.close())


# Its shipping tries the master through a Clock, which resolves no names.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_slaves_write_is_not_durable_before_the_master_has_it(tmp_path):
    # No master answers here: the slave's write stays its own, so it is
    # not durable, while what came before it is; its wait fails with
    # the API's error after the timeout and the write is still pending.
    clock = ClockReactor()
    identity = SimpleNamespace(
        role=SimpleNamespace(master_address="127.0.0.1"),
        host_ref="OpaqueRef:h", pool_secret="s")
    p = SlavePersistence(None, b"t", str(tmp_path), identity, clock,
                         durable_timeout=5)
    db = p.db = Database(MODEL)
    p._running = True
    db.listeners.append(p._changed)
    before = db.generation
    assert p.is_durable(before)
    _write(db, 1)
    written = db.generation
    assert p.is_durable(before) and not p.is_durable(written)
    d = p.wait_durable(written)
    outcome = []
    d.addBoth(outcome.append)
    assert p.wait_durable(before).called and not outcome
    clock.advance(5)
    assert outcome[0].check(PoolDatabaseUnavailable)
    assert outcome[0].value.description == ["HA_LOST_STATEFILE"]
    assert not p.is_durable(written)
    p._running = False
    clock.advance(60)                        # its retries stop


def test_start_with_a_large_log_snapshots_at_once(tmp_path, reactor):
    p, db = _open(tmp_path, reactor)   # the default bounds: none hit
    _write(db, 300)
    _crash(reactor, p)
    grown = redolog.log_bytes(str(tmp_path))
    assert grown > 300000
    p, db = _open(tmp_path, reactor, snapshot_log_bytes=grown // 2)
    assert p._snapshotting is not None
    reactor.result(p._snapshotting)
    assert redolog.log_bytes(str(tmp_path)) == 0
    assert len(db.refs("network")) == 300
    _crash(reactor, p)
    # The next start loads the snapshot and replays nothing.
    p, db = _open(tmp_path, reactor, snapshot_log_bytes=grown // 2)
    assert p._snapshotting is None and p._since_snapshot == 0
    assert len(db.refs("network")) == 300
    reactor.result(p.close())

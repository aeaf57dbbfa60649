"""
The Twisted etcd client (txxapi.pool.etcd) against real etcd clusters on
loopback (127.0.0.2-.5): keys, transactions, leases and their keeper,
watches across a killed member, election, quorum loss and return, and
etcd members run as Twisted services, grown and shrunk by the member API.
"""

import base64
import http.server
import json
import signal
import socket
import threading
import time
import urllib.request

import pytest
from twisted.application import service
from twisted.internet import defer, task

from tests.support.api import wait_until
from tests.support.etcd import (
    EtcdCluster, TIMING, free_ports, loopback, needs_etcd)
from tests.support.pool import host_address
from tests.support.etcd_fixtures import client, cluster, rt  # noqa: F401
from txxapi.pool.etcd import (
    Compare, EtcdClient, EtcdCompacted, EtcdLeaseNotFound,
    EtcdMemberStopping, EtcdNoQuorum, EtcdTimeout, EtcdUnavailable,
    Election, LeaseKeeper, Put, Range, Txn, Watcher)
from txxapi.pool.etcd.member import EtcdMember, add_member, remove_member

pytestmark = [needs_etcd, pytest.mark.timeout(120)]
ETCD_CLIENT_TIMEOUT = 5


def sleep(reactor, seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def test_put_get_range_by_prefix(rt, client):
    first = rt.call(client.put, b"t/range/a", b"1")
    rt.call(client.put, "t/range/b", "2")
    rt.call(client.put, b"t/range/b", b"\x00\xff binary")
    rt.call(client.put, b"t/rangeX", b"outside the prefix")
    kv = rt.call(client.get, b"t/range/b")
    assert kv.value == b"\x00\xff binary"
    assert kv.version == 2 and kv.mod_revision > kv.create_revision
    assert kv.create_revision > first.revision
    result = rt.call(client.range, b"t/range/", prefix=True)
    assert [k.key for k in result.kvs] == [b"t/range/a", b"t/range/b"]
    assert result.count == 2 and result.revision >= kv.mod_revision
    assert rt.call(client.get, b"t/range/missing") is None
    old = rt.call(client.get, b"t/range/b", revision=kv.create_revision)
    assert old.value == b"2"
    deleted = rt.call(client.delete, b"t/range/", prefix=True)
    assert deleted.deleted == 2
    assert rt.call(client.range, b"t/range/", prefix=True).kvs == ()


def test_txn_compare_and_swap(rt, client):
    key = b"t/cas"
    rt.call(client.put, key, b"v1")

    def swap(expected, new):
        txn = Txn().when(Compare.value(key) == expected) \
                   .then(Put(key, new)).otherwise(Range(key))
        return rt.call(client.txn, txn)

    ok = swap(b"v1", b"v2")
    assert ok.succeeded and ok.revision == ok.responses[0].revision
    stale = swap(b"v1", b"v3")
    assert not stale.succeeded
    assert stale.responses[0].kvs[0].value == b"v2"
    kv = rt.call(client.get, key)
    older = Txn().when(Compare.mod_revision(key) < kv.mod_revision) \
                 .then(Put(key, b"lost"))
    assert not rt.call(client.txn, older).succeeded
    assert rt.call(client.get, key).value == b"v2"


def test_lease_keepalive_and_expiry(rt, client):
    lease = rt.call(client.grant, 2)
    assert lease.id and lease.ttl >= 2
    rt.call(client.put, b"t/leased", b"x", lease=lease.id)
    assert rt.call(client.get, b"t/leased").lease == lease.id
    renewed = rt.call(client.keepalive, lease.id)
    assert renewed.id == lease.id and renewed.ttl == lease.ttl
    # Left alone, it expires and takes its key along.
    deadline = time.monotonic() + lease.ttl + 5
    while rt.call(client.get, b"t/leased") is not None:
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.2)
    with pytest.raises(EtcdLeaseNotFound):
        rt.call(client.keepalive, lease.id)
    assert rt.call(client.time_to_live, lease.id) == -1


def test_lease_keeper_keeps_and_reports_revoke(rt, client):
    lease = rt.call(client.grant, 2)
    lost = []
    keeper = rt.call(lambda: LeaseKeeper(client, lease, lost.append).start())
    rt.call(client.put, b"t/kept", b"x", lease=lease.id)
    time.sleep(lease.ttl + 1.5)         # beyond the TTL: renewed meanwhile
    assert rt.call(client.get, b"t/kept") is not None
    assert keeper.renewals >= 2 and not lost
    rt.call(client.revoke, lease.id)
    rt.call(lambda: keeper.lost, within=5)
    assert "no longer exists" in lost[0]
    assert rt.call(client.get, b"t/kept") is None


def test_lease_keeper_reports_loss_before_expiry(rt, tmp_path):
    single = EtcdCluster(tmp_path, size=1, token="lease").start()
    try:
        c = rt.call(EtcdClient, single.endpoints, timeout=1)
        lease = rt.call(c.grant, 2)
        lost = []
        keeper = rt.call(lambda: LeaseKeeper(c, lease, lost.append).start())
        time.sleep(0.8)
        single.kill(single.members[0])
        killed = rt.reactor.seconds()
        rt.call(lambda: keeper.lost, within=lease.ttl + 3)
        # Told no later than the server could have let it expire.
        assert "not renewed" in lost[0]
        assert rt.reactor.seconds() - killed <= lease.ttl + 1.5
        assert keeper.expires_at <= killed + lease.ttl
        rt.call(c.close)
    finally:
        single.stop()


def test_hung_member_costs_reads_and_renewals_only_a_share(rt, cluster):
    """A member that stops answering (SIGSTOP) without closing its
    connections: reads and lease renewals move on to the next member
    within their share of the deadline, so the lease survives."""
    statuses = {e: rt.call(lambda e=e: EtcdClient([e]).status())
                for e in cluster.endpoints}
    leader_id = next(iter(statuses.values())).leader
    hung = next(e for e, s in statuses.items() if s.member_id != leader_id)
    c = rt.call(EtcdClient, [hung] + [e for e in cluster.endpoints
                                      if e != hung], timeout=3)
    lease = rt.call(c.grant, 2)
    lost = []
    keeper = rt.call(lambda: LeaseKeeper(c, lease, lost.append).start())
    [member] = [m for m in cluster.members if m.client_url == hung]
    member.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert rt.call(c.get, b"t/nothing") is None
        assert time.monotonic() - started < 3
        time.sleep(lease.ttl + 1)
        assert not lost and keeper.renewals >= 2
        assert c.transport.current.url != hung
    finally:
        member.proc.send_signal(signal.SIGCONT)
    rt.call(keeper.stop, revoke=True)
    rt.call(c.close)


def silent_endpoint():
    """A URL whose connections are never made: a listening socket whose
    backlog is full drops the SYNs of the next ones (a host cut off)."""
    listener = socket.socket()
    listener.bind((host_address(0), 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    time.sleep(0.1)
    return "http://%s:%d" % listener.getsockname(), [listener] + fillers


def test_unreachable_member_costs_renewals_only_a_share(rt, cluster):
    """A member whose connection cannot be made (its host cut off): the
    share of the deadline that runs out while connecting moves reads and
    renewals to the next member instead of failing them."""
    silent, sockets = silent_endpoint()
    try:
        c = rt.call(EtcdClient, cluster.endpoints + [silent], timeout=3)
        lease = rt.call(c.grant, 2)
        lost = []
        keeper = rt.call(lambda: LeaseKeeper(c, lease, lost.append).start())
        # The silent member asked first, as the one that answered last.
        c.transport._current = len(cluster.endpoints)
        started = time.monotonic()
        assert rt.call(c.get, b"t/nothing") is None
        assert time.monotonic() - started < 3
        c.transport._current = len(cluster.endpoints)
        time.sleep(lease.ttl + 1)
        assert not lost and keeper.renewals >= 2
        rt.call(keeper.stop, revoke=True)
        rt.call(c.close)
    finally:
        for s in sockets:
            s.close()


def test_errors_are_typed(rt, client):
    with pytest.raises(EtcdLeaseNotFound):
        rt.call(client.revoke, 0x1234)
    rev = rt.call(client.put, b"t/compact", b"1").revision
    rt.call(client.put, b"t/compact", b"2")
    rt.call(client.compact, rev + 1)
    with pytest.raises(EtcdCompacted):
        rt.call(client.range, b"t/compact", revision=rev)
    closed = free_ports(host_address(0), 2)
    nowhere = rt.call(EtcdClient, ["http://%s:%d" % (host_address(0), p)
                                   for p in closed],
                      timeout=3)
    started = time.monotonic()
    with pytest.raises(EtcdUnavailable):
        rt.call(nowhere.put, b"k", b"v")
    assert time.monotonic() - started < 3
    rt.call(nowhere.close)


class _StoppingGateway(http.server.BaseHTTPRequestHandler):
    """A member's gateway whose connection to its member is closing, as
    etcd's answers while the member stops."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status, message = self.server.answer
        body = json.dumps({"error": message, "message": message,
                           "code": 1 if status == 408 else 14}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.asked += 1

    def log_message(self, *args):
        pass


@pytest.fixture
def stopping_gateway():
    server = http.server.HTTPServer((host_address(0), 0), _StoppingGateway)
    server.asked = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, "http://%s:%d" % server.server_address
    server.shutdown()
    server.server_close()


def test_a_stopping_member_is_passed_over_when_nothing_was_sent(
        rt, cluster, client, stopping_gateway):
    # ``client``: every member of the cluster up again first.
    gateway, url = stopping_gateway
    gateway.answer = (408, "grpc: the client connection is closing")
    c = rt.call(EtcdClient, [url] + cluster.endpoints, timeout=3)
    try:
        # Not sent to the member: the next one takes the write.
        rt.call(c.put, b"t/stopping", b"1")
        assert gateway.asked == 1
        assert rt.call(c.get, b"t/stopping").value == b"1"
        # The transport closing under a write: its outcome is unknown,
        # so it is not made again elsewhere, and says so by its type.
        gateway.answer = (503, "transport is closing")
        alone = rt.call(EtcdClient, [url], timeout=3)
        with pytest.raises(EtcdMemberStopping) as e:
            rt.call(alone.put, b"t/stopping", b"2")
        assert not e.value.unsent
        rt.call(alone.close)
    finally:
        rt.call(c.close)


def test_watch_compacted_is_reported(rt, client):
    rev = rt.call(client.put, b"t/wc", b"1").revision
    rt.call(client.put, b"t/wc", b"2")
    rt.call(client.compact, rev + 1)
    compacted = []
    watcher = Watcher(client, b"t/wc", lambda events: None,
                      start_revision=rev, on_compacted=compacted.append)
    # etcd registers the watch, then cancels it: created, then finished.
    rt.call(lambda: watcher.start().addErrback(lambda f: None))
    ended = rt.call(lambda: watcher.finished)
    assert isinstance(ended, EtcdCompacted) and ended.revision == rev + 1
    assert compacted == [rev + 1]


def gateway_put(url, key, value):
    """A put straight to one member's gateway, not through the reactor."""
    body = json.dumps({"key": base64.b64encode(key).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    with urllib.request.urlopen(url + "/v3/kv/put", body, timeout=5) as r:
        assert r.status == 200


def test_watch_in_order_and_resumes_after_member_killed(rt, cluster, client):
    statuses = {e: rt.call(client.status, e) for e in cluster.endpoints}
    leader_id = next(iter(statuses.values())).leader
    [leader] = [e for e, s in statuses.items() if s.member_id == leader_id]
    watched = next(e for e in cluster.endpoints if e != leader)
    watching = rt.call(EtcdClient, [watched] + [
        e for e in cluster.endpoints if e != watched], timeout=5)
    seen = []
    start = rt.call(client.put, b"t/w/0", b"before").revision
    watcher = Watcher(watching, b"t/w/", lambda evs: seen.extend(evs),
                      prefix=True, start_revision=start + 1)
    rt.call(watcher.start)
    assert watching.transport.current.url == watched
    for i in range(1, 6):
        rt.call(client.put, b"t/w/%d" % i, b"%d" % i)
    rt.call(client.delete, b"t/w/1")
    # The watched member dies and five writes land before the watcher
    # can notice (its reactor is held): it must resume behind them.
    held, release = threading.Event(), threading.Event()
    rt.reactor.callFromThread(lambda: (held.set(), release.wait(15)))
    assert held.wait(5)
    try:
        [victim] = [m for m in cluster.members if m.client_url == watched]
        cluster.kill(victim)
        for i in range(6, 11):
            gateway_put(leader, b"t/w/%d" % i, b"%d" % i)
    finally:
        release.set()
    deadline = time.monotonic() + 15
    while len(seen) < 11 and time.monotonic() < deadline:
        time.sleep(0.1)
    rt.call(watcher.stop)
    assert [(e.type, e.kv.key) for e in seen] == \
        [("put", b"t/w/%d" % i) for i in range(1, 6)] + \
        [("delete", b"t/w/1")] + \
        [("put", b"t/w/%d" % i) for i in range(6, 11)]
    revisions = [e.kv.mod_revision for e in seen]
    assert revisions == sorted(set(revisions))
    assert watcher.reconnects >= 1
    assert watching.transport.current.url != watched     # failed over
    rt.call(watching.close)


def test_watch_on_a_silent_member_resumes_elsewhere(rt, cluster, client):
    """An idle watch hears progress notifications and stays put; a
    member that stops sending (SIGSTOP: its connection stays open, as a
    host cut off leaves it) is left after the client's watch_silence,
    and the watch resumes on another member with what was written."""
    statuses = {e: rt.call(client.status, e) for e in cluster.endpoints}
    leader_id = next(iter(statuses.values())).leader
    hung = next(e for e, s in statuses.items() if s.member_id != leader_id)
    [leader] = [e for e, s in statuses.items() if s.member_id == leader_id]
    watching = rt.call(lambda: EtcdClient(
        [hung] + [e for e in cluster.endpoints if e != hung], timeout=3,
        watch_silence=2.5))
    seen = []
    start = rt.call(client.put, b"t/s/0", b"0").revision
    watcher = Watcher(watching, b"t/s/", lambda evs: seen.extend(evs),
                      prefix=True, start_revision=start + 1)
    rt.call(watcher.start)
    time.sleep(4)
    assert watcher.reconnects == 0
    [member] = [m for m in cluster.members if m.client_url == hung]
    member.proc.send_signal(signal.SIGSTOP)
    try:
        gateway_put(leader, b"t/s/1", b"1")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e.kv.key for e in seen] == [b"t/s/1"]
        assert watcher.reconnects == 1
    finally:
        member.proc.send_signal(signal.SIGCONT)
    rt.call(watcher.stop)
    rt.call(watching.close)


def test_election_loser_wins_after_winner_revoked(rt, client):
    key = b"t/master"
    leases = [rt.call(client.grant, 10) for _ in range(2)]
    contenders = [Election(client, key, b"host%d" % i, lease.id)
                  for i, lease in enumerate(leases)]
    first = rt.call(contenders[0].campaign)
    assert first.value == b"host0" and first.lease == leases[0].id
    outcome = []
    rt.call(lambda: contenders[1].campaign().addBoth(outcome.append) and None)
    time.sleep(0.5)
    assert outcome == []                       # the loser waits
    assert rt.call(contenders[1].leader).value == b"host0"
    rt.call(client.revoke, leases[0].id)       # the master's lease is gone
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outcome and outcome[0].value == b"host1"
    assert rt.call(client.get, key).lease == leases[1].id
    assert rt.call(contenders[1].resign) is True
    assert rt.call(client.get, key) is None
    rt.call(client.revoke, leases[1].id)


def test_quorum_loss_fails_writes_then_recovers(rt, cluster, client):
    survivor, *others = cluster.members
    short = rt.call(EtcdClient, [survivor.client_url] + [
        m.client_url for m in others], timeout=3)
    seen = []
    start = rt.call(short.put, b"t/q", b"before").revision
    watcher = Watcher(short, b"t/q", lambda evs: seen.extend(evs),
                      start_revision=start + 1)
    rt.call(watcher.start)
    for m in others:
        cluster.kill(m)
    started = time.monotonic()
    with pytest.raises((EtcdNoQuorum, EtcdTimeout)):
        rt.call(short.put, b"t/q", b"during")
    assert time.monotonic() - started < 3 + 2
    # The survivor, without a leader, ends the watch it serves.
    deadline = time.monotonic() + 10
    while not watcher.reconnects and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watcher.reconnects
    for m in others:
        cluster.start_member(m)
    for m in cluster.members:
        cluster.wait_healthy(m)
    rt.call(short.put, b"t/q", b"after")
    assert rt.call(short.get, b"t/q").value == b"after"
    deadline = time.monotonic() + 10
    while b"after" not in [e.kv.value for e in seen] and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    rt.call(watcher.stop)
    # A write that timed out has an unknown outcome: the survivor may
    # have proposed it before quorum went, and it lands once quorum is
    # back.  Either way the watch sees every landed write once, in order.
    values = [e.kv.value for e in seen]
    assert values in ([b"after"], [b"during", b"after"])
    rt.call(short.close)


def test_a_lease_in_doubt_is_kept_through_a_quorum_loss(rt, cluster,
                                                        client):
    """expiry_is_loss=False (the mastership's keeper): with no quorum for
    longer than the TTL the lease is in doubt, not lost; etcd kept it,
    and the first renewal once the quorum is back settles it.  Only
    etcd's word loses it."""
    survivor, *others = cluster.members
    c = rt.call(EtcdClient, [survivor.client_url] + [
        m.client_url for m in others], timeout=1)
    lease = rt.call(c.grant, 2)
    lost = []
    keeper = rt.call(lambda: LeaseKeeper(c, lease, lost.append,
                                         expiry_is_loss=False).start())
    rt.call(c.put, b"t/doubt", b"x", lease=lease.id)
    for m in others:
        cluster.kill(m)
    wait_until(lambda: keeper.in_doubt, timeout=lease.ttl + 3,
               what="the lease in doubt")
    for m in others:
        cluster.start_member(m)
    wait_until(lambda: not keeper.in_doubt, timeout=15,
               what="the lease renewed")
    assert not lost and rt.call(c.get, b"t/doubt").lease == lease.id
    rt.call(c.revoke, lease.id)
    rt.call(lambda: keeper.lost, within=5)
    assert "no longer exists" in lost[0]
    rt.call(c.close)


def test_member_services_add_and_remove(rt, tmp_path):
    hosts = [loopback(i) for i in range(4)]
    ports = [free_ports(h) for h in hosts]
    names = ["s%d" % i for i in range(4)]
    cluster = {names[i]: "http://%s:%d" % (hosts[i], ports[i][1])
               for i in range(3)}
    top = service.MultiService()

    def member(i, **kw):
        return EtcdMember(names[i], str(tmp_path / names[i]), hosts[i],
                          ports[i][0], ports[i][1], extra_args=TIMING,
                          stop_timeout=5, restart_delay=0.2, **kw)

    @defer.inlineCallbacks
    def scenario():
        members = [member(i, initial_cluster=cluster) for i in range(3)]
        for m in members:
            m.setServiceParent(top)
        top.startService()
        yield defer.gatherResults([m.ready() for m in members])
        c = EtcdClient([m.client_url for m in members], timeout=5)
        yield c.put(b"k", b"v")
        fourth = yield add_member(
            c, names[3], str(tmp_path / names[3]), hosts[3], ports[3][0],
            ports[3][1], parent=top, extra_args=TIMING, stop_timeout=5)
        listed = yield c.members()
        assert sorted(m.name for m in listed) == names
        assert not any(m.is_learner for m in listed)
        c4 = EtcdClient([fourth.client_url], timeout=5)
        assert (yield c4.get(b"k")).value == b"v"     # it caught up
        yield c4.close()
        yield remove_member(c, fourth)
        assert not fourth.running and fourth.pid is None
        listed = yield c.members()
        assert sorted(m.name for m in listed) == names[:3]
        yield c.put(b"k", b"after")
        # A crash: the service starts it again.
        members[2].kill()
        yield sleep(c.reactor, 0.5)
        yield members[2].ready()
        assert members[2].starts == 2
        yield c.close()
        pids = [m.pid for m in members]
        yield top.stopService()
        return pids

    pids = rt.call(scenario, within=90)
    assert all(pids)
    for pid in pids:                     # SIGTERM took them all down
        with pytest.raises(ProcessLookupError):
            import os
            os.kill(pid, 0)


def test_member_log_lines_keep_what_tells_events_apart():
    """etcd logs an event once per remote peer and stream: each line
    keeps its peer, stream and error (not the fields every line has), so
    no two events read as one line twice; its levels map to ours."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher
    member = EtcdMember("m0", "/nonexistent", "127.0.0.1")
    seen = []

    def observe(event):
        if event.get("log_namespace") == "txxapi.pool.etcd.member":
            seen.append((event["log_level"], formatEvent(event)))
    record = {"level": "warn", "ts": "2026-01-01T00:00:00.000Z",
              "caller": "rafthttp/stream.go:1", "local-member-id": "aa",
              "msg": "lost TCP streaming connection with remote peer",
              "remote-peer-id": "bb", "error": "EOF"}
    globalLogPublisher.addObserver(observe)
    try:
        for stream in ("stream Message", "stream MsgApp v2"):
            member.log_line(json.dumps(
                dict(record, **{"stream-reader-type": stream})).encode())
        member.log_line(json.dumps({"level": "error", "msg": "plain",
                                    "urls": ["a", "b"]}).encode())
        member.log_line(b"not json")
    finally:
        globalLogPublisher.removeObserver(observe)
    text = "etcd m0: lost TCP streaming connection with remote peer " \
        "(remote-peer-id=bb, error=EOF, stream-reader-type=%s)"
    assert seen == [
        (LogLevel.info, text % "stream Message"),
        (LogLevel.info, text % "stream MsgApp v2"),
        (LogLevel.warn, 'etcd m0: plain (urls=["a", "b"])'),
        (LogLevel.debug, "etcd m0: not json")]

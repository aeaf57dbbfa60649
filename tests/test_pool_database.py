"""
The pool's database across real hosts (tests/support/pool.py: three
twistd processes on their own loopback addresses): from the first join
the master's writes go to etcd and reach every slave's replica; a slave's
own writes go through the master; a call the master forwards to a slave
that has stopped answering fails within the pool's call timeout; after
kill -9 of the master the etcd log still holds every acknowledged write.
"""

import os
import signal
import threading
import time
from uuid import uuid4

import pytest
import XenAPI

from tests.support.api import failure, wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import joined_pool, pool_session

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]


def labels(x):
    return {r["name_label"] for r in x.network.get_all_records().values()}


CALL_TIMEOUT = 2


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from joined_pool(str(tmp_path_factory.mktemp("pooldb")), 3,
                           ["--pool-call-timeout", str(CALL_TIMEOUT)])


def test_master_writes_reach_every_replica_and_slave_writes_the_master(pool):
    master = pool[0].session().xenapi
    for i in range(5):
        master.network.create({"name_label": "acked-%d" % i,
                               "name_description": "", "MTU": "1500",
                               "other_config": {}})
    for slave in pool[1:]:
        x = pool_session(slave).xenapi
        wait_until(lambda: {"acked-%d" % i for i in range(5)} <= labels(x),
                   what="replica of %s" % slave.address)
    # A write made on a slave is the master's once acknowledged.
    x = pool_session(pool[1]).xenapi
    me = [h for h, r in x.host.get_all_records().items()
          if r["address"] == pool[1].address][0]
    x.host.set_name_description(me, "written on the slave")
    assert master.host.get_name_description(me) == "written on the slave"
    wait_until(lambda: pool_session(pool[2]).xenapi.host
               .get_name_description(me) == "written on the slave",
               what="the slave's write on the other slave")


def tools_pbds(x):
    """{host address: (PBD ref, its path)} of the pool's tools SR."""
    [sr] = [r for r, f in x.SR.get_all_records().items() if f["is_tools_sr"]]
    return {x.host.get_address(f["host"]): (ref, f["device_config"]["path"])
            for ref, f in x.PBD.get_all_records().items() if f["SR"] == sr}


def test_each_host_keeps_its_own_tools_sr_pbd_across_restarts(pool):
    x = pool[0].session().xenapi

    def each_on_its_own():
        pbds = tools_pbds(x)
        return sorted(pbds) == sorted(h.address for h in pool) and all(
            pbds[h.address][1] == os.path.abspath(
                os.path.join(h.data_dir, "tools-iso")) for h in pool)
    assert each_on_its_own(), tools_pbds(x)
    before = tools_pbds(x)
    pool[1].stop()
    pool[1].start()
    # The same PBDs, each still on its own host's path.
    assert tools_pbds(x) == before
    assert each_on_its_own()


def test_event_from_on_a_slave_sees_what_its_replica_applies(pool):
    x = pool_session(pool[1]).xenapi
    event_from = getattr(x.event, "from")
    token = [event_from(["network"], "", 0.0)["token"]]

    def operations_on(ref):
        """The slave's events about ref, once there are some."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            reply = event_from(["network"], token[0], 5.0)
            token[0] = reply["token"]
            ops = [(e["operation"], e.get("snapshot") or {})
                   for e in reply["events"] if e["ref"] == ref]
            if ops:
                return ops
        return []

    master = pool[0].session().xenapi
    ref = master.network.create({"name_label": "evented", "MTU": "1500",
                                 "name_description": "", "other_config": {}})
    [(op, snapshot)] = operations_on(ref)
    assert (op, snapshot["name_label"]) == ("add", "evented")
    master.network.set_name_description(ref, "changed on the master")
    [(op, snapshot)] = operations_on(ref)
    assert (op, snapshot["name_description"]) == \
        ("mod", "changed on the master")
    master.network.destroy(ref)
    assert [op for op, _ in operations_on(ref)] == ["del"]


def test_a_write_the_master_refuses_fails_its_call_and_later_ones_go_on(
        pool):
    """Two slaves introduce an SR of the same uuid while the master is
    frozen: each applies it locally, and once the master runs again it
    takes one and refuses the other (its uniqueness error), which the
    losing call gets; that slave's replica then holds the winner's, and
    its next write is the master's as usual."""
    uuid = str(uuid4())
    slaves = [pool_session(h).xenapi for h in pool[1:]]
    readers = [pool_session(h).xenapi for h in pool[1:]]
    outcomes = {}

    def introduce(i):
        try:
            outcomes[i] = ("ok", slaves[i].SR.introduce(
                uuid, "dup-%d" % i, "", "dummy", "", False, {}))
        except XenAPI.Failure as e:
            outcomes[i] = ("refused", e.details)
    os.kill(pool[0].proc.pid, signal.SIGSTOP)
    try:
        calls = [threading.Thread(target=introduce, args=(i,))
                 for i in (0, 1)]
        for call in calls:
            call.start()
        for x in readers:
            wait_until(lambda: uuid in [r["uuid"] for r in
                                        x.SR.get_all_records().values()],
                       what="the SR applied locally")
    finally:
        os.kill(pool[0].proc.pid, signal.SIGCONT)
    for call in calls:
        call.join(30)
    kinds = sorted(outcome[0] for outcome in outcomes.values())
    assert kinds == ["ok", "refused"], outcomes
    winner = [i for i in outcomes if outcomes[i][0] == "ok"][0]
    loser = 1 - winner
    assert outcomes[loser][1] == ["DB_UNIQUENESS_CONSTRAINT_VIOLATION",
                                  "SR", "uuid", uuid]
    master = pool[0].session().xenapi
    assert master.SR.get_by_uuid(uuid) == outcomes[winner][1]
    wait_until(lambda: slaves[loser].SR.get_by_uuid(uuid)
               == outcomes[winner][1], what="the loser's replica reloaded")
    slaves[loser].network.create({"name_label": "after-refusal",
                                  "name_description": "", "MTU": "1500",
                                  "other_config": {}})
    assert "after-refusal" in labels(master)


def test_a_stopped_slave_holds_a_forwarded_call_for_the_bound_only(pool):
    """A slave whose process is stopped takes connections (the kernel
    does) and answers nothing: the master's forwarded call fails with
    CANNOT_CONTACT_HOST within twice the call timeout (a ping left
    unanswered), and the host answers again once it runs again."""
    master = pool[0].session().xenapi
    slave = [ref for ref, r in master.host.get_all_records().items()
             if r["address"] == pool[2].address][0]
    master.host.get_servertime(slave)
    os.kill(pool[2].proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert failure(master.host.get_servertime, slave) == [
            "CANNOT_CONTACT_HOST", slave]
        waited = time.monotonic() - started
        assert CALL_TIMEOUT <= waited < 2 * CALL_TIMEOUT + 1, waited
    finally:
        os.kill(pool[2].proc.pid, signal.SIGCONT)
    master.host.get_servertime(slave)


def test_kill_9_of_the_master_loses_no_acknowledged_write(pool):
    master = pool[0].session().xenapi
    for i in range(10):
        master.network.create({"name_label": "before-kill-%d" % i,
                               "name_description": "", "MTU": "1500",
                               "other_config": {}})
    pool[0].kill()
    # The surviving replicas (two etcd members of three: a quorum) hold
    # all of them, and a replica loaded afresh from etcd does too.
    x = pool_session(pool[2]).xenapi
    wait_until(lambda: {"before-kill-%d" % i for i in range(10)}
               <= labels(x), what="replica after the kill")
    # (Without its master it starts in emergency mode, and serves it all
    # once the master is back.)
    pool[2].stop()
    pool[2].spawn()
    pool[2].wait_ready(60, greeted=False)
    pool[0].start()
    pool[2].wait_ready(60)
    x = pool_session(pool[2]).xenapi
    assert {"before-kill-%d" % i for i in range(10)} <= labels(x)

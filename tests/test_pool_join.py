"""
A pool of three real hosts (tests/support/pool.py: each its own twistd
process on 127.0.0.2-4, ports 80/443): pool.join with XAPI's pre-join
refusals (each leaving both sides as they were), every host's etcd
client knowing each member, slaves answering HOST_IS_SLAVE, the role
kept across a restart, pool.eject.
"""

import json
import os
import subprocess
import sys
import xmlrpc.client

import pytest
import XenAPI

from tests.support.api import failure, wait_until
from tests.support.pool import host_address, started_pool, wait_members
from tests.support.servers import PASSWORD, REPO, USER
from tests.test_vm_lifecycle import new_vm
from tests.test_xo_connector import XO_DIR, xo_connector  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="binds ports 80/443 on 127.0.0.x")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from started_pool(str(tmp_path_factory.mktemp("pool")), 3)


@pytest.fixture(scope="module")
def master(pool):
    session = pool[0].session()
    yield session.xenapi
    session.xenapi.session.logout()


def role_of(host):
    return host.role()


def by_address(x):
    return {h["address"]: (ref, h)
            for ref, h in x.host.get_all_records().items()}


def state(pool, x):
    """What a refused join must leave as it was, on both sides."""
    return (sorted(x.host.get_all_records()), sorted(x.SR.get_all()),
            sorted(x.PIF.get_all()),
            [role_of(h) for h in pool],
            [open(os.path.join(h.data_dir, "ptoken")).read() for h in pool])


def test_join_lists_the_host_with_its_local_sr(pool, master):
    pool_ref = master.pool.get_all()[0]
    master_ref = master.pool.get_master(pool_ref)
    pool.join(pool[1], pool[0])
    hosts = by_address(master)
    assert sorted(hosts) == [host_address(0), host_address(1)]
    assert master.pool.get_master(pool_ref) == master_ref
    ref, host = hosts[host_address(1)]
    # Its pool.hello, once restarted, makes it live and enabled.
    wait_until(lambda: master.host.get_enabled(ref), what="host enabled")
    assert master.host_metrics.get_live(host["metrics"]) is True
    assert role_of(pool[1]) == "slave:" + host_address(0)
    assert open(os.path.join(pool[1].data_dir, "ptoken")).read() == \
        open(os.path.join(pool[0].data_dir, "ptoken")).read()
    # Its own storage, plugged on it; its PIF on the pool's network.
    local = [sr for sr in master.SR.get_by_name_label("Local storage")
             if [master.PBD.get_host(p) for p in master.SR.get_PBDs(sr)]
             == [ref]]
    assert len(local) == 1
    pifs = master.PIF.get_all_records()
    assert {p["IP"] for p in pifs.values()} == {host_address(0), host_address(1)}
    assert len({p["network"] for p in pifs.values()}) == 1
    assert master.VM.get_is_control_domain(host["control_domain"])
    assert host["cpu_info"]["cpu_count"] == str(
        len(master.host.get_host_CPUs(ref)))


def test_refused_joins_change_nothing(pool, master):
    joiner = pool[2].session().xenapi
    before = state(pool, master)
    # Bad password: the master's own answer, passed on.
    assert failure(joiner.pool.join, pool[0].address, USER, "wrong")[0] == \
        "SESSION_AUTHENTICATION_FAILED"
    # A slave's address: it says where its master is.
    assert failure(joiner.pool.join, pool[1].address, USER, PASSWORD) == \
        ["HOST_IS_SLAVE", pool[0].address]
    # Itself.
    assert failure(joiner.pool.join, pool[2].address, USER, PASSWORD) == \
        ["OPERATION_NOT_ALLOWED", "Host cannot become slave of itself"]
    # A master of other hosts cannot join another pool.
    assert failure(master.pool.join, pool[2].address, USER, PASSWORD) == \
        ["JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS"]
    # A host running a VM.
    vm = new_vm(joiner, "running")
    joiner.VM.start(vm, False, False)
    try:
        assert failure(joiner.pool.join, pool[0].address, USER,
                       PASSWORD) == ["JOINING_HOST_CANNOT_HAVE_RUNNING_VMS"]
    finally:
        joiner.VM.hard_shutdown(vm)
        joiner.VM.destroy(vm)
    assert state(pool, master) == before
    assert len(joiner.host.get_all()) == 1
    joiner.session.logout()


def pool_script(*args):
    env = dict(os.environ, XAPI_PASSWORD=PASSWORD)
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts",
                                                         "pool")] + list(args),
                          env=env, capture_output=True, text=True,
                          timeout=60)


def test_second_join_and_slaves_answer_host_is_slave(pool, master):
    # The operator's one command (the README's).
    joined = pool_script("join", pool[2].address, pool[0].address)
    assert joined.returncode == 0, joined.stderr
    pool[2].restart()
    assert sorted(by_address(master)) == [host_address(0), host_address(1),
                                          host_address(2)]

    def live_addresses():
        lines = pool_script("hosts", pool[0].address).stdout.splitlines()
        return sorted(line.split()[1] for line in lines
                      if line.endswith(" live"))

    wait_until(lambda: len(live_addresses()) == 3, what="3 live hosts")
    assert live_addresses() == [host_address(0), host_address(1), host_address(2)]
    # The master added the joiner's etcd member as it joined: the first
    # slave's client learns it too (its etcd.json), not only the master's.
    wait_members(pool, timeout=30)
    assert len(master.SR.get_by_name_label("Local storage")) == 3
    for slave in pool[1], pool[2]:
        # What a client does: log in where it was pointed, reconnect to
        # the master it is told of.
        session = XenAPI.Session(slave.https_url, ignore_ssl=True)
        with pytest.raises(XenAPI.Failure) as e:
            session.xenapi.login_with_password(USER, PASSWORD, "1.0", "t")
        assert e.value.details == ["HOST_IS_SLAVE", host_address(0)]
        session = XenAPI.Session("https://%s" % e.value.details[1],
                                 ignore_ssl=True)
        session.xenapi.login_with_password(USER, PASSWORD, "1.0", "t")
        assert len(session.xenapi.host.get_all()) == 3
        session.xenapi.session.logout()


def test_xo_connector_reconnects_to_the_master(
        pool, xo_connector):  # noqa: F811
    """Xen Orchestra's connector pointed at a slave: HOST_IS_SLAVE makes it
    log in at the master it names, and everything else follows there."""
    proc = subprocess.run(
        [xo_connector, "connect.mjs", pool[1].https_url, USER, PASSWORD],
        cwd=XO_DIR, capture_output=True, text=True, timeout=240)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"], "%s\nstderr: %s" % (out.get("error"),
                                          proc.stderr[-3000:])
    assert len(out["hosts"]) == 3
    master_ref = out["pool"]["master"]
    assert [h for h in out["hosts"] if h["ref"] == master_ref]


def test_slave_emergency_calls(pool):
    slave = XenAPI.Session(pool[1].https_url, ignore_ssl=True)
    secret = open(os.path.join(pool[1].data_dir, "ptoken")).read().strip()
    # The SDK has no wrapper for this login: the raw call, as XAPI's
    # own host-to-host code makes it.
    reply = xmlrpc.client.ServerProxy.__getattr__(
        slave, "session.slave_local_login")(secret)
    assert reply["Status"] == "Success"
    slave._session = reply["Value"]
    assert slave.xenapi.pool.is_slave(
        slave.xenapi.session.get_this_host(slave._session)) is True
    # Pointing a slave at the master it has is a no-op (no restart).
    assert slave.xenapi.pool.emergency_reset_master(host_address(0)) == ""
    reply = xmlrpc.client.ServerProxy.__getattr__(
        slave, "session.slave_local_login_with_password")(USER, PASSWORD)
    assert reply["Status"] == "Success"
    assert role_of(pool[1]) == "slave:" + host_address(0)


def test_restarted_slave_keeps_its_role(pool, master):
    pool[1].kill()
    pool[1].start()
    assert role_of(pool[1]) == "slave:" + host_address(0)
    assert failure(pool[1].session) == ["HOST_IS_SLAVE", host_address(0)]
    ref, host = by_address(master)[host_address(1)]
    assert master.host_metrics.get_live(host["metrics"]) is True


def test_forget_refuses_live_host_and_master(pool, master):
    ref, _ = by_address(master)[host_address(1)]
    assert failure(master.host.destroy, ref) == ["HOST_IS_LIVE", ref]
    me, _ = by_address(master)[host_address(0)]
    assert failure(master.host.destroy, me) == [
        "HOST_CANNOT_DESTROY_SELF", me]


def test_eject_makes_a_fresh_master(pool, master):
    ref, host = by_address(master)[host_address(2)]
    srs = [sr for sr in master.SR.get_all()
           if [master.PBD.get_host(p) for p in master.SR.get_PBDs(sr)]
           == [ref]]
    master.pool.eject(ref)
    pool[2].restart()
    assert sorted(by_address(master)) == [host_address(0), host_address(1)]
    assert not set(srs) & set(master.SR.get_all())
    assert all(p["host"] != ref for p in master.PIF.get_all_records().values())
    assert role_of(pool[2]) == "master"
    alone = pool[2].session().xenapi
    hosts = alone.host.get_all_records()
    assert [h["uuid"] for h in hosts.values()] == [host["uuid"]]
    assert alone.host.get_address(list(hosts)[0]) == host_address(2)
    assert len(alone.SR.get_by_name_label("Local storage")) == 1
    alone.session.logout()

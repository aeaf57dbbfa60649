"""
Moving the mastership, and XAPI's slave emergency mode, on one pool of
three real hosts (tests/support/pool.py), each test going on from where
the one before left it: a slave that starts while its master is down
serves only the emergency calls and local logins (everything else:
HOST_STILL_BOOTING; HTTP handlers 401, or 500 for the pool secret, doing
nothing) and leaves emergency mode once the master is back;
pool.designate_new_master as an operator asks it of the master; with
that new master killed, a slave's emergency_transition_to_master and
recover_slaves; and the killed master, back, becoming the new one's
slave.  Every write acknowledged before a move is there after it, as the
pool's etcd log holds them.
"""

import base64
import http.client
import os
import xmlrpc.client

import pytest
import XenAPI

from tests.support.api import failure, wait_until
from tests.support.etcd import needs_etcd
from tests.support.pool import SHORT_LEASE, PoolHosts, joined_pool, network, \
    pool_session
from tests.support.servers import PASSWORD, USER
from tests.test_pool_database import labels
from tests.test_pool_forwarding import local_sr
from tests.test_pool_join import by_address, role_of

pytestmark = [needs_etcd, pytest.mark.skipif(
    os.geteuid() != 0, reason="binds ports 80/443 on 127.0.x.y")]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from joined_pool(str(tmp_path_factory.mktemp("transition")), 3,
                           SHORT_LEASE)


def local_session(host):
    """root's local session on a host whose master may be gone (what xe
    uses in emergency mode)."""
    s = XenAPI.Session(host.https_url, ignore_ssl=True)
    reply = xmlrpc.client.ServerProxy.__getattr__(
        s, "session.slave_local_login_with_password")(USER, PASSWORD)
    assert reply["Status"] == "Success", reply
    s._session = reply["Value"]
    return s


def test_local_login_on_a_slave_checks_the_password(pool):
    s = XenAPI.Session(pool[2].https_url, ignore_ssl=True)
    reply = xmlrpc.client.ServerProxy.__getattr__(
        s, "session.slave_local_login_with_password")(USER, "wrong")
    assert reply["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"
    s = local_session(pool[2])
    assert s.xenapi.pool.is_slave(
        s.xenapi.session.get_this_host(s._session)) is True


def error_of(reply):
    assert reply["Status"] == "Failure", reply
    return reply["ErrorDescription"]


def http_status(address, method, path, headers=(), body=None):
    conn = http.client.HTTPConnection(address, 80, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_slave_without_its_master_is_in_emergency_mode(pool):
    slave = pool[2]
    x = pool[0].session().xenapi
    me = [r for r, h in x.host.get_all_records().items()
          if h["address"] == slave.address][0]
    sr = local_sr(x, me)
    vdis = x.SR.get_VDIs(sr)
    pool[0].stop()
    slave.stop()
    slave.spawn()
    slave.wait_ready(60, greeted=False)
    assert slave.in_emergency_mode() is True
    proxy = xmlrpc.client.ServerProxy(slave.http_url + "/")
    # A login, a pool session, and any other call: HOST_STILL_BOOTING.
    assert error_of(proxy.session.login_with_password(
        USER, PASSWORD, "1.0", "t")) == ["HOST_STILL_BOOTING"]
    with open(os.path.join(slave.data_dir, "ptoken")) as f:
        secret = f.read().strip()
    assert error_of(proxy.session.slave_login("OpaqueRef:NULL", secret)) \
        == ["HOST_STILL_BOOTING"]
    local = local_session(slave)
    try:
        # Local logins and the emergency calls are served...
        reply = proxy.pool.is_slave(local._session, "OpaqueRef:NULL")
        assert reply == {"Status": "Success", "Value": True}
        # ...nothing else, whatever the session.
        assert error_of(proxy.VM.get_all(local._session)) == \
            ["HOST_STILL_BOOTING"]
        # The HTTP handlers neither: no session can be checked...
        assert http_status(slave.address, "GET", "/export_raw_vdi?vdi=%s&"
                           "session_id=%s" % (vdis[0] if vdis else sr,
                                              local._session))[0] == 401
        basic = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode())
        assert http_status(slave.address, "GET", "/vm_rrd?uuid=x", [
            ("Authorization", "Basic " + basic.decode())])[0] == 401
        # ...and what the pool secret lets in is refused before it begins:
        # no disk made on the slave's own SR.
        status, body = http_status(
            slave.address, "PUT", "/import_raw_vdi?sr=" + sr,
            [("Cookie", "pool_secret=" + secret)], b"\0" * 65536)
        assert status == 500 and b"HOST_STILL_BOOTING" in body, body
    finally:
        proxy.session.local_logout(local._session)
    # The master back: the slave greets it and serves as a slave again.
    pool[0].start()
    wait_until(lambda: not slave.in_emergency_mode(), timeout=30,
               what="the slave out of emergency mode")
    assert error_of(proxy.session.login_with_password(
        USER, PASSWORD, "1.0", "t")) == ["HOST_IS_SLAVE", pool[0].address]
    y = pool_session(slave).xenapi
    x = pool[0].session().xenapi
    network(x, "after-emergency")
    wait_until(lambda: "after-emergency" in labels(y), what="replica")
    assert x.SR.get_VDIs(sr) == vdis


def test_designate_new_master(pool):
    x = pool[0].session().xenapi
    network(x, "before-designate")
    new_ref, new = by_address(x)[pool[1].address]
    assert x.pool.designate_new_master(new_ref) == ""
    PoolHosts.restart_together(pool)
    assert role_of(pool[1]) == "master"
    assert role_of(pool[0]) == role_of(pool[2]) == "slave:" + pool[1].address
    assert failure(pool[0].session) == ["HOST_IS_SLAVE", pool[1].address]
    y = pool[1].session().xenapi
    the_pool = y.pool.get_all()[0]
    assert y.pool.get_master(the_pool) == new_ref
    assert "before-designate" in labels(y)
    assert any(m["name"] == "POOL_MASTER_TRANSITION" and
               m["obj_uuid"] == new["uuid"]
               for m in y.message.get_all_records().values())
    # The old master is a slave of the new one: its writes arrive.
    network(y, "after-designate")
    for slave in (pool[0], pool[2]):
        z = pool_session(slave).xenapi
        wait_until(lambda: "after-designate" in labels(z),
                   what="replica of %s" % slave.address)
    # Both slaves said pool.hello to the new master.
    for slave in (pool[0], pool[2]):
        ref, host = by_address(y)[slave.address]
        wait_until(lambda: y.host_metrics.get_live(host["metrics"]),
                   what="%s live" % slave.address)
    # Designating the master itself changes nothing.
    assert y.pool.designate_new_master(new_ref) == ""


def test_emergency_transition_after_the_master_dies(pool):
    y = pool[1].session().xenapi
    network(y, "before-kill")
    pool[1].kill()
    survivor = local_session(pool[2]).xenapi
    assert failure(survivor.pool.emergency_reset_master,
                   "no-such-host.invalid") == ["HOST_NAME_INVALID",
                                               "no-such-host.invalid"]
    survivor.pool.emergency_transition_to_master()
    # It takes the mastership once the dead master's lease has expired.
    pool[2].restart(timeout=60)
    assert role_of(pool[2]) == "master"
    z = pool[2].session().xenapi
    assert "before-kill" in labels(z)
    me, _ = by_address(z)[pool[2].address]
    assert z.pool.get_master(z.pool.get_all()[0]) == me
    other, _ = by_address(z)[pool[0].address]
    assert z.pool.recover_slaves() == [other]
    pool[0].restart(timeout=60)
    assert role_of(pool[0]) == "slave:" + pool[2].address
    network(z, "after-recovery")
    w = pool_session(pool[0]).xenapi
    wait_until(lambda: "after-recovery" in labels(w), what="replica")


def test_a_returning_master_becomes_the_new_masters_slave(pool):
    """Last: the master killed in the test above comes back believing it
    is the master; it finds the new one and restarts as its slave."""
    z = pool[2].session().xenapi
    pool[1].spawn()
    pool[1].restart(timeout=60)
    assert role_of(pool[1]) == "slave:" + pool[2].address
    ref, host = by_address(z)[pool[1].address]
    wait_until(lambda: z.host_metrics.get_live(host["metrics"]),
               what="the old master live as a slave")
    x = pool_session(pool[1]).xenapi
    assert "before-kill" in labels(x)
    network(z, "after-return")
    wait_until(lambda: "after-return" in labels(x), what="replica")

"""
XAPI's slave emergency mode and a returning master, on three real hosts
(tests/support/pool.py): a slave that starts while its master is down
serves only the emergency calls and local logins (everything else:
HOST_STILL_BOOTING) and leaves emergency mode once the master is back; a
master killed while the pool moved on to another comes back as that
one's slave.
"""

import os
import xmlrpc.client

import pytest

from tests.support.api import wait_until
from tests.support.pool import (
    needs_pool_hosts, joined_pool, network, pool_session)
from tests.support.servers import PASSWORD, USER
from tests.test_pool_database import labels
from tests.test_pool_join import by_address, role_of
from tests.test_pool_transition import local_session

pytestmark = needs_pool_hosts


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    yield from joined_pool(str(tmp_path_factory.mktemp("emergency")), 3)


def error_of(reply):
    assert reply["Status"] == "Failure", reply
    return reply["ErrorDescription"]


def test_a_slave_without_its_master_is_in_emergency_mode(pool):
    slave = pool[2]
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
    finally:
        proxy.session.local_logout(local._session)
    # The master back: the slave greets it and serves as a slave again.
    pool[0].start()
    wait_until(lambda: not slave.in_emergency_mode(), timeout=30,
               what="the slave out of emergency mode")
    assert error_of(proxy.session.login_with_password(
        USER, PASSWORD, "1.0", "t")) == ["HOST_IS_SLAVE", pool[0].address]
    x = pool_session(slave).xenapi
    network(pool[0].session().xenapi, "after-emergency")
    wait_until(lambda: "after-emergency" in labels(x), what="replica")


def test_a_returning_master_becomes_the_new_masters_slave(pool):
    master = pool[0].session().xenapi
    network(master, "before-kill")
    pool[0].kill()
    survivor = local_session(pool[1]).xenapi
    survivor.pool.emergency_transition_to_master()
    pool[1].restart(timeout=60)
    assert role_of(pool[1]) == "master"
    y = pool[1].session().xenapi
    # The old master comes back believing it is the master: it finds the
    # new one and restarts as its slave.
    pool[0].spawn()
    pool[0].restart(timeout=60)
    assert role_of(pool[0]) == "slave:" + pool[1].address
    ref, host = by_address(y)[pool[0].address]
    wait_until(lambda: y.host_metrics.get_live(host["metrics"]),
               what="the old master live as a slave")
    x = pool_session(pool[0]).xenapi
    assert "before-kill" in labels(x)
    network(y, "after-return")
    wait_until(lambda: "after-return" in labels(x), what="replica")

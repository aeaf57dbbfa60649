"""
The daemon's HTTP and HTTPS listeners follow the host's management
address: a server bound to one loopback address of this run's net
(127.0.N.x, tests/support/pool.py) whose management PIF is given
another (PIF.reconfigure_ip, host-management-reconfigure) serves there
and no longer on the old one, while its local Unix socket serves on; an
address it cannot bind leaves it where it was.
"""

import os
import urllib.error
import urllib.request

import pytest
import XenAPI

from tests.support.api import wait_until
from tests.support.pool import host_address
from tests.support.servers import (
    PASSWORD, USER, RunningServer, insecure_context)
from tests.support.xe import ok, run_xe

FIRST, SECOND = host_address(30), host_address(31)
# An address of no interface here (TEST-NET-1): binding it fails.
ABSENT = "192.0.2.7"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("mgmtaddr"))
    server = RunningServer(os.path.join(base, "data"), bind=FIRST).start()
    yield server
    server.stop()


def answers(url):
    """Whether a server answers there (any HTTP status will do)."""
    try:
        urllib.request.urlopen(url, timeout=2, context=insecure_context()
                               if url.startswith("https") else None).read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def serving_on(server, address):
    return (answers("http://%s:%d/" % (address, server.http_port)),
            answers("https://%s:%d/" % (address, server.https_port)))


def moved(server, new, old):
    return serving_on(server, new) == (True, True) and \
        serving_on(server, old) == (False, False)


def session_on(server, address):
    s = XenAPI.Session("http://%s:%d/" % (address, server.http_port))
    s.xenapi.login_with_password(USER, PASSWORD, "1.0", "txxapi-tests")
    return s


def management_pif(x):
    return [p for p in x.PIF.get_all() if x.PIF.get_management(p)][0]


def test_listeners_follow_the_management_address(server):
    x = session_on(server, FIRST).xenapi
    pif = management_pif(x)
    host = x.PIF.get_host(pif)
    x.PIF.reconfigure_ip(pif, "Static", SECOND, "255.0.0.0", "", "")
    assert x.host.get_address(host) == SECOND
    wait_until(lambda: moved(server, SECOND, FIRST), timeout=10,
               what="the listeners on " + SECOND)
    # The local socket stays.
    assert ok(server, "host-param-get", "uuid=" + x.host.get_uuid(host),
              "param-name=address", local=True, auth=False) == SECOND + "\n"
    # One it cannot bind: the listeners stay where they are.
    y = session_on(server, SECOND).xenapi
    y.PIF.reconfigure_ip(pif, "Static", ABSENT, "255.255.255.0", "", "")
    wait_until(lambda: "cannot listen on " + ABSENT in server.read_log(),
               timeout=10, what="the refused address in the log")
    assert serving_on(server, SECOND) == (True, True)
    # host-management-reconfigure to another PIF with the first address.
    ok(server, "pif-scan", "host-uuid=" + y.host.get_uuid(host),
       local=True, auth=False)
    eth1 = [p for p in y.PIF.get_all() if y.PIF.get_device(p) == "eth1"][0]
    y.PIF.reconfigure_ip(eth1, "Static", FIRST, "255.0.0.0", "", "")
    rc, out, err = run_xe(server, "host-management-reconfigure",
                          "pif-uuid=" + y.PIF.get_uuid(eth1), local=True,
                          auth=False)
    assert (rc, err) == (0, ""), err
    wait_until(lambda: moved(server, FIRST, SECOND), timeout=10,
               what="the listeners back on " + FIRST)
    assert session_on(server, FIRST).xenapi.host.get_address(host) == FIRST

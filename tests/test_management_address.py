"""
The daemon's HTTP, HTTPS and NBD listeners follow the host's management
address: a server bound to one loopback address of this run's net
(127.0.N.x, tests/support/pool.py) whose management PIF is given
another (PIF.reconfigure_ip, host-management-reconfigure) serves there
and no longer on the old one, while its local Unix socket serves on; an
address it cannot bind leaves it where it was.  Its self-signed
certificate is issued again, on the same key, for the new address.  A
restart with the same --bind listens on the address the database
records, or on --bind's if that one cannot be had.
"""

import os
import socket
import ssl
import struct
import urllib.error
import urllib.request

import pytest
import XenAPI
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.logger import capturedLogs

from tests.support.api import wait_until
from tests.support.pool import host_address
from tests.support.servers import (
    PASSWORD, USER, RunningServer, free_port, insecure_context)
from tests.support.servers import recv_exactly as recv
from tests.support.xe import ok, run_xe
from txxapi.pool.database import PoolDatabase, write_config

FIRST, SECOND = host_address(30), host_address(31)
OPT_STARTTLS = 5
# An address of no interface here (TEST-NET-1): binding it fails.
ABSENT = "192.0.2.7"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("mgmtaddr"))
    server = RunningServer(os.path.join(base, "data"), bind=FIRST,
                           nbd_port=free_port()).start()
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


def nbd_listens(server, address):
    try:
        socket.create_connection((address, server.nbd_port), 2).close()
    except OSError:
        return False
    return True


def serving_on(server, address):
    return (answers("http://%s:%d/" % (address, server.http_port)),
            answers("https://%s:%d/" % (address, server.https_port)),
            nbd_listens(server, address))


def certificate(server, address):
    """The certificate HTTPS serves there."""
    return x509.load_pem_x509_certificate(ssl.get_server_certificate(
        (address, server.https_port), timeout=5).encode())


def nbd_certificate(server, address):
    """The certificate NBD's STARTTLS serves there (a network has the
    nbd purpose)."""
    with socket.create_connection((address, server.nbd_port), 5) as sock:
        greeting = recv(sock, 18)
        assert greeting[:8] == b"NBDMAGIC", greeting
        sock.sendall(struct.pack(">I", 3))       # fixed newstyle, no zeroes
        sock.sendall(greeting[8:16] + struct.pack(">II", OPT_STARTTLS, 0))
        magic, option, reply, length = struct.unpack(">QIII", recv(sock, 20))
        assert (magic, option, reply, length) == \
            (0x3e889045565a9, OPT_STARTTLS, 1, 0)
        with insecure_context().wrap_socket(sock) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def named_addresses(cert):
    return {str(a) for a in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress)}


def public_key(cert):
    return cert.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)


def moved(server, new, old):
    return serving_on(server, new) == (True, True, True) and \
        serving_on(server, old) == (False, False, False)


def session_on(server, address):
    s = XenAPI.Session("http://%s:%d/" % (address, server.http_port))
    s.xenapi.login_with_password(USER, PASSWORD, "1.0", "txxapi-tests")
    return s


def management_pif(x):
    return [p for p in x.PIF.get_all() if x.PIF.get_management(p)][0]


def management_host(x):
    return x.PIF.get_host(management_pif(x))


def test_listeners_follow_the_management_address(server):
    x = session_on(server, FIRST).xenapi
    # NBD serves nobody until a network has an NBD purpose.
    x.network.add_purpose(x.network.get_all()[0], "nbd")
    first_cert = certificate(server, FIRST)
    assert FIRST in named_addresses(first_cert)
    assert nbd_certificate(server, FIRST) == first_cert
    pif = management_pif(x)
    host = x.PIF.get_host(pif)
    x.PIF.reconfigure_ip(pif, "Static", SECOND, "255.0.0.0", "", "")
    assert x.host.get_address(host) == SECOND
    wait_until(lambda: moved(server, SECOND, FIRST), timeout=10,
               what="the listeners on " + SECOND)
    # The certificate names the new address, not the old, on its key.
    cert = certificate(server, SECOND)
    assert SECOND in named_addresses(cert)
    assert FIRST not in named_addresses(cert)
    assert public_key(cert) == public_key(first_cert)
    assert nbd_certificate(server, SECOND) == cert
    # The local socket stays.
    assert ok(server, "host-param-get", "uuid=" + x.host.get_uuid(host),
              "param-name=address", local=True, auth=False) == SECOND + "\n"
    # One it cannot bind: the listeners stay where they are.
    y = session_on(server, SECOND).xenapi
    y.PIF.reconfigure_ip(pif, "Static", ABSENT, "255.255.255.0", "", "")
    wait_until(lambda: "cannot listen on " + ABSENT in server.read_log(),
               timeout=10, what="the refused address in the log")
    assert serving_on(server, SECOND) == (True, True, True)
    assert ABSENT not in named_addresses(certificate(server, SECOND))
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
    names = named_addresses(certificate(server, FIRST))
    assert FIRST in names and SECOND not in names


def restarted(server):
    """The server stopped and started again with the same command line
    (--bind FIRST); waited for where it should listen by the caller."""
    server.stop()
    server.spawn()


def test_a_restart_listens_on_the_recorded_address(server):
    x = session_on(server, FIRST).xenapi
    host = management_host(x)
    x.PIF.reconfigure_ip(management_pif(x), "Static", SECOND, "255.0.0.0",
                         "", "")
    wait_until(lambda: moved(server, SECOND, FIRST), timeout=10,
               what="the listeners on " + SECOND)
    restarted(server)
    wait_until(lambda: server.proc.poll() is not None or
               moved(server, SECOND, FIRST), timeout=30,
               what="the restarted server on " + SECOND)
    assert server.proc.poll() is None, server.read_log()
    assert session_on(server, SECOND).xenapi.host.get_address(host) == \
        SECOND
    with open(server.log_path, errors="replace") as f:
        assert "listening on %s, the address the database records (not %s)" \
            % (SECOND, FIRST) in f.read()
    assert SECOND in named_addresses(certificate(server, SECOND))


def test_a_recorded_address_it_cannot_bind_falls_back_to_bind(server):
    x = session_on(server, SECOND).xenapi
    x.PIF.reconfigure_ip(management_pif(x), "Static", ABSENT,
                         "255.255.255.0", "", "")
    assert serving_on(server, SECOND) == (True, True, True)
    restarted(server)
    wait_until(lambda: server.proc.poll() is not None or
               moved(server, FIRST, SECOND), timeout=30,
               what="the restarted server back on --bind " + FIRST)
    assert server.proc.poll() is None, server.read_log()
    with open(server.log_path, errors="replace") as f:
        assert "cannot listen on the recorded address " + ABSENT in f.read()
    # The certificate names where it listens.
    names = named_addresses(certificate(server, FIRST))
    assert FIRST in names and ABSENT not in names


def test_a_pooled_host_says_its_etcd_urls_stay(tmp_path):
    """Moving etcd's URLs is not done: a pooled host whose address moves
    says so (alone in its pool, it has none and says nothing)."""
    alone = PoolDatabase(str(tmp_path), reactor=None)
    with capturedLogs() as logs:
        alone.address_moved(SECOND)
    assert not logs
    write_config(str(tmp_path), {"member": True, "address": FIRST,
                                 "clients": []})
    pooled = PoolDatabase(str(tmp_path), reactor=None)
    with capturedLogs() as logs:
        pooled.address_moved(FIRST)
        pooled.address_moved(SECOND)
    assert [e["old"] for e in logs] == [FIRST]

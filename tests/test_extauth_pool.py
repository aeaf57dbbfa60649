"""
Active Directory on a pool of two real hosts (tests/support/pool.py)
against a real Samba DC (tests/support/samba_dc.py):
pool.enable_external_auth has every host join the domain with a computer
account of its own (the master's call forwarded to each host), all or
none: a host that fails rolls back those before it; AD users log in
through the master and their calls reach the slave; a slave answers
directory look-ups itself, also after a restart; an ejected host forgets
the domain, and joins an AD pool again only once it has joined the
domain itself; pool.disable_external_auth undoes every host, those it
can reach when one cannot be.
"""

import os

import pytest

from tests.support import samba_dc
from tests.support.pool import PoolHosts, pool_session
from tests.support.servers import PASSWORD, USER
from tests.test_extauth import failure, session_of
from tests.test_extauth_ad import SID, alive, wait_for

pytestmark = pytest.mark.skipif(not samba_dc.available(),
                                reason="needs root and Samba")

ALICE = "Al1ce-Pass!"
ADMIN = samba_dc.ADMIN
DOMAIN = samba_dc.DOMAIN


def hostname(index):
    # Distinct host names: each names the host's computer account.
    return "txpool%d" % index


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("adpool"))
    with samba_dc.running_dc(os.path.join(base, "dc"), [("alice", ALICE)],
                             [("inner", ["alice"]), ("outer", ["inner"])]) \
            as dc:
        hosts = PoolHosts(base, 2)
        for i, host in enumerate(hosts):
            host.extra_args += samba_dc.server_args(dc) + [
                "--simulator-hostname", hostname(i)]
        try:
            hosts[0].start()
            # The slave trusts another CA than the DC's at first: its
            # part of the pool's enable fails.
            wrong_ca = os.path.join(hosts[0].data_dir, "xapi-ssl.pem")
            hosts[1].extra_args += ["--ad-ca-file", wrong_ca]
            hosts[1].start()
            hosts.join(hosts[1], hosts[0])
            yield dc, hosts
        finally:
            hosts.stop()


def records(x):
    return {f["hostname"]: (ref, f) for ref, f in
            x.host.get_all_records().items()}


def test_pool_joins_the_domain(world):
    dc, hosts = world
    master, slave = hosts
    x = session_of(master, USER, PASSWORD).xenapi
    pool = x.pool.get_all()[0]
    by_name = records(x)
    master_ref, slave_ref = by_name[hostname(0)][0], by_name[hostname(1)][0]

    # The slave fails; the master, enabled first, is rolled back, its
    # computer account gone again.
    details = failure(x.pool.enable_external_auth, pool, ADMIN, DOMAIN, "AD")
    assert details[:2] == ["POOL_AUTH_ENABLE_FAILED_INVALID_TRUSTED_CERTS",
                           slave_ref]
    for ref in (master_ref, slave_ref):
        assert x.host.get_external_auth_type(ref) == ""
        assert x.host.get_external_auth_configuration(ref) == {}
    assert not machines(dc)

    # With the DC's CA: both hosts joined, each with its own account.
    slave.stop()
    slave.extra_args = slave.extra_args[:-2]
    slave.start()
    x.pool.enable_external_auth(pool, ADMIN, DOMAIN, "AD")
    assert failure(x.pool.enable_external_auth, pool, ADMIN, DOMAIN,
                   "AD") == ["POOL_AUTH_ALREADY_ENABLED", master_ref]
    for ref in (master_ref, slave_ref):
        assert x.host.get_external_auth_type(ref) == "AD"
        assert x.host.get_external_auth_service_name(ref) == DOMAIN
    assert machines(dc) == {"TXPOOL0$", "TXPOOL1$"}
    assert x.host.get_external_auth_configuration(slave_ref)[
        "netbios_name"] == "TXPOOL1"

    # A user of the domain: the slave sends logins to the master; calls
    # of the master's session reach the slave with the user's roles.
    outer = x.auth.get_subject_identifier("outer")
    subject = x.subject.create({"subject_identifier": outer,
                                "other_config": {}})
    x.subject.add_to_roles(subject, x.role.get_by_name_label("read-only")[0])
    assert failure(session_of, slave, "alice", ALICE) == [
        "HOST_IS_SLAVE", master.address]
    alice = session_of(master, "alice", ALICE)
    assert alice.xenapi.host.get_servertime(slave_ref)
    assert failure(alice.xenapi.host.disable_external_auth, slave_ref,
                   {})[0] == "RBAC_PERMISSION_DENIED"
    sid = x.auth.get_subject_identifier("alice")
    assert SID.match(sid)
    assert_directory_on(slave, sid, outer)

    # An ejected host forgets the domain (its account stays, as XAPI's).
    x.pool.eject(slave_ref)
    slave.restart()
    own = slave.session().xenapi
    assert own.host.get_external_auth_type(own.host.get_all()[0]) == ""
    assert not os.path.exists(os.path.join(slave.data_dir,
                                           "extauth-ad.secret"))
    assert machines(dc) == {"TXPOOL0$", "TXPOOL1$"}

    # It joins the AD pool again once it has joined the domain itself
    # (its old account taken over).
    assert failure(own.pool.join, master.address, USER, PASSWORD) == [
        "POOL_JOINING_EXTERNAL_AUTH_MISMATCH"]
    own.pool.enable_external_auth(own.pool.get_all()[0], ADMIN,
                                  DOMAIN.upper(), "AD")
    hosts.join(slave, master)
    slave_ref = records(x)[hostname(1)][0]
    assert x.host.get_external_auth_type(slave_ref) == "AD"
    assert_directory_on(slave, sid, outer)

    # Disabling reaches every host whatever fails: a slave that cannot
    # be reached is named, the master is disabled all the same; once
    # back, the slave is disabled too.
    slave.stop()
    details = failure(x.pool.disable_external_auth, pool, ADMIN)
    assert details[:2] == ["POOL_AUTH_DISABLE_FAILED", slave_ref]
    assert "CANNOT_CONTACT_HOST" in details[2]
    assert x.host.get_external_auth_type(master_ref) == ""
    assert x.host.get_external_auth_type(slave_ref) == "AD"
    assert machines(dc) == {"TXPOOL1$"}
    # XAPI's alert names the slave left behind.
    x.pool.detect_nonhomogeneous_external_auth(pool)
    [alert] = [m for m in x.message.get_all_records().values()
               if m["name"] == "EXTAUTH_IN_POOL_IS_NON_HOMOGENEOUS"]
    assert alert["obj_uuid"] == x.host.get_uuid(slave_ref)
    assert alert["priority"] == "2" or alert["priority"] == 2
    assert "host_external_auth_type=AD" in alert["body"]
    # Still on the domain after its restart, it answers the directory
    # itself, with its own account.
    slave.start()
    assert_directory_on(slave, sid, outer)
    x.pool.disable_external_auth(pool, ADMIN)
    for ref in (master_ref, slave_ref):
        assert x.host.get_external_auth_type(ref) == ""
    assert not machines(dc)
    wait_for(lambda: not alive(master, alice._session))
    assert failure(session_of, master, "alice", ALICE)[0] == \
        "SESSION_AUTHENTICATION_FAILED"


def assert_directory_on(host, sid, group):
    """The host resolves alice and her groups itself."""
    on_host = pool_session(host).xenapi
    assert on_host.auth.get_subject_identifier("alice") == sid
    assert group in on_host.auth.get_group_membership(sid)


def machines(dc):
    return {name for name in samba_dc.computers(dc)
            if name.startswith("TXPOOL")}

"""
External authentication with auth_type AD against a real Samba AD domain
controller (tests/support/samba_dc.py): domain controllers found through
its DNS, LDAP over StartTLS checked against the test's CA, users bound
as themselves, SIDs, nested groups through tokenGroups, a disabled
account, and the joined domain surviving a restart.
"""

import os
import re
import signal
import threading
import time
import xmlrpc.client

import pytest
import XenAPI

from tests.support import samba_dc
from tests.support.servers import LOGIN_FAILURE_DELAY, PASSWORD, USER
from tests.test_extauth import failure, session_of

pytestmark = pytest.mark.skipif(not samba_dc.available(),
                                reason="needs root and Samba")

SID = re.compile(r"^S-1-5-21-\d+-\d+-\d+-\d+$")
ALICE, BOB, CAROL = "Al1ce-Pass!", "B0b-Pass!!", "C4rol-Pass!"
DAVE, ERIN = "D4ve-Pass!!", "Er1n-Pass!!"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("ad"))
    with samba_dc.serving(
            base, [("alice", ALICE), ("bob", BOB, True), ("carol", CAROL),
                   ("dave", DAVE)],
            [("inner", ["alice", "dave"]), ("outer", ["inner"])],
            ["--session-revalidation-interval", "1"]) as (dc, server):
        yield server, dc


def test_certificates_are_checked(world):
    """A CA that did not sign the DC's certificate: no connection."""
    from txxapi.extauth import ad
    server, dc = world
    directory = ad.ADDirectory(ad.Settings(
        dns_server=dc.address,
        ca_file=os.path.join(server.data_dir, "xapi-ssl.pem")))
    with pytest.raises(ad.ADError) as e:
        directory.join(samba_dc.DOMAIN, "Administrator",
                       samba_dc.ADMIN_PASSWORD, "TXXAPITEST")
    assert e.value.tag == "INVALID_TRUSTED_CERTS"


def test_active_directory(world):
    server, dc = world
    root = session_of(server, USER, PASSWORD)
    x = root.xenapi
    pool = x.pool.get_all()[0]
    host = x.host.get_all()[0]
    admin = samba_dc.ADMIN

    details = failure(x.pool.enable_external_auth, pool,
                      dict(admin, **{"pass": "wrong"}), samba_dc.DOMAIN, "AD")
    assert details[:2] == ["POOL_AUTH_ENABLE_FAILED_WRONG_CREDENTIALS", host]
    assert failure(x.pool.enable_external_auth, pool, admin,
                   "nowhere.example.test", "AD")[:2] == [
        "POOL_AUTH_ENABLE_FAILED_DOMAIN_LOOKUP_FAILED", host]
    assert x.host.get_external_auth_type(host) == ""
    x.pool.enable_external_auth(pool, admin, samba_dc.DOMAIN, "AD")
    assert x.host.get_external_auth_type(host) == "AD"
    configuration = x.host.get_external_auth_configuration(host)
    machine = configuration.pop("netbios_name")
    assert int(configuration.pop("machine_pwd_last_change_time")) > 0
    assert configuration == {"domain": samba_dc.DOMAIN,
                             "user": "Administrator",
                             "workgroup": samba_dc.WORKGROUP}
    # The join made this host's computer account, as winbind's does.
    assert machine + "$" in samba_dc.computers(dc)
    # Later XAPIs switch a joined pool to LDAPS; this interface version
    # has no such message.
    for name in ("pool.external_auth_set_ldaps",
                 "Async.pool.external_auth_set_ldaps"):
        answer = getattr(xmlrpc.client.ServerProxy(server.http_url), name)(
            root._session, pool, True)
        assert answer["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", name]

    # Names in each form AD knows them by, and nested groups.
    alice = x.auth.get_subject_identifier("alice")
    assert SID.match(alice)
    assert x.auth.get_subject_identifier("CORP\\alice") == alice
    assert x.auth.get_subject_identifier(
        "alice@" + samba_dc.DOMAIN) == alice
    inner = x.auth.get_subject_identifier("inner")
    outer = x.auth.get_subject_identifier("outer")
    groups = x.auth.get_group_membership(alice)
    assert inner in groups and outer in groups
    assert failure(x.auth.get_subject_identifier, "nobody") == [
        "SUBJECT_CANNOT_BE_RESOLVED"]
    info = x.auth.get_subject_information_from_identifier(alice)
    assert info["subject-name"] == "CORP\\alice"
    assert info["subject-is-group"] == "false"
    assert info["subject-account-disabled"] == "false"
    bob = x.auth.get_subject_identifier("bob")
    assert x.auth.get_subject_information_from_identifier(bob)[
        "subject-account-disabled"] == "true"
    assert x.auth.get_subject_information_from_identifier(outer)[
        "subject-is-group"] == "true"

    # alice comes in through the outer group, which holds vm-operator.
    [vm_operator] = x.role.get_by_name_label("vm-operator")
    outer_subject = x.subject.create({"subject_identifier": outer,
                                      "other_config": {}})
    x.subject.add_to_roles(outer_subject, vm_operator)
    bob_subject = x.subject.create({"subject_identifier": bob,
                                    "other_config": {}})
    x.subject.add_to_roles(bob_subject, vm_operator)
    for name in ("alice@" + samba_dc.REALM, "CORP\\alice", "alice"):
        s = session_of(server, name, ALICE)
        me = s.xenapi.session.get_record(s._session)
        assert (me["auth_user_sid"], me["subject"], me["auth_user_name"],
                me["is_local_superuser"]) == (
                    alice, outer_subject, "CORP\\alice", False)
        assert failure(s.xenapi.host.set_name_label, host, "no")[0] == \
            "RBAC_PERMISSION_DENIED"
        s.xenapi.session.logout()
    # Each refusal waits out the brute-force delay first, as a local
    # one does.
    assert delayed_failure(session_of, server, "alice", "wrong") == [
        "SESSION_AUTHENTICATION_FAILED", "alice", "invalid credentials"]
    assert delayed_failure(session_of, server, "bob", BOB) == [
        "SESSION_AUTHENTICATION_FAILED", "bob", "account disabled"]
    assert delayed_failure(session_of, server, "carol", CAROL)[:2] == [
        "SESSION_AUTHORIZATION_FAILED", "carol"]

    # The domain stays joined across a restart: the computer account's
    # password is in a file of its own that only the server reads; the
    # join account's is in no file at all.
    server.stop()
    secret = os.path.join(server.data_dir, "extauth-ad.secret")
    assert os.stat(secret).st_mode & 0o777 == 0o600
    for top, _, files in os.walk(server.data_dir):
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                assert samba_dc.ADMIN_PASSWORD.encode() not in f.read()
    server.start()
    root = session_of(server, USER, PASSWORD)
    x = root.xenapi
    s = session_of(server, "alice", ALICE)
    assert s.xenapi.session.get_auth_user_sid(s._session) == alice

    # Leaving with a wrong account: disabled all the same, and said so;
    # the computer account stays in the domain.
    assert failure(x.pool.disable_external_auth, pool,
                   dict(admin, **{"pass": "wrong"}))[:2] == [
        "POOL_AUTH_DISABLE_FAILED_WRONG_CREDENTIALS", host]
    assert x.host.get_external_auth_type(host) == ""
    assert not os.path.exists(secret)
    assert machine + "$" in samba_dc.computers(dc)
    with pytest.raises(XenAPI.Failure):
        session_of(server, "alice", ALICE)

    # Joined again (the account is taken over), then left with an account
    # allowed to: the computer account is gone.
    x.pool.enable_external_auth(pool, admin, samba_dc.DOMAIN, "AD")
    s = session_of(server, "alice", ALICE)
    assert s.xenapi.session.get_auth_user_sid(s._session) == alice
    x.pool.disable_external_auth(pool, admin)
    assert x.host.get_external_auth_configuration(host) == {}
    assert machine + "$" not in samba_dc.computers(dc)


def delayed_failure(fn, *args):
    started = time.monotonic()
    details = failure(fn, *args)
    assert time.monotonic() - started >= LOGIN_FAILURE_DELAY
    return details


def test_a_frozen_controller_stalls_no_one_else(world):
    """An AD login waits on a controller that stopped answering (its
    process stopped) while root logs in and calls go on; once it
    answers again the login completes."""
    server, dc = world
    x = session_of(server, USER, PASSWORD).xenapi
    pool = x.pool.get_all()[0]
    x.pool.enable_external_auth(pool, samba_dc.ADMIN, samba_dc.DOMAIN, "AD")
    try:
        subject = x.subject.create({
            "subject_identifier": x.auth.get_subject_identifier("alice"),
            "other_config": {}})
        x.subject.add_to_roles(subject,
                               x.role.get_by_name_label("read-only")[0])
        outcome = []
        os.killpg(dc.proc.pid, signal.SIGSTOP)
        try:
            waiting = threading.Thread(target=lambda: outcome.append(
                session_of(server, "alice", ALICE)))
            waiting.start()
            for _ in range(5):
                other = session_of(server, USER, PASSWORD)
                assert other.xenapi.VM.get_all()
                other.xenapi.session.logout()
            assert waiting.is_alive() and not outcome
        finally:
            os.killpg(dc.proc.pid, signal.SIGCONT)
        waiting.join(30)
        assert outcome and outcome[0].xenapi.session.get_auth_user_sid(
            outcome[0]._session) == x.subject.get_subject_identifier(subject)
        x.subject.destroy(subject)
    finally:
        x.pool.disable_external_auth(pool, samba_dc.ADMIN)


def test_sessions_are_revalidated(world):
    """A user disabled in the directory loses the session within the
    revalidation interval (1 s here), and the subject's details follow;
    so does one removed from it; disabling external authentication ends
    the others'."""
    server, dc = world
    x = session_of(server, USER, PASSWORD).xenapi
    pool = x.pool.get_all()[0]
    admin = samba_dc.ADMIN
    x.pool.enable_external_auth(pool, admin, samba_dc.DOMAIN, "AD")
    try:
        [vm_operator] = x.role.get_by_name_label("vm-operator")
        subjects = {}
        for name in ("carol", "alice"):
            sid = x.auth.get_subject_identifier(name)
            subjects[name] = x.subject.create(
                {"subject_identifier": sid, "other_config": {}})
            x.subject.add_to_roles(subjects[name], vm_operator)
        carol = session_of(server, "carol", CAROL)._session
        alice = session_of(server, "alice", ALICE)._session
        # A user made for this, let in, then removed from the directory.
        dc.tool("user", "create", "erin", ERIN)
        subjects["erin"] = x.subject.create({
            "subject_identifier": x.auth.get_subject_identifier("erin"),
            "other_config": {}})
        x.subject.add_to_roles(subjects["erin"], vm_operator)
        erin = session_of(server, "erin", ERIN)._session
        dc.tool("user", "delete", "erin")
        wait_for(lambda: not alive(server, erin))
        x.subject.destroy(subjects.pop("erin"))
        dc.tool("user", "disable", "carol")
        try:
            wait_for(lambda: not alive(server, carol))
            # The details are refreshed on the pass after the directory
            # says so, which may come just after the session's end.
            wait_for(lambda: x.subject.get_other_config(subjects["carol"])[
                "subject-account-disabled"] == "true")
            assert alive(server, alice)
        finally:
            dc.tool("user", "enable", "carol")
        # Settled before the next test (a refresh changes subjects).
        wait_for(lambda: x.subject.get_other_config(subjects["carol"])[
            "subject-account-disabled"] == "false")
    finally:
        x.pool.disable_external_auth(pool, admin)
    wait_for(lambda: not alive(server, alice))


def test_groups_are_cached(world):
    """A user's groups from the last login let them in again without the
    directory (removed from a group, dave still logs in), until a
    subject changes; a refusal is always the directory's (put back in
    the group, he is let in at once)."""
    server, dc = world
    x = session_of(server, USER, PASSWORD).xenapi
    pool = x.pool.get_all()[0]
    x.pool.enable_external_auth(pool, samba_dc.ADMIN, samba_dc.DOMAIN, "AD")
    try:
        sid = x.auth.get_subject_identifier("outer")
        found = x.subject.get_all_records_where(
            'field "subject_identifier" = "%s"' % sid)
        outer = list(found)[0] if found else x.subject.create(
            {"subject_identifier": sid, "other_config": {}})
        roles = x.subject.get_roles(outer)
        [read_only] = x.role.get_by_name_label("read-only")
        if read_only not in roles:
            x.subject.add_to_roles(outer, read_only)
        session_of(server, "dave", DAVE).xenapi.session.logout()
        dc.tool("group", "removemembers", "inner", "dave")
        try:
            session_of(server, "dave", DAVE).xenapi.session.logout()
            [vm_admin] = x.role.get_by_name_label("vm-admin")
            if vm_admin in roles:
                x.subject.remove_from_roles(outer, vm_admin)
            else:
                x.subject.add_to_roles(outer, vm_admin)
            assert failure(session_of, server, "dave", DAVE)[:2] == [
                "SESSION_AUTHORIZATION_FAILED", "dave"]
        finally:
            dc.tool("group", "addmembers", "inner", "dave")
        session_of(server, "dave", DAVE).xenapi.session.logout()
        # A subject of his own without roles: the group's still count.
        own = x.subject.create({
            "subject_identifier": x.auth.get_subject_identifier("dave"),
            "other_config": {}})
        try:
            for _ in range(2):
                s = session_of(server, "dave", DAVE)
                assert s.xenapi.VM.get_all()
                s.xenapi.session.logout()
        finally:
            x.subject.destroy(own)
    finally:
        x.pool.disable_external_auth(pool, samba_dc.ADMIN)


def alive(server, ref):
    """Without the SDK's Session, which logs in again on SESSION_INVALID."""
    answer = xmlrpc.client.ServerProxy(server.http_url).session.get_uuid(
        ref, ref)
    if answer["Status"] == "Success":
        return True
    assert answer["ErrorDescription"][0] == "SESSION_INVALID"
    return False


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.2)


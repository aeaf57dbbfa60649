"""
External authentication with auth_type PAM against a running server:
local accounts and groups the test creates (removed after), passwords in
the server's passwd file, identities through NSS.  Enabling and its
errors, the auth.* look-ups, subjects and their roles, and logins of
users let in directly or through a group.  Needs root (useradd).
"""

import os
import pwd
import re
import subprocess
import uuid
import xmlrpc.client

import pytest
import XenAPI

from tests.support.servers import PASSWORD, USER, RunningServer, sha512_crypt

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creating accounts needs root")


class Accounts:
    """Throw-away local users and groups, and their passwords."""

    def __init__(self):
        self.tag = uuid.uuid4().hex[:6]
        self.users, self.groups, self.passwords = [], [], {}

    def group(self, name):
        name = "tx%s%s" % (name, self.tag)
        subprocess.run(["groupadd", name], check=True)
        self.groups.append(name)
        return name

    def user(self, name, groups=()):
        name = "tx%s%s" % (name, self.tag)
        cmd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        if groups:
            cmd += ["-G", ",".join(groups)]
        subprocess.run(cmd + [name], check=True)
        self.users.append(name)
        self.passwords[name] = "pw-%s" % uuid.uuid4().hex[:10]
        return name

    def server(self, base):
        """A server started on a passwd file of root and these users."""
        passwd = os.path.join(base, "passwd")
        with open(passwd, "w") as f:
            f.write("%s:%s\n" % (USER, sha512_crypt(PASSWORD)))
            for name, password in self.passwords.items():
                f.write("%s:%s\n" % (name, sha512_crypt(password)))
        server = RunningServer(os.path.join(base, "data"),
                               passwd_file=passwd)
        server.start()
        return server

    def remove(self):
        for user in self.users:
            subprocess.run(["userdel", user], check=False)
        for group in self.groups:
            subprocess.run(["groupdel", group], check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    accounts = Accounts()
    base = str(tmp_path_factory.mktemp("extauth"))
    try:
        readers = accounts.group("readers")
        admin = accounts.user("admin")
        reader = accounts.user("reader", [readers])
        stranger = accounts.user("stranger")
        server = accounts.server(base)
        try:
            yield server, accounts, dict(admin=admin, reader=reader,
                                         stranger=stranger, readers=readers)
        finally:
            server.stop()
    finally:
        accounts.remove()


def session_of(server, user, password):
    s = XenAPI.Session(server.http_url)
    s.xenapi.login_with_password(user, password, "1.0", "extauth-test")
    return s


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def test_pam_external_auth(world):
    server, accounts, who = world
    pw = accounts.passwords
    root = session_of(server, USER, PASSWORD)
    x = root.xenapi
    pool = x.pool.get_all()[0]
    host = x.host.get_all()[0]

    # Without external auth every local account is a local superuser.
    before = session_of(server, who["admin"], pw[who["admin"]])
    assert before.xenapi.session.get_is_local_superuser(before._session)
    assert failure(x.auth.get_subject_identifier, who["admin"]) == [
        "AUTH_IS_DISABLED"]

    assert failure(x.pool.enable_external_auth, pool, {}, "", "LDAP") == [
        "AUTH_UNKNOWN_TYPE", "LDAP"]
    assert failure(x.pool.enable_external_auth, pool, {}, "corp", "AD") == [
        "POOL_AUTH_ENABLE_FAILED", host, "enable requires user"]
    assert x.host.get_external_auth_type(host) == ""
    x.pool.enable_external_auth(pool, {}, "local", "PAM")
    assert x.host.get_external_auth_type(host) == "PAM"
    assert x.host.get_external_auth_service_name(host) == "local"
    assert failure(x.pool.enable_external_auth, pool, {}, "", "PAM") == [
        "POOL_AUTH_ALREADY_ENABLED", host]
    assert failure(x.host.enable_external_auth, host, {}, "", "PAM") == [
        "AUTH_ALREADY_ENABLED", "PAM", "local"]
    # The session opened before stays a superuser's.
    assert before.xenapi.session.get_is_local_superuser(before._session)

    # The directory.
    uid = pwd.getpwnam(who["admin"]).pw_uid
    admin_sid = x.auth.get_subject_identifier(who["admin"])
    assert admin_sid == "u%d" % uid
    readers_sid = x.auth.get_subject_identifier(who["readers"])
    assert re.match(r"^g\d+$", readers_sid)
    assert failure(x.auth.get_subject_identifier, "txnobody" + accounts.tag
                   ) == ["SUBJECT_CANNOT_BE_RESOLVED"]
    info = x.auth.get_subject_information_from_identifier(admin_sid)
    assert info["subject-name"] == who["admin"]
    assert info["subject-is-group"] == "false"
    reader_sid = x.auth.get_subject_identifier(who["reader"])
    assert readers_sid in x.auth.get_group_membership(reader_sid)
    assert failure(x.auth.get_group_membership, "u999999999") == [
        "SUBJECT_CANNOT_BE_RESOLVED"]

    # Nobody may log in without a subject, nor with a subject without
    # roles; the wrong password is an authentication failure.
    details = failure(session_of, server, who["stranger"],
                      pw[who["stranger"]])
    assert details[:2] == ["SESSION_AUTHORIZATION_FAILED", who["stranger"]]
    assert re.match(
        r"^Subject %s \(identifier u\d+, from HTTP request from Internet "
        r"with User-Agent: [^)]*\) has no access rights in this pool$"
        % who["stranger"], details[2]), details
    assert failure(session_of, server, who["admin"], "wrong") == [
        "SESSION_AUTHENTICATION_FAILED", who["admin"],
        "Authentication failure"]
    admin_subject = x.subject.create({"subject_identifier": admin_sid,
                                      "other_config": {"made": "up"}})
    assert x.subject.get_other_config(admin_subject)["subject-name"] == \
        who["admin"]
    assert failure(x.subject.create, {"subject_identifier": admin_sid,
                                      "other_config": {}}) == [
        "SUBJECT_ALREADY_EXISTS"]
    assert failure(session_of, server, who["admin"], pw[who["admin"]]) == [
        "RBAC_PERMISSION_DENIED", "session.login_with_password",
        "Subject %s (identifier %s) has no roles in this pool"
        % (who["admin"], admin_sid)]

    [pool_admin] = x.role.get_by_name_label("pool-admin")
    [read_only] = x.role.get_by_name_label("read-only")
    x.subject.add_to_roles(admin_subject, pool_admin)
    assert failure(x.subject.add_to_roles, admin_subject, pool_admin) == [
        "ROLE_ALREADY_EXISTS"]
    assert failure(x.subject.remove_from_roles, admin_subject,
                   read_only) == ["ROLE_NOT_FOUND"]
    assert "vm.start" in x.subject.get_permissions_name_label(admin_subject)

    admin = session_of(server, who["admin"], pw[who["admin"]])
    a = admin.xenapi
    me = a.session.get_record(admin._session)
    assert me["is_local_superuser"] is False
    assert me["auth_user_sid"] == admin_sid
    assert me["auth_user_name"] == who["admin"]
    assert me["subject"] == admin_subject
    assert "http/connect_console/host_console" in me["rbac_permissions"]
    a.host.set_name_description(host, "set by a pool-admin")

    # A user let in through a group, with the group's role.
    readers_subject = x.subject.create({"subject_identifier": readers_sid,
                                        "other_config": {}})
    assert x.subject.get_other_config(readers_subject)[
        "subject-is-group"] == "true"
    x.subject.add_to_roles(readers_subject, read_only)
    reader = session_of(server, who["reader"], pw[who["reader"]])
    r = reader.xenapi
    mine = r.session.get_record(reader._session)
    assert (mine["auth_user_sid"], mine["subject"]) == (
        reader_sid, readers_subject)
    assert r.host.get_name_description(host) == "set by a pool-admin"
    assert failure(r.host.set_name_description, host, "no") == [
        "RBAC_PERMISSION_DENIED", "host.set_name_description",
        "No permission in user session. (Roles with this permission: "
        "pool-admin, pool-operator)"]
    assert set(x.session.get_all_subject_identifiers()) >= {
        admin_sid, reader_sid, readers_sid}

    # root stays a local superuser; a subject removed takes its sessions.
    again = session_of(server, USER, PASSWORD)
    assert again.xenapi.session.get_is_local_superuser(again._session)
    x.subject.destroy(readers_subject)
    # (The SDK logs in again on SESSION_INVALID, so the call goes raw.)
    raw = xmlrpc.client.ServerProxy(server.http_url)
    assert raw.host.get_name_description(reader._session, host)[
        "ErrorDescription"] == ["SESSION_INVALID", reader._session]
    assert failure(session_of, server, who["reader"], pw[who["reader"]]
                   )[0] == "SESSION_AUTHORIZATION_FAILED"

    x.pool.disable_external_auth(pool, {})
    assert x.host.get_external_auth_type(host) == ""
    x.pool.disable_external_auth(pool, {})
    after = session_of(server, who["admin"], pw[who["admin"]])
    assert after.xenapi.session.get_is_local_superuser(after._session)

"""
The RBAC matrix against a running server: one user per role, logged in
through external auth (some through a group) - the users of a real Samba
Active Directory DC, or PAM's local accounts where Samba is missing (a
session's permissions are checked the same way whichever directory let
it in; tests/test_extauth.py logs PAM's users in) - calls every message of
xenapi.json that takes a session, and the answer must agree with the
message's role list: RBAC_PERMISSION_DENIED exactly when the role is not
listed.  Then the same for the HTTP handlers this server serves.

A call expected to be refused gets references of existing objects (a
throwaway VM for the VM ones), synchronously and, for explicit messages,
as Async; afterwards the database must have changed not at all (no event
since a token taken before).  A call expected to pass gets references of
no object, so it runs without harm and fails later, with anything but
RBAC_PERMISSION_DENIED; the few whose running would end the session or
the server's pool membership (pool.join, the emergency calls ...) are
checked against the session's permission list instead.
"""

import concurrent.futures
import contextlib
import json
import os
import socket
import uuid
import xmlrpc.client

import pytest
import XenAPI

from tests.support import samba_dc
from tests.support.servers import PASSWORD, USER, read_head
from tests.test_datamodel_conformance import API_JSON
from tests.test_extauth import Accounts, session_of

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="creating accounts needs root"),
    pytest.mark.skipif(not os.path.exists(API_JSON),
                       reason="the interface description is not here")]
ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin",
         "vm-operator", "read-only")
THROUGH_GROUP = ("vm-power-admin", "vm-operator", "read-only")

# Running these would take the session, the agent or the pool away.
NOT_RUN = {
    "session.logout", "session.local_logout", "event.next",
    "pool.join", "pool.join_force", "pool.emergency_reset_master",
    "pool.emergency_transition_to_master", "pool.recover_slaves",
    "pool.rotate_secret", "pool.eject", "pool.designate_new_master",
    "host.shutdown_agent", "host.restart_agent", "host.management_disable",
    "host.local_management_reconfigure", "host.emergency_ha_disable",
}

# XAPI's HTTP actions served here and the roles holding each
# (datamodel.ml http_actions).
VM_ADMIN = ROLES[:4]
VM_OPERATOR = ROLES[:5]
HTTP_ROLES = {"get_export_raw_vdi": VM_ADMIN, "put_import_raw_vdi": VM_ADMIN,
              "get_export": VM_ADMIN, "put_import": VM_ADMIN,
              "get_export_metadata": VM_ADMIN,
              "put_import_metadata": VM_ADMIN,
              "connect_console": VM_OPERATOR,
              "connect_console_ws": VM_OPERATOR,
              "connect_console/host_console": ROLES[:1]}


def load_api():
    with open(API_JSON) as f:
        return json.load(f)


class Values:
    """Arguments that pass the type checks, from the description."""

    def __init__(self, api, existing):
        self.enums = {e["name"]: e["values"][0]["name"]
                      for c in api for e in c["enums"]}
        self.records = {c["name"]: [f for f in c["fields"] if f["qualifier"]
                                    in ("RW", "RO/constructor")]
                        for c in api}
        self.existing = existing

    def of(self, text, real):
        if text.endswith(" ref"):
            cls = text[:-4]
            if real and cls in self.existing:
                return self.existing[cls]
            return "OpaqueRef:%s" % uuid.uuid4()
        if text.endswith(" set"):
            return []
        if text.endswith(" map"):
            return {}
        if text.endswith(" option"):
            return self.of(text[:-7], real)
        if text.endswith(" record"):
            return {f["name"]: self.of(f["type"], False)
                    for f in self.records[text[:-7]]}
        if text.startswith("enum "):
            return self.enums[text[5:]]
        return {"string": "x", "int": 0, "float": 0.0, "bool": False,
                "datetime": "19700101T00:00:00Z"}[text]


def messages(api):
    """(wire name, message) of every message taking a session."""
    for c in api:
        for m in c["messages"]:
            if m["lifecycle"]["state"] == "Removed_s":
                continue
            if not m["params"] or m["params"][0]["type"] != "session ref":
                continue
            yield "%s.%s" % (c["name"], m["name"]), m


def outcome(session, name, args):
    """'denied' for RBAC_PERMISSION_DENIED (checking its permission),
    'noasync' for a message without an Async form, 'ok' for a result,
    else the error's code."""
    try:
        session.xenapi_request(name, tuple(args))
    except XenAPI.Failure as e:
        if e.details[0] == "RBAC_PERMISSION_DENIED":
            wire = name[len("Async."):] if name.startswith("Async.") \
                else name
            assert e.details[1] == wire.lower(), (name, e.details)
            assert e.details[2].startswith(
                "No permission in user session. (Roles with this "
                "permission: "), e.details
            return "denied"
        if e.details[:1] == ["Fault"] and "No async mode" in e.details[-1]:
            return "noasync"
        return e.details[0]
    except xmlrpc.client.Fault as e:
        if "No async mode" in e.faultString:
            return "noasync"
        return "Fault"
    return "ok"


def user_name(role):
    return role.replace("-", "")[:6]


def group_name(role):
    return "g" + user_name(role)


def grant_roles(server, root, auth_type, config, service_name, users,
                groups):
    """External auth on, and each role given to its user or group."""
    x = root.xenapi
    x.pool.enable_external_auth(x.pool.get_all()[0], config, service_name,
                                auth_type)
    for role in ROLES:
        name = groups.get(role, users[role])
        subject = x.subject.create({
            "subject_identifier": x.auth.get_subject_identifier(name),
            "other_config": {}})
        x.subject.add_to_roles(subject, x.role.get_by_name_label(role)[0])


@contextlib.contextmanager
def pam_world(base):
    accounts = Accounts()
    try:
        groups = {role: accounts.group(group_name(role))
                  for role in THROUGH_GROUP}
        users = {role: accounts.user(user_name(role),
                                     [groups[role]] if role in groups else [])
                 for role in ROLES}
        server = accounts.server(base)
        try:
            root = session_of(server, USER, PASSWORD)
            grant_roles(server, root, "PAM", {}, "", users, groups)
            yield server, root, accounts.passwords, users
        finally:
            server.stop()
    finally:
        accounts.remove()


@contextlib.contextmanager
def ad_world(base):
    users = {role: user_name(role) for role in ROLES}
    passwords = {name: "Pw-%s-%s!" % (name, uuid.uuid4().hex[:6])
                 for name in users.values()}
    groups = {role: group_name(role) for role in THROUGH_GROUP}
    with samba_dc.serving(base, passwords.items(), [
            (group, [users[role]]) for role, group in groups.items()]) as (
                _, server):
        root = session_of(server, USER, PASSWORD)
        grant_roles(server, root, "AD", samba_dc.ADMIN, samba_dc.DOMAIN,
                    users, groups)
        yield server, root, passwords, users


@pytest.fixture(scope="module",
                params=["AD" if samba_dc.available() else "PAM"])
def world(request, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("rbacmatrix"))
    make = pam_world if request.param == "PAM" else ad_world
    with make(base) as world:
        yield world


def existing_objects(x):
    """A live object of each class that has one (the VM a throwaway)."""
    found = {}
    for cls in ("host", "pool", "SR", "VDI", "PBD", "network", "PIF",
                "console", "host_cpu", "host_metrics", "role", "subject",
                "task", "message", "VBD", "VIF"):
        try:
            refs = getattr(x, cls).get_all()
        except XenAPI.Failure:
            continue
        if refs:
            found[cls] = refs[0]
    template = x.VM.get_by_name_label("Other install media")[0]
    found["VM"] = x.VM.clone(template, "throwaway")
    return found


def test_every_message_against_every_role(world):
    server, root, passwords, users = world
    api = load_api()
    x = root.xenapi
    # A task for the task calls; and the change check sees a change.
    token = x.event_from(["*"], "", 0.0)["token"]
    x.task.create("someone's", "")
    assert x.event_from(["*"], token, 0.0)["events"]
    existing = existing_objects(x)
    table = list(messages(api))
    sessions = {}
    for role in ROLES:
        user = users[role]
        sessions[role] = session_of(server, user, passwords[user])
    # (Read here: the root session is not shared between threads.)
    permissions_of = {role: set(x.session.get_rbac_permissions(s._session))
                      for role, s in sessions.items()}

    def values_of(role):
        return Values(api, dict(existing, session=sessions[role]._session))

    roles_of = {name: m["roles"] for name, m in table}

    def expected(role, name):
        return role in roles_of[name]

    def refused(role):
        """Every call the role may not make, with references of existing
        objects: (agreeing, disagreeing, Async refused, what disagreed
        with Async calls too)."""
        s, values, agree, disagree, refused_async, report = \
            sessions[role], values_of(role), 0, 0, 0, []
        for name, m in table:
            if expected(role, name):
                continue
            args = [values.of(p["type"], True) for p in m["params"][1:]]
            got = outcome(s, name, args)
            if got == "denied":
                agree += 1
            else:
                disagree += 1
                report.append((role, name, "expected denied", got))
            if not m["implicit"]:
                got = outcome(s, "Async." + name, args)
                refused_async += got == "denied"
                if got not in ("denied", "noasync"):
                    report.append((role, "Async." + name, "expected denied",
                                   got))
        return agree, disagree, refused_async, report

    def allowed(role):
        """Every call the role may make, on references of nothing:
        (agreeing, disagreeing, checked on the permission list only, what
        disagreed)."""
        s, values, agree, disagree, not_run, report = \
            sessions[role], values_of(role), 0, 0, 0, []
        permissions = permissions_of[role]
        for name, m in table:
            if not expected(role, name):
                continue
            if name in NOT_RUN:
                not_run += 1
                ok = name.lower() in permissions
            else:
                args = [values.of(p["type"], False) for p in m["params"][1:]]
                ok = outcome(s, name, args) != "denied"
            if ok:
                agree += 1
            else:
                disagree += 1
                report.append((role, name, "expected allowed", "denied"))
        return agree, disagree, not_run, report

    # The roles run side by side (a client thread each, so that client and
    # server work at once), refused calls first, all of them; then nothing
    # may have changed.  Then the allowed ones.
    with concurrent.futures.ThreadPoolExecutor(len(ROLES)) as pool:
        token = x.event_from(["*"], "", 0.0)["token"]
        first = list(pool.map(refused, ROLES))
        changes = x.event_from(["*"], token, 0.0)["events"]
        assert changes == [], changes[:5]
        second = list(pool.map(allowed, ROLES))
    for s in sessions.values():
        s.xenapi.session.logout()
    agree = sum(r[0] for r in first + second)
    total = agree + sum(r[1] for r in first + second)
    refused_async = sum(r[2] for r in first)
    not_run = sum(r[2] for r in second)
    report = [line for r in first + second for line in r[3]]
    print("RBAC matrix: %d of %d calls agree (%d messages x %d roles); "
          "%d Async calls refused too; %d allowed calls checked on the "
          "session's permissions instead of run" % (
              agree, total, len(table), len(ROLES), refused_async, not_run))
    assert report == [], report[:20]
    assert total == len(table) * len(ROLES)


def http_status(server, method, path, headers=()):
    """The status code of one request over its own connection."""
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: x"] + \
            list(headers)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = read_head(sock)
        rest = b""
        if b" 500 " in head.split(b"\r\n")[0]:
            sock.settimeout(5)
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            except socket.timeout:
                pass
        return int(head.split(b" ")[1]), rest


def test_every_http_handler_against_every_role(world):
    server, root, passwords, users = world
    x = root.xenapi
    dom0 = x.host.get_control_domain(x.host.get_all()[0])
    nothing = "OpaqueRef:%s" % uuid.uuid4()
    ws = ("Upgrade: websocket", "Connection: Upgrade",
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
          "Sec-WebSocket-Version: 13")
    for role in ROLES:
        user = users[role]
        s = session_of(server, user, passwords[user])
        sid = s._session
        tried = {
            "get_export": ("GET", "/export?session_id=%s&ref=%s"
                           % (sid, nothing), ()),
            "put_import": ("PUT", "/import?session_id=%s" % sid,
                           ("Content-Length: 0",)),
            "get_export_metadata": ("GET", "/export_metadata?session_id=%s"
                                    "&ref=%s" % (sid, nothing), ()),
            "put_import_metadata": ("PUT", "/import_metadata?session_id=%s"
                                    % sid, ("Content-Length: 0",)),
            "get_export_raw_vdi": ("GET", "/export_raw_vdi?session_id=%s"
                                   "&vdi=%s" % (sid, nothing), ()),
            "put_import_raw_vdi": ("PUT", "/import_raw_vdi?session_id=%s"
                                   "&vdi=%s" % (sid, nothing),
                                   ("Content-Length: 0",)),
            "connect_console": ("CONNECT", "/console?session_id=%s&ref=%s"
                                % (sid, nothing), ()),
            "connect_console_ws": ("GET", "/console?session_id=%s&ref=%s"
                                   % (sid, nothing), ws),
        }
        for action, (method, path, headers) in tried.items():
            status, _ = http_status(server, method, path, headers)
            allowed = role in HTTP_ROLES[action]
            assert (status == 403) == (not allowed), (role, action, status)
        # The control domain's console needs host_console as well.
        status, body = http_status(
            server, "CONNECT", "/console?session_id=%s&ref=%s" % (sid, dom0))
        if role not in HTTP_ROLES["connect_console"]:
            assert status == 403, (role, status)
        elif role in HTTP_ROLES["connect_console/host_console"]:
            assert status == 200, (role, status)
        else:
            assert status == 500 and b"RBAC_PERMISSION_DENIED: [ " \
                b"http/connect_console/host_console" in body, (role, body)
        s.xenapi.session.logout()

"""
Item: the cost of the permission check per call.  The same calls through
the dispatcher of an in-process server (no sockets, so the check is not
lost in the wire's cost), once in a local superuser's session (which
bypasses RBAC) and once in a role session (permission set look-up,
guarded-key match, and for writes the audit log line), side by side.
"""

import os
import time

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock

from txxapi.api.rbac import permissions_of
from txxapi.auth.realm import make_portal
from txxapi.db.persist import NoPersistence
from txxapi.server import Server
from txxenops.backends.simulator import SimulatorBackend

ITEM = "rbac"


class _Reactor(Clock):
    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)


def _server(data_dir):
    checker = InMemoryUsernamePasswordDatabaseDontUse(root=b"bench")
    server = Server(data_dir, make_portal([checker]), SimulatorBackend(),
                    NoPersistence(), bind="127.0.0.1", reactor=_Reactor())
    server.start()
    return server


def _call(server, method, params):
    results = []
    server.dispatcher.call(method, params).addBoth(results.append)
    return results[0]


def _per_call_us(server, method, params, n):
    started = time.perf_counter()
    for _ in range(n):
        _call(server, method, params)
    return (time.perf_counter() - started) / n * 1e6


def run(ctx):
    n = 2000 if ctx.quick else 20000
    data = os.path.join(ctx.base, "rbac-data")
    os.makedirs(data, exist_ok=True)
    server = _server(data)
    try:
        db = server.db
        root = server.sessions.create("root")
        roles = {role: server.sessions.create(
            role, is_local_superuser=False, sid="S-1-5-21-" + role,
            permissions=permissions_of(role))
            for role in ("read-only", "vm-operator", "vm-admin")}
        vm = next(r for r, f in db.records("VM")
                  if not f["is_control_domain"])
        cases = [
            ("VM.get_record (a getter, not audited)", "read-only",
             "VM.get_record", [vm]),
            ("VM.set_name_description (audited)", "vm-admin",
             "VM.set_name_description", [vm, "bench"]),
            ("VM.remove_from_other_config key folder (guarded key)",
             "vm-operator", "VM.remove_from_other_config", [vm, "folder"]),
        ]
        for label, role, method, args in cases:
            base = _per_call_us(server, method, [root] + args, n)
            ours = _per_call_us(server, method, [roles[role]] + args, n)
            ctx.results.add(ITEM, "%s, local superuser" % label, base, "us")
            ctx.results.add(ITEM, "%s, %s session" % (label, role), ours,
                            "us", base, "local superuser")
        # A refusal: checked, audited and answered before anything runs.
        base = _per_call_us(server, "VM.set_name_description",
                            [root, vm, "bench"], n)
        refused = _per_call_us(server, "VM.set_name_description",
                               [roles["read-only"], vm, "bench"], n)
        ctx.results.add(ITEM, "VM.set_name_description refused, read-only "
                        "session", refused, "us", base,
                        "local superuser allowed")
    finally:
        server.stop()

"""
On a slave, the client's session and task of a request the master sent
here.  Sessions and tasks live on the master (a slave keeps only its own
and those of calls forwarded to it), so the slave asks the master about
the session (``pool.http_caller``, under its pool session): unknown
there, the request is unauthorised; known, the request runs under a
local session with the same user and permissions, for as long as it
lasts.  A positive answer is kept for a short while (sessions.py).  The task the client named in task_id, if the master has it (or
else the one the master makes for a transfer, whose ref the client gets),
is mirrored here under the same ref, so the handler works on it as on a
task of its own, and every change the handler makes to it (progress, the
cancel it allows, the outcome) goes to the master's task, which the
client watches (``pool.http_task_update``).  The master answers each with
the task's status there: a cancel the client asked of the master is made
here, at the next progress report, as XAPI's handlers check for one.
Basic credentials given to a slave log in on the master, for the
request.
"""

import json

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.api.tasks import FINISHED
from txxapi.pool.client import PeerClient
from txxapi.redirect.sessions import part_of, vouched_of
from txxapi.values import NULL_REF

log = Logger()

CALLER_CALL = "pool.http_caller"
TASK_CALL = "pool.http_task_update"
# The task fields a handler changes, as the master's task takes them.
RELAYED = ("status", "progress", "result", "error_info", "other_config",
           "allowed_operations")
RETRY_DELAY = 1.0
RETRIES = 30


def master_login(server, user, password, originator):
    """A session on the master for basic credentials given here (a
    Deferred): its refusal as it is, PeerUnreachable without it."""
    return _master(server).call("session.login_with_password", user,
                                password, "1.0", originator)


def master_logout(server, session):
    d = _master(server).call("session.logout", session)
    d.addErrback(lambda f: log.info("logout of {session} on the master: "
                                    "{e}", session=session,
                                    e=f.getErrorMessage()))


def _master(server):
    return PeerClient(server.reactor, server.identity.role.master_address)


def is_masters(server, session):
    """Whether ``session`` is one only the master can check: a slave that
    does not hold it."""
    return not server.identity.is_master and isinstance(session, str) and \
        not server.db.exists("session", session)


@defer.inlineCallbacks
def local_session(server, session, task, label=None):
    """(a local session standing for the master's ``session``, the task
    the master made for the request) (a Deferred), with the master's
    ``task`` mirrored here if it has one.  Without a task named and with a
    ``label``, the master makes one for the client's session (the task
    the client gets), mirrored here too.  The master's SESSION_INVALID as
    it is; PeerUnreachable without it."""
    vouched = vouched_of(server)
    s = vouched.get(session) if not task and not label else None
    if s is None:
        epoch = vouched.epoch
        reply = yield server.peers.call(
            server.identity.role.master_address, CALLER_CALL, session,
            task or "", "" if task else label or "",
            server.identity.host_ref)
        found = json.loads(reply)
        s = found["session"]
        vouched.vouched(session, s, epoch)
    else:
        found = {}
    ref = server.sessions.create(
        s["auth_user_name"], s["originator"],
        is_local_superuser=s["is_local_superuser"], subject=s["subject"],
        sid=s["auth_user_sid"], permissions=s["rbac_permissions"])
    mirrored = found.get("task")
    made = found.get("made")
    if mirrored is not None and not server.db.exists("task",
                                                     task or made):
        _mirror(server, task or made, mirrored, ref, made is not None)
    return ref, made


def _mirror(server, task, fields, session, made):
    tasks = server.tasks
    # The task's owner here is the local session only if the master's
    # task is the client's, so the handlers' ownership checks answer as
    # the master's would.
    tasks.create(session if fields["own"] else NULL_REF,
                 fields["name_label"], fields["name_description"], ref=task)
    server.db.update("task", task, {"progress": fields["progress"],
                                    "other_config": fields["other_config"]})
    relay_of(server).follow(task, session, made)


def release(server, session):
    """The request of the local ``session`` is over: a mirrored task it
    left pending goes (the handler refused the request before taking
    it), and so does the master's if the master made it for the
    request; a task the client named stays as it is there."""
    relay_of(server).release(session)


def relay_of(server):
    return part_of(server, TaskRelay, server)


class _Mirror:
    def __init__(self, session, made):
        self.session = session  # the local stand-in it was mirrored for
        self.made = made        # made by the master for the request
        self.pending = {}
        self.sending = False
        self.gone = False       # the local task is deleted
        self.failures = 0


class TaskRelay:
    """Sends the changes of mirrored tasks to the master, in order, one
    call at a time, changes that pile up meanwhile sent as one."""

    def __init__(self, server):
        self.server = server
        self._mirrors = {}
        self._listening = False

    def follow(self, task, session, made):
        self._mirrors[task] = _Mirror(session, made)
        if not self._listening:
            self._listening = True
            self.server.db.listeners.append(self._changed)

    def release(self, session):
        db = self.server.db
        for task, mirror in list(self._mirrors.items()):
            if mirror.session == session and db.exists("task", task) and \
                    db.fields("task", task)["status"] == "pending":
                if mirror.made:
                    mirror.pending["unused"] = True
                db.delete("task", task)

    def _changed(self, record, cls):
        _gen, op, table, ref, fields = record
        if table != "task":
            return
        mirror = self._mirrors.get(ref)
        if mirror is None:
            return
        if op == "mod":
            mirror.pending.update(
                {k: fields[k] for k in RELAYED if k in fields})
        elif op == "del":
            mirror.gone = True
        # Sent from the reactor's next turn, not from inside a write.
        self.server.reactor.callLater(0, self._send, ref)

    def _send(self, task):
        mirror = self._mirrors.get(task)
        if mirror is None or mirror.sending:
            return
        if not mirror.pending:
            if mirror.gone:
                self._drop(task)
            return
        changes, mirror.pending = mirror.pending, {}
        mirror.sending = True
        d = self.server.peers.call(self.server.identity.role.master_address,
                                   TASK_CALL, task, json.dumps(changes))
        d.addCallbacks(lambda status: self._sent(task, changes, status),
                       lambda f: self._failed(task, changes, f))

    def _sent(self, task, changes, status):
        mirror = self._mirrors[task]
        mirror.sending = False
        mirror.failures = 0
        if changes.get("status") in FINISHED or status in FINISHED or \
                status == "":
            # Over, here or there (a master's task gone: nothing to tell).
            self._drop(task)
            return
        db = self.server.db
        if status == "cancelling" and db.exists("task", task) and \
                db.fields("task", task)["status"] == "pending":
            self.server.tasks.cancel(task)
        self._send(task)

    def _failed(self, task, changes, failure):
        mirror = self._mirrors[task]
        mirror.sending = False
        mirror.failures += 1
        if mirror.failures > RETRIES:
            log.warn("task {task}: the master did not take its changes: "
                     "{e}", task=task, e=failure.getErrorMessage())
            self._drop(task)
            return
        changes.update(mirror.pending)
        mirror.pending = changes
        self.server.reactor.callLater(RETRY_DELAY, self._send, task)

    def _drop(self, task):
        self._mirrors.pop(task, None)
        if not self._mirrors and self._listening:
            self._listening = False
            self.server.db.listeners.remove(self._changed)

"""
The master's side of a request it sent to another host (txxapi.redirect.
remote): internal calls under a host's pool session.

* ``pool.http_caller(client_session, task, label, host)``: the client's
  session as the handler there needs it (who, and with which
  permissions), and the task it named, if there is one, else a task made
  for the client's session under ``label`` if there is one (JSON);
  SESSION_INVALID for a session the master does not know.  ``host`` (the
  asking host) is told when the session goes (sessions.py).
* ``pool.http_session_gone(client_session)``, on that host: forget it.
* ``pool.http_task_update(task, changes)``: that host's changes to the
  task (JSON); a finished status finishes it as the master's own tasks
  finish, and one the master made that the request never took goes.
  Answers the task's status here ('' once it is gone), so that host
  learns of a cancel.
"""

import json

from txxapi.api.registry import internal
from txxapi.api.tasks import FINISHED
from txxapi.impl.pool import assert_pool_session
from txxapi.redirect.remote import CALLER_CALL, TASK_CALL
from txxapi.redirect.sessions import GONE_CALL, askers_of, vouched_of

SESSION_FIELDS = ("auth_user_name", "originator", "is_local_superuser",
                  "subject", "auth_user_sid", "rbac_permissions")
RUNNING_FIELDS = ("progress", "other_config", "allowed_operations")


@internal(CALLER_CALL)
def http_caller(ctx, session, client_session, task, label, host=None):
    assert_pool_session(ctx, session)
    ctx.server.identity.assert_master()
    ctx.server.sessions.check(client_session)
    if host is not None and ctx.db.exists("host", host):
        askers_of(ctx.server).asked(client_session, host)
    db = ctx.db
    f = db.fields("session", client_session)
    found = {"session": {k: f[k] for k in SESSION_FIELDS}}
    if not task and label:
        task = found["made"] = ctx.server.tasks.create(client_session, label)
    if task and db.exists("task", task):
        t = db.fields("task", task)
        found["task"] = {"name_label": t["name_label"],
                         "name_description": t["name_description"],
                         "progress": t["progress"],
                         "other_config": t["other_config"],
                         "own": t["session"] == client_session}
    return json.dumps(found)


@internal(TASK_CALL)
def http_task_update(ctx, session, task, changes):
    assert_pool_session(ctx, session)
    db, tasks = ctx.db, ctx.server.tasks
    if not db.exists("task", task):
        return ""
    changes = json.loads(changes)
    status = changes.get("status")
    if changes.get("unused"):
        # Made for a request that was refused before it took the task.
        db.delete("task", task)
        return ""
    if status in FINISHED:
        tasks.finish_as(task, status, changes.get("result", ""),
                        changes.get("error_info", []))
    else:
        running = {k: changes[k] for k in RUNNING_FIELDS if k in changes}
        if running and db.fields("task", task)["status"] not in FINISHED:
            db.update("task", task, running)
    return db.fields("task", task)["status"] if db.exists("task", task) \
        else ""


@internal(GONE_CALL)
def http_session_gone(ctx, session, client_session):
    assert_pool_session(ctx, session)
    vouched_of(ctx.server).forget(client_session)
    return ""

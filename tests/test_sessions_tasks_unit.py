"""Sessions and tasks in process, with a Clock for time."""

import pytest
from twisted.internet import defer

from tests.support.inprocess import PASSWORD, USER, call, login, make_server
from txxapi.api import registry
from txxapi.errors import XenAPIError
from txxapi.values import DateTime


@pytest.fixture
def srv(tmp_path):
    server, clock = make_server(tmp_path)
    yield server, clock
    server.stop()


def _net(label="n"):
    return {"name_label": label, "name_description": "", "MTU": "1500",
            "other_config": {}}


def test_failed_login_waits_before_answering(srv):
    server, clock = srv
    d = server.dispatcher.call("session.login_with_password",
                               [USER, "bad", "1.0", ""])
    results = []
    d.addBoth(results.append)
    assert results == []
    clock.advance(4.9)
    assert results == []
    clock.advance(0.2)
    assert results[0].value.description[:2] == [
        "SESSION_AUTHENTICATION_FAILED", USER]


def test_idle_sessions_expire_unless_busy(srv):
    server, clock = srv
    idle, busy = login(server), login(server)
    old = DateTime.from_timestamp(1000)
    for s in (idle, busy):
        server.db.update("session", s, {"last_active": old})
    server.tasks.create(busy, "still running")
    server.sessions.expire(now=1000 + 86401)
    assert not server.db.exists("session", idle)
    assert server.db.exists("session", busy)


def test_per_originator_limit_drops_least_recent(srv):
    server, _ = srv
    refs = []
    for i in range(503):
        ref = call(server, "session.login_with_password", USER, PASSWORD,
                   "1.0", "busy-client")
        server.db.update("session", ref,
                         {"last_active": DateTime.from_timestamp(10000 + i)})
        refs.append(ref)
    other = login(server)
    server.sessions.expire(now=20000)
    alive = [r for r in refs if server.db.exists("session", r)]
    assert alive == refs[3:]
    assert server.db.exists("session", other)


def test_logout_destroys_the_sessions_tasks(srv):
    server, _ = srv
    s = login(server)
    task = call(server, "task.create", s, "mine", "")
    call(server, "task.set_status", s, task, "success")
    call(server, "session.logout", s)
    assert not server.db.exists("task", task)


def test_async_success_result_is_an_xml_fragment(srv):
    server, _ = srv
    s = login(server)
    task = call(server, "Async.network.create", s, _net("a"))
    rec = call(server, "task.get_record", s, task)
    assert rec["status"] == "success" and rec["progress"] == 1.0
    assert rec["name_label"] == "Async.network.create"
    net = rec["result"][len("<value>"):-len("</value>")]
    assert call(server, "network.get_name_label", s, net) == "a"
    assert rec["finished"] >= rec["created"]


def test_async_failure_records_error_info(srv):
    server, _ = srv
    s = login(server)
    task = call(server, "Async.network.destroy", s, "OpaqueRef:nope")
    rec = call(server, "task.get_record", s, task)
    assert rec["status"] == "failure"
    assert rec["error_info"] == ["HANDLE_INVALID", "network", "OpaqueRef:nope"]


def test_errors_before_the_task_are_synchronous(srv):
    server, _ = srv
    with pytest.raises(XenAPIError) as e:
        call(server, "Async.network.destroy", "OpaqueRef:bad-session", "x")
    assert e.value.code == "SESSION_INVALID"
    assert server.db.count("task") == 0


def test_cancel_a_cancellable_task(srv, monkeypatch):
    server, clock = srv
    s = login(server)
    waiting = defer.Deferred()

    def slow(ctx, *args):
        server.tasks.set_canceller(ctx.task, waiting.cancel)
        return waiting

    monkeypatch.setitem(registry.HANDLERS, "pool.sync_database", slow)
    pool = call(server, "pool.get_all", s)[0]
    task = call(server, "Async.pool.sync_database", s)
    assert call(server, "task.get_allowed_operations", s, task) == ["cancel"]
    assert call(server, "task.get_status", s, task) == "pending"
    call(server, "task.cancel", s, task)
    rec = call(server, "task.get_record", s, task)
    assert rec["status"] == "cancelled"
    assert rec["error_info"] == ["TASK_CANCELLED", task]
    assert pool


def test_cooperative_cancel_at_a_check_point(srv, monkeypatch):
    server, clock = srv
    s = login(server)
    gate = defer.Deferred()

    def stepwise(ctx, *args):
        server.tasks.set_canceller(ctx.task, lambda: None)

        def step(_):
            ctx.check_cancelled()
            return "done"
        return gate.addCallback(step)

    monkeypatch.setitem(registry.HANDLERS, "pool.sync_database", stepwise)
    task = call(server, "Async.pool.sync_database", s)
    call(server, "task.cancel", s, task)
    assert call(server, "task.get_status", s, task) == "cancelling"
    gate.callback(None)
    assert call(server, "task.get_status", s, task) == "cancelled"


def test_uncancellable_task_refuses(srv):
    server, _ = srv
    s, other = login(server), login(server)
    task = call(server, "task.create", other, "theirs", "")
    call(server, "task.set_status", other, task, "success")
    with pytest.raises(XenAPIError) as e:
        call(server, "task.cancel", s, task)
    assert e.value.code in ("OPERATION_NOT_ALLOWED",)


def test_finished_tasks_expire_and_are_capped(srv):
    server, _ = srv
    s = login(server)
    old = server.tasks.create(s, "old")
    server.tasks.succeed(old, "")
    server.db.update("task", old,
                     {"finished": DateTime.from_timestamp(1000)})
    recent = []
    for i in range(205):
        t = server.tasks.create(s, "t%d" % i)
        server.tasks.succeed(t, "")
        server.db.update("task", t, {
            "finished": DateTime.from_timestamp(5000 + i)})
        recent.append(t)
    pending = server.tasks.create(s, "pending")
    server.db.update("task", pending,
                     {"created": DateTime.from_timestamp(5000)})
    server.tasks.expire(now=1000 + 3901)
    assert not server.db.exists("task", old)
    assert server.db.count("task") == 200
    assert server.db.exists("task", pending)
    assert not server.db.exists("task", recent[0])
    assert server.db.exists("task", recent[-1])


def test_subtasks_view(srv):
    server, _ = srv
    s = login(server)
    parent = server.tasks.create(s, "parent")
    child = server.tasks.create(s, "child", subtask_of=parent)
    assert call(server, "task.get_subtasks", s, parent) == [child]
    assert call(server, "task.get_subtask_of", s, child) == parent


def test_pool_secret_login(srv):
    server, _ = srv
    host = server.host_ref
    s = call(server, "session.slave_login", host, server.pool_secret)
    assert call(server, "session.get_pool", s, s) is True
    with pytest.raises(XenAPIError) as e:
        call(server, "session.slave_login", host, "wrong")
    assert e.value.description == [
        "SESSION_AUTHENTICATION_FAILED", host, "Pool credentials invalid"]
    local = call(server, "session.slave_local_login", server.pool_secret)
    assert call(server, "session.get_is_local_superuser", local, local)


def test_rbac_read_only_session(srv):
    from txxapi.api.rbac import permissions_of
    server, _ = srv
    s = server.sessions.create("reader", is_local_superuser=False,
                               sid="S-1-5-21-1", permissions=permissions_of(
                                   "read-only"))
    host = call(server, "host.get_all", s)[0]
    assert call(server, "host.get_name_label", s, host)
    with pytest.raises(XenAPIError) as e:
        call(server, "host.set_name_label", s, host, "new")
    assert e.value.description == [
        "RBAC_PERMISSION_DENIED", "host.set_name_label",
        "No permission in user session. (Roles with this permission: "
        "pool-admin, pool-operator)"]
    assert call(server, "host.get_name_label", s, host) != "new"

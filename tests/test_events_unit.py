"""
The EventHub against an in-memory Database and a fake server whose
reactor is a Clock: event.from tokens, coalescing, blocking and waking,
the legacy register/next queue, inject, and the cost of many waiters.
"""

import pytest
from twisted.internet.task import Clock

from txxapi import events
from txxapi.datamodel import MODEL
from txxapi.db.memory import Database
from txxapi.errors import XenAPIError
from txxapi.events import EventHub, format_token, parse_token
from txxapi.values import Int32

SESSION = "OpaqueRef:session-1"


class FakeServer:
    def __init__(self):
        self.db = Database(MODEL)
        self.reactor = Clock()


@pytest.fixture
def hub():
    server = FakeServer()
    h = EventHub(server.db, server.reactor)
    h.start()
    yield h
    h.stop()


def new_session(db):
    return db.create("session", {"auth_user_name": "root"})


def network(db, label="net"):
    return db.create("network", {"name_label": label})


def result_of(d):
    out = []
    d.addBoth(out.append)
    return out


def run(hub, d, seconds=0.1):
    """Advance the clock in small steps; the call's outcome or None."""
    out = result_of(d)
    for _ in range(int(seconds / 0.01) + 1):
        if out:
            break
        hub.reactor.advance(0.01)
    return out[0] if out else None


def error_of(outcome):
    assert not isinstance(outcome, dict), outcome
    outcome.trap(XenAPIError)
    return outcome.value.description


def by_ref(reply):
    return {e["ref"]: e for e in reply["events"]}


# -- tokens and subscriptions -------------------------------------------------

def test_token_format_and_parse():
    assert format_token(1339, 42) == \
        "00000000000000001339,00000000000000000042"
    assert parse_token("") == (0, 0)
    assert parse_token(format_token(7, 3)) == (7, 3)
    assert parse_token("5,0") == (5, 0)
    for bad in ("x", "1", "1,2,3", "a,b", " 1,2", "1,", ",1", "1.5,0",
                "99999999999999999999,0"):
        with pytest.raises(XenAPIError) as e:
            parse_token(bad)
        assert e.value.description == ["EVENT_FROM_TOKEN_PARSE_FAILURE", bad]


def test_bad_token_and_subscription_are_refused(hub):
    with pytest.raises(XenAPIError) as e:
        hub.event_from(SESSION, ["*"], "garbage", 1.0)
    assert e.value.description == ["EVENT_FROM_TOKEN_PARSE_FAILURE",
                                   "garbage"]
    for item in ("", "vm/", "/OpaqueRef:x"):
        with pytest.raises(XenAPIError) as e:
            hub.event_from(SESSION, ["vm", item], "", 1.0)
        assert e.value.description == \
            ["EVENT_SUBSCRIPTION_PARSE_FAILURE", item]


def test_subscription_matching():
    subs = events.Subscription.parse(["VM", "task/OpaqueRef:t"])
    assert subs.object_matches("vm", "OpaqueRef:any")
    assert subs.object_matches("task", "OpaqueRef:t")
    assert not subs.object_matches("task", "OpaqueRef:other")
    assert not subs.table_matches("network")
    assert not subs.task_only
    assert events.Subscription.parse(["task", "Task/x"]).task_only
    assert events.Subscription.parse(["*"]).object_matches("pif", "r")


# -- event.from -------------------------------------------------------------

def test_initial_sync_reports_every_object_as_add(hub):
    db = hub.db
    a, b = network(db, "a"), network(db, "b")
    gone = network(db, "gone")
    db.delete("network", gone)
    db.update("network", a, {"name_label": "a2"})
    reply = run(hub, hub.event_from(SESSION, ["network"], "", 30.0))
    evs = by_ref(reply)
    assert set(evs) == {a, b}
    assert all(e["operation"] == "add" for e in evs.values())
    ev = evs[a]
    assert ev["class"] == "network" and ev["timestamp"] == "0.0"
    assert ev["id"] == str(db.table("network").rows[a].ctime)
    assert ev["snapshot"]["name_label"] == "a2"
    assert ev["snapshot"] == db.record("network", a)
    assert reply["token"] == format_token(db.generation, 0)
    counts = reply["valid_ref_counts"]
    assert counts["network"] == 2 and type(counts["network"]) is Int32
    assert counts["vm"] == 0
    assert set(counts) == {n.lower() for n in db.tables}


def test_incremental_add_mod_del_coalesced(hub):
    db = hub.db
    old = network(db, "old")
    doomed = network(db, "doomed")
    token = run(hub, hub.event_from(SESSION, ["network"], "", 1.0))["token"]

    db.update("network", old, {"name_label": "x"})
    db.update("network", old, {"name_label": "y"})
    new = network(db, "new")
    db.update("network", new, {"name_description": "d"})
    db.delete("network", doomed)
    brief = network(db, "brief")
    db.delete("network", brief)
    hub.db.create("VM", {"name_label": "not subscribed"})

    reply = run(hub, hub.event_from(SESSION, ["Network"], token, 1.0))
    evs = by_ref(reply)
    assert set(evs) == {old, new, doomed}
    assert evs[old]["operation"] == "mod"
    assert evs[old]["snapshot"]["name_label"] == "y"
    assert evs[new]["operation"] == "add"
    assert evs[new]["snapshot"]["name_description"] == "d"
    assert evs[doomed]["operation"] == "del"
    assert "snapshot" not in evs[doomed]
    ids = [int(e["id"]) for e in reply["events"]]
    assert ids == sorted(ids)
    assert parse_token(reply["token"])[0] == db.generation


def test_scan_path_gives_the_same_answer(hub, monkeypatch):
    db = hub.db
    a = network(db)
    b = network(db)
    token = format_token(db.generation)
    db.update("network", a, {"name_label": "changed"})
    db.delete("network", b)
    c = network(db)
    via_log = by_ref(run(hub, hub.event_from(SESSION, ["*"], token, 1.0)))
    monkeypatch.setattr(db, "changes_since", lambda gen: None)
    via_scan = by_ref(run(hub, hub.event_from(SESSION, ["*"], token, 1.0)))
    assert {r: e["operation"] for r, e in via_log.items()} == \
        {r: e["operation"] for r, e in via_scan.items()} == \
        {a: "mod", b: "del", c: "add"}


def test_tokens_from_before_a_restart_are_answered_by_a_scan():
    server = FakeServer()
    db = server.db
    a = network(db)
    token = format_token(db.generation)
    db.update("network", a, {"name_label": "before start"})
    # As after a restart: rows carry generations the log never saw.
    db.log_gens[:] = []
    db.log_items[:] = []
    h = EventHub(server.db, server.reactor)
    h.start()
    reply = run(h, h.event_from(SESSION, ["network"], token, 1.0))
    assert [(e["ref"], e["operation"]) for e in reply["events"]] == \
        [(a, "mod")]


def test_blocks_until_a_change_then_batches(hub):
    db = hub.db
    n = network(db)
    token = format_token(db.generation)
    d = hub.event_from(SESSION, ["network"], token, 60.0)
    out = result_of(d)
    hub.reactor.advance(1.0)
    assert out == []
    db.update("network", n, {"name_label": "1"})
    hub.reactor.advance(0.01)
    db.update("network", n, {"name_label": "2"})
    assert out == []
    hub.reactor.advance(events.FROM_DELAY)
    reply = out[0]
    assert [(e["operation"], e["snapshot"]["name_label"])
            for e in reply["events"]] == [("mod", "2")]


def test_timeout_returns_empty(hub):
    network(hub.db)
    token = format_token(hub.db.generation)
    d = hub.event_from(SESSION, ["network"], token, 5.0)
    out = result_of(d)
    hub.reactor.advance(4.9)
    assert out == []
    hub.reactor.advance(0.2)
    assert out[0]["events"] == []
    assert out[0]["token"] == token
    assert not hub._watch and not hub._by_session


def test_zero_timeout_answers_at_once(hub):
    reply = run(hub, hub.event_from(SESSION, ["vm"], "", 0.0))
    assert reply["events"] == []


def test_unparseable_timeout_means_a_day(hub):
    d = hub.event_from(SESSION, ["vm"], "", float("nan"))
    out = result_of(d)
    hub.reactor.advance(3600)
    assert out == []
    hub.reactor.advance(86400)
    assert out[0]["events"] == []


def test_object_subscription_ignores_other_objects(hub):
    db = hub.db
    mine, other = network(db), network(db)
    token = format_token(db.generation)
    d = hub.event_from(SESSION, ["network/" + mine], token, 60.0)
    out = result_of(d)
    hub.reactor.advance(0.1)
    db.update("network", other, {"name_label": "x"})
    assert hub._flush_timer is None  # nobody was woken
    hub.reactor.advance(1.0)
    assert out == []
    db.delete("network", mine)
    hub.reactor.advance(0.1)
    assert [(e["ref"], e["operation"]) for e in out[0]["events"]] == \
        [(mine, "del")]


def test_task_only_subscriptions_start_without_delay(hub):
    task = hub.db.create("task", {"name_label": "t", "status": "pending"})
    d = hub.event_from(SESSION, ["task/" + task], "", 10.0)
    out = result_of(d)
    hub.reactor.advance(0)
    assert out[0]["events"][0]["ref"] == task
    d = hub.event_from(SESSION, ["task", "vm"], "", 10.0)
    out = result_of(d)
    hub.reactor.advance(0)
    assert out == []
    hub.reactor.advance(events.FROM_DELAY)
    assert out[0]["events"]


def test_empty_windows_are_not_answered_before_the_timeout(hub):
    db = hub.db
    token = format_token(db.generation)
    d = hub.event_from(SESSION, ["network"], token, 60.0)
    out = result_of(d)
    hub.reactor.advance(0.1)
    n = network(db)
    db.delete("network", n)   # born and gone: nothing to say
    hub.reactor.advance(1.0)
    assert out == []
    m = network(db)
    hub.reactor.advance(0.1)
    assert [e["ref"] for e in out[0]["events"]] == [m]


def test_logout_while_blocked_fails_with_session_invalid(hub):
    db = hub.db
    session = new_session(db)
    other = new_session(db)
    d = hub.event_from(session, ["*"], format_token(db.generation), 60.0)
    d2 = hub.event_from(other, ["*"], format_token(db.generation), 60.0)
    out, out2 = result_of(d), result_of(d2)
    hub.reactor.advance(0.1)
    db.delete("session", session)
    hub.reactor.advance(0)
    assert error_of(out[0]) == ["SESSION_INVALID", session]
    assert out2 == []
    assert session not in hub._by_session


def test_session_writes_do_not_wake_anyone(hub):
    db = hub.db
    session = new_session(db)
    d = hub.event_from(SESSION, ["*"], format_token(db.generation), 60.0)
    out = result_of(d)
    hub.reactor.advance(0.1)
    db.update("session", session, {"originator": "x"})
    assert hub._flush_timer is None
    hub.reactor.advance(1.0)
    assert out == []


def test_cancelled_calls_leave_no_trace(hub):
    d = hub.event_from(SESSION, ["vm", "network/x"], "", 60.0)
    hub.reactor.advance(0.1)
    assert hub._watch
    d.cancel()
    d.addErrback(lambda f: None)
    assert not hub._watch and not hub._by_session
    assert not hub.reactor.getDelayedCalls()


class Reply:
    """A caller's reply as the RPC endpoints give one (txxapi.replies)."""

    def __init__(self):
        self.cancel = None
        self.outcomes = []

    def ok(self, value):
        self.outcomes.append(value)

    def fail(self, failure):
        self.outcomes.append(failure)


def test_blocked_calls_answer_their_replies_directly(hub):
    db = hub.db
    token = format_token(db.generation)
    replies = [Reply() for _ in range(3)]
    for reply in replies:
        assert hub.event_from(SESSION, ["network"], token, 60.0,
                              reply) is events.ANSWERED
    hub.reactor.advance(0.1)
    # A client that goes away frees its watcher: nothing is left of it.
    gone = replies.pop()
    gone.cancel()
    assert len(hub._watch["network"]) == 2
    n = network(db)
    hub.reactor.advance(0.1)
    assert gone.outcomes == []
    first, second = (r.outcomes for r in replies)
    assert len(first) == 1 and first[0]["events"][0]["ref"] == n
    # Woken together at one token position: one reply for both.
    assert second[0] is first[0]
    assert not hub._watch and not hub._by_session


def test_thousands_of_waiters_only_interested_ones_are_woken(hub,
                                                             monkeypatch):
    db = hub.db
    n = network(db)
    token = format_token(db.generation)
    collected = []
    real = hub.collect

    def counting(call):
        collected.append(call)
        return real(call)

    outs = []
    # (Clock re-sorts its calls on every callLater: keep this modest.)
    for i in range(1500):
        classes = ["vm"] if i % 3 else ["network"]
        outs.append(result_of(hub.event_from(SESSION, classes, token, 600)))
    hub.reactor.advance(0.1)
    monkeypatch.setattr(hub, "collect", counting)
    for i in range(50):
        db.update("network", n, {"name_label": str(i)})
    hub.reactor.advance(0.1)
    # one collection per interested call, however many writes came
    assert len(collected) == 500
    answered = [o for o in outs if o]
    assert len(answered) == 500
    assert all(o[0]["events"][0]["snapshot"]["name_label"] == "49"
               for o in answered)


def test_woken_calls_find_nothing_and_wait_again(hub):
    db = hub.db
    token = format_token(db.generation)
    d = hub.event_from(SESSION, ["network", "vm"], token, 60.0)
    out = result_of(d)
    hub.reactor.advance(0.1)
    n = network(db)
    db.delete("network", n)
    hub.reactor.advance(0.1)
    assert out == []
    vm = db.create("VM", {"name_label": "v"})
    hub.reactor.advance(0.1)
    assert [e["ref"] for e in out[0]["events"]] == [vm]


# -- inject -------------------------------------------------------------------

def test_inject_returns_a_token_below_the_touch(hub):
    db = hub.db
    n = network(db)
    before = db.generation
    token = hub.inject("network", n)
    assert token == format_token(before, 0)
    assert db.table("network").rows[n].mtime == before + 1
    reply = run(hub, hub.event_from(SESSION, ["network/" + n], token, 1.0))
    assert [(e["ref"], e["operation"]) for e in reply["events"]] == \
        [(n, "mod")]
    assert reply["token"] > token


def test_inject_refuses_bad_refs(hub):
    n = network(hub.db)
    for cls, ref in (("network", "OpaqueRef:nope"), ("VM", n),
                     ("nosuchclass", n)):
        with pytest.raises(XenAPIError) as e:
            hub.inject(cls, ref)
        assert e.value.description == ["HANDLE_INVALID", cls, ref]


# -- messages hook --------------------------------------------------------

def test_messages_come_from_the_message_source(hub):
    stored = []

    def source(since):
        return len(stored), [("add", r, {"name": "X"})
                             for r in stored[since:]]

    hub.message_source = source
    reply = run(hub, hub.event_from(SESSION, ["message"], "", 1.0), 1.1)
    assert reply["events"] == [] and reply["token"].endswith(",%020d" % 0)
    d = hub.event_from(SESSION, ["message"], reply["token"], 60.0)
    out = result_of(d)
    hub.reactor.advance(0.1)
    stored.append("OpaqueRef:m1")
    hub.message_changed("add", "OpaqueRef:m1", {"name": "X"})
    hub.reactor.advance(0.1)
    reply = out[0]
    assert reply["events"] == [{"id": "0", "timestamp": "0.0",
                                "class": "message", "operation": "add",
                                "ref": "OpaqueRef:m1",
                                "snapshot": {"name": "X"}}]
    assert parse_token(reply["token"])[1] == 1


# -- legacy event.next --------------------------------------------------------

def test_next_requires_register(hub):
    with pytest.raises(XenAPIError) as e:
        hub.next(SESSION)
    assert e.value.code == "SESSION_NOT_REGISTERED"
    assert e.value.params[0].startswith("trackid=")
    assert len(e.value.params[0]) == len("trackid=") + 32


def test_next_returns_events_since_register(hub):
    db = hub.db
    before = network(db)
    hub.register(SESSION, ["NETWORK"])
    assert hub.get_current_id() == 0
    d = hub.next(SESSION)
    out = result_of(d)
    hub.reactor.advance(1.0)
    assert out == []
    db.update("network", before, {"name_label": "1"})
    hub.db.create("VM", {"name_label": "ignored"})
    added = network(db)
    db.delete("network", added)
    hub.reactor.advance(0.1)
    evs = out[0]
    assert [(e["id"], e["operation"], e["ref"]) for e in evs] == [
        ("0", "mod", before), ("1", "add", added), ("2", "del", added)]
    assert evs[0]["snapshot"]["name_label"] == "1"
    assert "snapshot" not in evs[2]
    assert evs[0]["timestamp"].endswith(".")
    assert hub.get_current_id() == 3


def test_unregister_stops_events(hub):
    db = hub.db
    hub.register(SESSION, ["network", "vm"])
    hub.unregister(SESSION, ["network"])
    d = hub.next(SESSION)
    out = result_of(d)
    network(db)
    hub.reactor.advance(1.0)
    assert out == []
    vm = db.create("VM", {"name_label": "v"})
    hub.reactor.advance(1.0)
    assert [e["ref"] for e in out[0]] == [vm]


def test_unregister_alone_registers_the_session(hub):
    hub.unregister(SESSION, ["vm"])
    d = hub.next(SESSION)
    d.cancel()
    d.addErrback(lambda f: None)


def test_overflow_loses_events(hub, monkeypatch):
    monkeypatch.setattr(events, "NEXT_QUEUE_BYTES", 2000)
    db = hub.db
    hub.register(SESSION, ["network"])
    n = network(db)
    for i in range(50):
        db.update("network", n, {"name_label": "x" * 100 + str(i)})
    assert error_of(run(hub, hub.next(SESSION), 1.0)) == ["EVENTS_LOST"]
    # the client may carry on
    db.update("network", n, {"name_label": "after"})
    evs = run(hub, hub.next(SESSION), 1.0)
    assert [e["snapshot"]["name_label"] for e in evs] == ["after"]


def test_logout_while_in_next_fails_with_session_invalid(hub):
    db = hub.db
    session = new_session(db)
    hub.register(session, ["*"])
    d = hub.next(session)
    out = result_of(d)
    hub.reactor.advance(1.0)
    db.delete("session", session)
    hub.reactor.advance(0)
    assert error_of(out[0]) == ["SESSION_INVALID", session]
    with pytest.raises(XenAPIError) as e:
        hub.next(session)
    assert e.value.code == "SESSION_NOT_REGISTERED"


# -- metrics ------------------------------------------------------------------

def test_unchanged_metrics_writes_cost_nothing(hub):
    db = hub.db
    m = db.create("host_metrics", {"memory_total": 100, "memory_free": 50})
    gen = db.generation
    assert events.update_changed(db, "host_metrics", m,
                                 {"memory_total": 100,
                                  "memory_free": 50}) == {}
    assert db.generation == gen
    assert events.update_changed(db, "host_metrics", m,
                                 {"memory_total": 100,
                                  "memory_free": 40}) == {"memory_free": 40}
    assert db.generation == gen + 1


def test_a_failing_collection_fails_only_its_call(hub):
    db = hub.db
    token = format_token(db.generation)

    def broken(since):
        raise RuntimeError("message store down")

    hub.message_source = broken
    bad = result_of(hub.event_from(SESSION, ["message", "network"], token,
                                   60.0))
    good = result_of(hub.event_from(SESSION, ["network"], token, 60.0))
    hub.reactor.advance(0.1)
    network(db)
    hub.reactor.advance(0.1)
    assert bad[0].check(RuntimeError)
    assert good[0]["events"]

"""
Events against a real `twistd xapi`: event.from full sync and tokens,
changes made by another session, class/ref subscriptions, timeouts, the
legacy register/next queue and its overflow, SESSION_INVALID on logout
while blocked, inject, and many concurrent waiters.
"""

import json
import socket
import threading
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor

import pytest
import XenAPI


class Failed(Exception):
    def __init__(self, description):
        Exception.__init__(self, description)
        self.description = description


def proxy(server):
    return xmlrpc.client.ServerProxy(server.http_url, allow_none=True)


def rpc(px, method, *args):
    """One raw XML-RPC call (its own connection): the Value or Failed."""
    fn = px
    for part in method.split("."):
        fn = getattr(fn, part)
    reply = fn(*args)
    if reply["Status"] != "Success":
        raise Failed(reply["ErrorDescription"])
    return reply["Value"]


def event_from(session, classes, token, timeout):
    return getattr(session.xenapi.event, "from")(classes, token, timeout)


def wait_for(session, classes, token, wanted, deadline=60.0):
    """Call event.from until ``wanted(events so far)``; (events, token)."""
    seen = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        reply = event_from(session, classes, token, 10.0)
        token = reply["token"]
        seen.extend(reply["events"])
        if wanted(seen):
            return seen, token
    pytest.fail("events never came: %r" % (seen,))


def ops_for(events, ref):
    return [e["operation"] for e in events if e["ref"] == ref]


@pytest.fixture
def other(server):
    """A second, independent session: the one making the changes."""
    s = server.session(https=False)
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


def test_full_sync_then_changes_by_another_session(xapi, other):
    first = event_from(xapi, ["network"], "", 5.0)
    assert first["events"], "the management network exists"
    assert {e["operation"] for e in first["events"]} == {"add"}
    for e in first["events"]:
        assert e["class"] == "network" and e["timestamp"] == "0.0"
        assert e["snapshot"] == xapi.xenapi.network.get_record(e["ref"])
    token = first["token"]
    assert len(token) == 41 and token[20] == ","
    counts = first["valid_ref_counts"]
    assert counts["network"] == len(first["events"])
    assert counts["host"] == 1 and counts["pool"] == 1

    ref = other.xenapi.network.create({"name_label": "ev-net",
                                       "name_description": "",
                                       "MTU": "1500",
                                       "other_config": {}})
    evs, token = wait_for(xapi, ["network"], token,
                          lambda evs: ops_for(evs, ref))
    add = [e for e in evs if e["ref"] == ref][0]
    assert add["operation"] == "add"
    assert add["snapshot"]["name_label"] == "ev-net"

    other.xenapi.network.set_name_label(ref, "renamed")
    evs, token = wait_for(xapi, ["NETWORK"], token,
                          lambda evs: ops_for(evs, ref))
    mod = [e for e in evs if e["ref"] == ref][-1]
    assert mod["operation"] == "mod"
    assert mod["snapshot"]["name_label"] == "renamed"

    other.xenapi.network.destroy(ref)
    evs, token = wait_for(xapi, ["network"], token,
                          lambda evs: ops_for(evs, ref))
    assert ops_for(evs, ref) == ["del"]
    assert "snapshot" not in [e for e in evs if e["ref"] == ref][0]


def test_created_and_destroyed_in_the_window_is_not_reported(xapi, other):
    token = event_from(xapi, ["network"], "", 5.0)["token"]
    gone = other.xenapi.network.create({"name_label": "brief",
                                        "name_description": "",
                                        "MTU": "1500", "other_config": {}})
    other.xenapi.network.destroy(gone)
    kept = other.xenapi.network.create({"name_label": "kept",
                                        "name_description": "",
                                        "MTU": "1500", "other_config": {}})
    evs, _ = wait_for(xapi, ["network"], token,
                      lambda evs: ops_for(evs, kept))
    assert ops_for(evs, gone) == []
    other.xenapi.network.destroy(kept)


def test_object_subscription(xapi, other):
    mine = other.xenapi.network.create({"name_label": "mine",
                                        "name_description": "",
                                        "MTU": "1500", "other_config": {}})
    theirs = other.xenapi.network.create({"name_label": "theirs",
                                          "name_description": "",
                                          "MTU": "1500", "other_config": {}})
    sub = ["network/" + mine]
    first = event_from(xapi, sub, "", 5.0)
    assert [e["ref"] for e in first["events"]] == [mine]
    other.xenapi.network.set_name_label(theirs, "x")
    other.xenapi.network.set_name_label(mine, "y")
    evs, _ = wait_for(xapi, sub, first["token"],
                      lambda evs: ops_for(evs, mine))
    assert {e["ref"] for e in evs} == {mine}
    assert evs[-1]["snapshot"]["name_label"] == "y"
    for ref in (mine, theirs):
        other.xenapi.network.destroy(ref)


def test_timeout_returns_an_empty_batch(xapi):
    token = event_from(xapi, ["network"], "", 5.0)["token"]
    start = time.monotonic()
    reply = event_from(xapi, ["network/OpaqueRef:none"], token, 1.0)
    assert reply["events"] == []
    assert time.monotonic() - start >= 0.9
    assert reply["token"] >= token


def test_bad_token_and_subscription(xapi):
    with pytest.raises(XenAPI.Failure) as e:
        event_from(xapi, ["*"], "not-a-token", 1.0)
    assert e.value.details == ["EVENT_FROM_TOKEN_PARSE_FAILURE",
                               "not-a-token"]
    with pytest.raises(XenAPI.Failure) as e:
        event_from(xapi, ["vm/"], "", 1.0)
    assert e.value.details == ["EVENT_SUBSCRIPTION_PARSE_FAILURE", "vm/"]


def test_inject_token_is_reached_by_event_from(xapi, other):
    pool = xapi.xenapi.pool.get_all()[0]
    start = event_from(xapi, ["pool"], "", 5.0)["token"]
    injected = other.xenapi.event.inject("pool", pool)
    assert len(injected) == 41 and injected.endswith(",%020d" % 0)
    assert injected >= start
    token, seen = start, []
    end = time.monotonic() + 60
    while token < injected or not seen:
        assert time.monotonic() < end
        reply = event_from(xapi, ["pool"], token, 10.0)
        token = reply["token"]
        seen.extend(reply["events"])
    assert token > injected
    assert [e["operation"] for e in seen if e["ref"] == pool] == ["mod"]
    with pytest.raises(XenAPI.Failure) as e:
        xapi.xenapi.event.inject("VM", pool)
    assert e.value.details == ["HANDLE_INVALID", "VM", pool]


def test_legacy_register_next(xapi, other):
    with pytest.raises(XenAPI.Failure) as e:
        xapi.xenapi.event.next()
    assert e.value.details[0] == "SESSION_NOT_REGISTERED"
    xapi.xenapi.event.register(["network"])
    start_id = xapi.xenapi.event.get_current_id()
    ref = other.xenapi.network.create({"name_label": "legacy",
                                       "name_description": "",
                                       "MTU": "1500", "other_config": {}})
    evs = []
    while not ops_for(evs, ref):
        evs.extend(xapi.xenapi.event.next())
    e = [e for e in evs if e["ref"] == ref][0]
    assert e["operation"] == "add" and e["class"] == "network"
    assert int(e["id"]) >= int(start_id)
    assert float(e["timestamp"]) > 1e9
    assert e["snapshot"]["name_label"] == "legacy"
    assert int(xapi.xenapi.event.get_current_id()) > int(start_id)
    xapi.xenapi.event.unregister(["network"])
    other.xenapi.network.destroy(ref)


def test_next_queue_overflow_loses_events(xapi, other):
    ref = other.xenapi.network.create({"name_label": "big",
                                       "name_description": "",
                                       "MTU": "1500", "other_config": {}})
    xapi.xenapi.event.register(["network/" + ref])
    # Each event carries a ~100 kB snapshot: the 10 MB queue overflows.
    for i in range(130):
        other.xenapi.network.set_name_label(ref, "%03d" % i + "x" * 100000)
    with pytest.raises(XenAPI.Failure) as e:
        xapi.xenapi.event.next()
    assert e.value.details == ["EVENTS_LOST"]
    other.xenapi.network.set_name_label(ref, "small")
    evs = []
    while not evs:
        evs = xapi.xenapi.event.next()
    assert evs[-1]["snapshot"]["name_label"] == "small"
    other.xenapi.network.destroy(ref)


@pytest.mark.parametrize("how", ["from", "next"])
def test_logout_while_blocked_is_session_invalid(server, how):
    px = proxy(server)
    session = rpc(px, "session.login_with_password", "root",
                  "xenroot-test", "1.0", "events-test")
    if how == "from":
        token = rpc(px, "event.from", session, ["network"], "", 5.0)["token"]
        args = ("event.from", session, ["network"], token, 60.0)
    else:
        rpc(px, "event.register", session, ["network"])
        args = ("event.next", session)
    outcome = []

    def blocked():
        try:
            outcome.append(rpc(proxy(server), *args))
        except Failed as e:
            outcome.append(e.description)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(1.0)
    assert outcome == [], "the call should still be waiting"
    rpc(proxy(server), "session.logout", session)
    t.join(30)
    assert not t.is_alive()
    assert outcome == [["SESSION_INVALID", session]]


def _watched_network(xapi, other, label):
    """A new network, the subscription to it and a current token."""
    ref = other.xenapi.network.create({"name_label": label,
                                       "name_description": "",
                                       "MTU": "1500", "other_config": {}})
    sub = ["network/" + ref]
    return ref, sub, event_from(xapi, sub, "", 5.0)["token"]


def test_two_hundred_concurrent_waiters_each_see_the_change(server, xapi,
                                                            other):
    ref, sub, token = _watched_network(xapi, other, "watched")
    session = xapi._session
    n = 200
    ready = threading.Barrier(n + 1)

    def waiter():
        px = proxy(server)  # a connection of its own
        ready.wait(60)
        seen, tok = [], token
        end = time.monotonic() + 120
        while not seen and time.monotonic() < end:
            reply = rpc(px, "event.from", session, sub, tok, 30.0)
            tok = reply["token"]
            seen.extend(reply["events"])
        return seen

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(waiter) for _ in range(n)]
        ready.wait(60)
        time.sleep(0.5)  # most of them are blocked by now
        other.xenapi.network.set_name_label(ref, "changed once")
        results = [f.result(timeout=180) for f in futures]
    for seen in results:
        assert [(e["ref"], e["operation"]) for e in seen] == [(ref, "mod")]
        assert seen[0]["snapshot"]["name_label"] == "changed once"
    other.xenapi.network.destroy(ref)


def _raw_request(server, version, path, content_type, body, close=False):
    head = ["POST %s %s" % (path, version), "Host: x",
            "Content-Type: " + content_type,
            "Content-Length: %d" % len(body)]
    if close:
        head.append("Connection: close")
    sock = socket.create_connection(("127.0.0.1", server.http_port))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def _raw_reply(sock):
    """(status line, headers, body) of one response with a Content-Length."""
    data = b""
    sock.settimeout(60)
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["Content-Length"]):
        body += sock.recv(65536)
    return lines[0], headers, body


def test_watchers_woken_together_get_their_own_envelopes(server, xapi, other):
    # One reply is shared by the watchers woken together; each still gets
    # its own call's envelope and its own request's headers.
    ref, sub, token = _watched_network(xapi, other, "shared")
    params = [xapi._session, sub, token, 30.0]
    calls = [  # (HTTP version, Connection: close, JSON-RPC id or None)
        ("HTTP/1.1", False, 1), ("HTTP/1.1", False, 1),
        ("HTTP/1.1", False, "b"), ("HTTP/1.1", True, 1),
        ("HTTP/1.0", False, 1), ("HTTP/1.1", False, None),
        ("HTTP/1.1", False, None)]
    socks = []
    for version, close, call_id in calls:
        if call_id is None:
            body = xmlrpc.client.dumps(tuple(params), "event.from").encode()
            socks.append(_raw_request(server, version, "/", "text/xml", body,
                                      close))
        else:
            body = json.dumps({"jsonrpc": "2.0", "id": call_id,
                               "method": "event.from",
                               "params": params}).encode()
            socks.append(_raw_request(server, version, "/jsonrpc",
                                      "application/json", body, close))
    time.sleep(0.5)  # all blocked by now
    other.xenapi.network.set_name_label(ref, "woken")
    replies = [_raw_reply(sock) for sock in socks]
    for sock in socks:
        sock.close()
    results = []
    for (version, close, call_id), (status, headers, body) in zip(
            calls, replies):
        assert status == version + " 200 OK"
        assert (headers.get("Connection") == "close") == close
        if call_id is None:
            assert headers["Content-Type"] == "text/xml"
            (reply,), _ = xmlrpc.client.loads(body)
            assert reply["Status"] == "Success"
            result = reply["Value"]
        else:
            assert headers["Content-Type"] == "application/json"
            reply = json.loads(body)
            assert reply["id"] == call_id and reply["jsonrpc"] == "2.0"
            result = reply["result"]
        [event] = result["events"]
        assert (event["ref"], event["snapshot"]["name_label"]) == (
            ref, "woken")
        results.append((call_id is None, result))
    # The same reply for all, as each wire writes it.
    for xml in (False, True):
        same = [r for is_xml, r in results if is_xml == xml]
        assert same and all(r == same[0] for r in same)
    other.xenapi.network.destroy(ref)

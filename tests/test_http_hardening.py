"""
The HTTP layer against what real clients and hostile ones send, over real
sockets to a real server: paths routed by longest prefix as XAPI routes
them (Xen Orchestra's trailing slashes and its empty probe PUT), XML
bodies in encodings that cannot be read, header-phase time limits and the
per-client connection cap, the pool secret, and tasks named by requests
that carry no valid session.
"""

import hmac
import http.client
import json
import os
import random
import socket
import time

import pytest
from twisted.web.http_headers import Headers

from tests.support import inprocess
from tests.support.api import wait_until
from tests.support.servers import RunningServer
from txxapi.http import auth

MIB = 1 << 20
SIZE = 2 * MIB    # a multiple of what the local SR rounds sizes to


@pytest.fixture
def sid(xapi):
    return xapi._session


def new_vdi(x, size=SIZE):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    return x.VDI.create({
        "name_label": "hardening", "name_description": "", "SR": sr,
        "virtual_size": str(size), "type": "user", "sharable": False,
        "read_only": False, "other_config": {}, "xenstore_data": {},
        "sm_config": {}, "tags": []})


def exchange(server, method, path, body=None, headers=None):
    """(status, headers, body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port,
                                      timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def task_of(headers):
    return headers["task-id"].strip()


# --- 1. paths by longest prefix ----------------------------------------------

@pytest.mark.parametrize("path", ["/import_raw_vdi", "/import_raw_vdi/",
                                  "/import%5Fraw%5Fvdi/"])
def test_import_and_export_with_or_without_a_trailing_slash(
        x, server, sid, path):
    vdi = new_vdi(x)
    data = random.Random(path).randbytes(SIZE)
    status, headers, _ = exchange(
        server, "PUT", "%s?session_id=%s&vdi=%s" % (path, sid, vdi), data)
    assert status == 200
    assert x.task.get_status(task_of(headers)) == "success"
    for export_path in ("/export_raw_vdi/", "/export_raw_vdi"):
        status, headers, body = exchange(
            server, "GET", "%s?session_id=%s&vdi=%s" % (export_path, sid,
                                                        vdi))
        assert status == 200 and body == data
    x.VDI.destroy(vdi)


def test_the_empty_probe_put_answers_200_and_leaves_the_vdi_free(
        x, server, sid):
    """Xen Orchestra's putResource sends an empty PUT (no task_id) and,
    as soon as the answer comes, the real upload."""
    vdi = new_vdi(x)
    data = random.Random(2).randbytes(SIZE)
    assert exchange(server, "PUT", "/import_raw_vdi/?session_id=%s&vdi=%s"
                    % (sid, vdi), data)[0] == 200
    status, headers, body = exchange(
        server, "PUT", "/import_raw_vdi/?session_id=%s&vdi=%s&format=raw"
        % (sid, vdi), b"")
    assert status == 200 and body == b""
    probe = task_of(headers)
    wait_until(lambda: x.task.get_status(probe) == "success",
               what="the probe's task")
    # At once free for the upload that follows, and unchanged.
    task = x.task.create("upload", "")
    status, headers, _ = exchange(
        server, "PUT", "/import_raw_vdi/?session_id=%s&vdi=%s&task_id=%s"
        % (sid, vdi, task), data[::-1])
    assert status == 200 and task_of(headers) == task
    assert x.task.get_status(task) == "success"
    status, _, body = exchange(
        server, "GET", "/export_raw_vdi/?session_id=%s&vdi=%s" % (sid, vdi))
    assert body == data[::-1]
    x.VDI.destroy(vdi)


@pytest.mark.parametrize("path,json_rpc", [
    ("/jsonrpc/", True), ("/jsonrpc", True), ("/RPC2/", False),
    ("/json/", False), ("/anything", False)])
def test_every_post_reaches_an_rpc_endpoint(server, path, json_rpc):
    if json_rpc:
        body = json.dumps({"jsonrpc": "2.0", "id": 1,
                           "method": "session.get_all_subject_identifiers",
                           "params": ["OpaqueRef:bogus"]}).encode()
    else:
        body = (b"<?xml version='1.0'?><methodCall><methodName>"
                b"session.get_all_subject_identifiers</methodName><params>"
                b"<param><value>OpaqueRef:bogus</value></param></params>"
                b"</methodCall>")
    status, headers, answer = exchange(server, "POST", path, body)
    assert status == 200
    if json_rpc:
        assert json.loads(answer)["error"]["message"] == "SESSION_INVALID"
    else:
        assert b"SESSION_INVALID" in answer and b"<methodResponse>" in answer


# --- 2. XML bodies in encodings that cannot be read --------------------------

def log_since(server, start):
    with open(server.log_path, "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "replace")


def log_size(server):
    return os.path.getsize(server.log_path)


CALL = ("<methodCall><methodName>session.get_all_subject_identifiers"
        "</methodName><params><param><value>OpaqueRef:bogus</value></param>"
        "</params></methodCall>")


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0" encoding="foo-bar"?>' + CALL.encode(),
    b'<?xml version="1.0" encoding="EBCDIC-US"?>' + CALL.encode(),
    b'<?xml version="1.0" encoding="UTF-7"?>' + CALL.encode(),
    b'<?xml version="1.0" encoding="UTF-32"?>' + CALL.encode(),
    b'<?xml version="1.0" encoding="UTF-16"?>' + CALL.encode(),
], ids=["unknown", "ebcdic", "utf7", "utf32", "utf16-declared"])
def test_unreadable_encodings_are_malformed_bodies(server, body):
    start = log_size(server)
    status, headers, answer = exchange(server, "POST", "/", body)
    assert status == 400
    assert headers["content-type"] == "text/xml"
    assert b"<fault>" in answer and b"Malformed request" in answer
    log = log_since(server, start)
    assert "Traceback" not in log and "Unhandled" not in log, log


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_read(server, codec):
    """With a BOM or without (told by its first bytes), as XML parsers,
    XAPI's among them, read it."""
    body = ('<?xml version="1.0" encoding="UTF-16"?>' + CALL).encode(codec)
    status, _, answer = exchange(server, "POST", "/", body)
    assert status == 200 and b"SESSION_INVALID" in answer



def test_non_ascii_query_values_reach_the_handler(server, sid):
    """A %-escaped UTF-8 value is a value like any other (here a VDI that
    does not exist: XAPI's 500 page naming the error)."""
    start = log_size(server)
    status, _, body = exchange(server, "GET", "/export_raw_vdi?session_id="
                               "%s&vdi=%%C3%%A9%%FF" % sid)
    assert status == 500 and b"UUID_INVALID" in body
    assert "Traceback" not in log_since(server, start)

# --- 4. the pool secret ------------------------------------------------------

class _Request:
    """What authenticate() reads of a request, for in-process checks."""

    channel = None
    clientproto = b"HTTP/1.1"

    def __init__(self, uri):
        self.uri = uri
        self.requestHeaders = Headers()

    def getHeader(self, name):
        return None


def _authenticate(server, uri):
    request = _Request(uri)
    results = []
    auth.authenticate(server, request, auth.Params(request), "VDI.export_raw",
                      "get_export_raw_vdi").addBoth(results.append)
    return results[0]


def test_the_pool_secret_is_compared_in_constant_time(tmp_path, monkeypatch):
    server, _ = inprocess.make_server(tmp_path)
    compared = []
    original = hmac.compare_digest

    def compare_digest(a, b):
        compared.append((a, b))
        return original(a, b)
    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    secret = server.pool_secret
    caller = _authenticate(server, b"/export_raw_vdi?pool_secret=" +
                           secret.encode())
    assert isinstance(caller, auth.Caller)
    caller.close()
    assert compared == [(secret.encode(), secret.encode())]
    for wrong in (secret[:-1] + "x", secret[:4], "%C3%A9", ""):
        refused = _authenticate(server, b"/export_raw_vdi?pool_secret=" +
                                wrong.encode())
        assert refused.check(auth.Refused)
        assert b"401 Unauthorised" in refused.value.response


# --- 5. tasks named by refused requests --------------------------------------

def test_a_request_without_valid_credentials_leaves_the_named_task(
        x, server, sid):
    vdi = new_vdi(x)
    task = x.task.create("someone's task", "")
    for query, headers in [
            ("session_id=OpaqueRef:bogus", {}),
            ("", {"Authorization": "Basic cm9vdDp3cm9uZw=="}),  # root:wrong
            ("pool_secret=wrong", {}),
            ("", {"Cookie": "session_id=OpaqueRef:bogus"})]:
        for method, path, body in [("PUT", "/import_raw_vdi", b"x" * 512),
                                   ("GET", "/export_raw_vdi", None)]:
            status, _, _ = exchange(server, method, "%s?%s&vdi=%s&task_id=%s"
                                    % (path, query, vdi, task), body,
                                    headers)
            assert status == 401
            assert x.task.get_status(task) == "pending"
            assert x.task.get_error_info(task) == []
    x.task.destroy(task)
    x.VDI.destroy(vdi)


def test_an_rbac_refusal_fails_only_the_refused_sessions_own_task(
        tmp_path):
    server, _ = inprocess.make_server(tmp_path)
    limited = server.sessions.create("reader", is_local_superuser=False,
                                     permissions=("task.create",))
    other = server.sessions.create("admin")
    own = server.tasks.create(limited, "the reader's task")
    theirs = server.tasks.create(other, "someone else's task")
    for task in (own, theirs):
        refused = _authenticate(server, (
            "/export_raw_vdi?session_id=%s&task_id=%s"
            % (limited, task)).encode())
        assert refused.check(auth.Refused)
        assert b"403 Forbidden" in refused.value.response
    fields = server.db.fields("task", own)
    assert fields["status"] == "failure"
    assert fields["error_info"][0] == "RBAC_PERMISSION_DENIED"
    assert fields["error_info"][1] == "http/get_export_raw_vdi"
    fields = server.db.fields("task", theirs)
    assert fields["status"] == "pending" and fields["error_info"] == []


# --- 3. the header phase's time limits, connections per client ---------------

READ_TIMEOUT, TOTAL_TIMEOUT, CAP = 0.5, 2.0, 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A server with XAPI's header limits made short, and a small cap."""
    base = tmp_path_factory.mktemp("limited")
    s = RunningServer(os.path.join(str(base), "data"), extra_args=[
        "--header-read-timeout", str(READ_TIMEOUT),
        "--header-total-timeout", str(TOTAL_TIMEOUT),
        "--max-connections-per-client", str(CAP)])
    s.start()
    yield s
    s.stop()


def connect(server):
    return socket.create_connection(("127.0.0.1", server.http_port),
                                    timeout=30)


def read_all(sock):
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def closed_by_server(sock, wait):
    """Whether the server closes the connection within ``wait`` seconds
    (and what it sent)."""
    sock.settimeout(wait)
    try:
        return True, read_all(sock)
    except socket.timeout:
        return False, b""


def test_a_silent_connection_gets_408_after_the_read_timeout(limited):
    with connect(limited) as s:
        closed, answer = closed_by_server(s, 20)
    assert closed
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in answer.lower()
    assert b"Timed out waiting for the request" in answer


def test_a_trickling_header_is_cut_at_the_total_timeout(limited):
    """Each byte well within the read timeout, the whole far beyond the
    total: the server ends it, and it never reaches a handler."""
    with connect(limited) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        s.settimeout(READ_TIMEOUT / 4)
        answer = b""
        for _ in range(int(20 / (READ_TIMEOUT / 4))):   # up to 20 s
            try:
                s.sendall(b"X")
                answer = s.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
        else:
            pytest.fail("a header trickling for 20 s was not cut")
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")


def test_a_kept_alive_connection_may_wait_between_requests(limited):
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(limited) as s:
        s.sendall(request)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        closed, _ = closed_by_server(s, TOTAL_TIMEOUT + 1)
        assert not closed, "an idle kept-alive connection was closed"
        s.settimeout(30)
        s.sendall(request)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_slow_body_is_not_cut(limited):
    """An upload whose body pauses longer than the header's limits, and
    takes longer in all."""
    session = limited.session(https=False)
    x, sid = session.xenapi, session._session
    try:
        vdi = new_vdi(x)
        data = random.Random(3).randbytes(SIZE)
        pieces = 4
        with connect(limited) as s:
            s.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s HTTP/1.1\r\n"
                       "Host: x\r\nContent-Length: %d\r\n\r\n"
                       % (sid, vdi, SIZE)).encode())
            step = SIZE // pieces
            for i in range(pieces):
                time.sleep(READ_TIMEOUT * 2)
                s.sendall(data[i * step:(i + 1) * step])
            s.settimeout(30)
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        task = answer.split(b"task-id:")[1].split(b"\r\n")[0].decode()
        wait_until(lambda: x.task.get_status(task) != "pending",
                   what="the upload's task")
        assert x.task.get_status(task) == "success"
        status, _, body = exchange(limited, "GET", "/export_raw_vdi?"
                                   "session_id=%s&vdi=%s" % (sid, vdi))
        assert body == data
        x.VDI.destroy(vdi)
    finally:
        x.session.logout()


def served_connection(server):
    """A kept-alive connection the server has served, or None if it was
    refused."""
    s = connect(server)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        if s.recv(65536).startswith(b"HTTP/1.1 200"):
            return s
    except OSError:
        pass
    s.close()
    return None


def test_connections_per_client_are_capped(limited):
    held = []
    try:
        # Earlier tests' connections may take a moment to be let go.
        def hold():
            s = served_connection(limited)
            if s is not None:
                held.append(s)
            return len(held) == CAP
        wait_until(hold, what="%d connections served" % CAP)
        try:
            extra = connect(limited)
        except ConnectionResetError:
            pass    # the refusal's reset can beat connect()'s return
        else:
            with extra:
                closed, answer = closed_by_server(extra, 20)
                assert closed and answer == b""
        held.pop().close()
        # The slot is free again once the server sees the close.
        wait_until(hold, what="a connection to be served again")
    finally:
        for s in held:
            s.close()


def test_a_silent_tls_connection_is_closed_too(limited):
    """No handshake at all: the header's clock runs from the accept."""
    with socket.create_connection(("127.0.0.1", limited.https_port),
                                  timeout=30) as s:
        closed, _ = closed_by_server(s, 30)
    assert closed


def test_a_cap_of_zero_admits_any_number():
    from txxapi.http.limits import ClientConnections
    unlimited, capped = ClientConnections(0), ClientConnections(3)
    assert all(unlimited.admit("127.0.0.1") for _ in range(5000))
    assert [capped.admit("127.0.0.1") for _ in range(4)] == [
        True, True, True, False]
    capped.release("127.0.0.1")
    assert capped.admit("127.0.0.1")

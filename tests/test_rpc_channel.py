"""
RPC calls answered by txxapi's own HTTP/1.1 code (txxapi.http.rpc_channel)
against the same calls through twisted.web: two servers on copies of one
data dir, one of them started with --rpc-http twisted-web, get the same
raw bytes and must send back the same bytes (the Date header aside):
keep-alive and pipelining, HTTP/1.0, Connection: close, Expect:
100-continue, bodies in pieces, malformed bodies, oversized and chunked
bodies, and requests that are handed to twisted.web mid-connection.
"""

import json
import os
import re
import shutil
import socket
import ssl
import time
import xmlrpc.client

import pytest

from tests.support.servers import PASSWORD, USER, RunningServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("rpc-channel"))
    first = RunningServer(os.path.join(base, "direct", "data"))
    first.start()
    first.stop()
    shutil.copytree(os.path.join(base, "direct"),
                    os.path.join(base, "web"))
    direct = RunningServer(os.path.join(base, "direct", "data"))
    web = RunningServer(os.path.join(base, "web", "data"),
                        extra_args=["--rpc-http", "twisted-web"])
    direct.start()
    web.start()
    yield direct, web
    direct.stop()
    web.stop()


def xml(method, *params):
    return xmlrpc.client.dumps(params, method).encode()


def post(body, path="/", version="1.1", headers=()):
    head = ["POST %s HTTP/%s" % (path, version), "Host: x",
            "Content-Type: text/xml", "Content-Length: %d" % len(body)]
    return ("\r\n".join(head + list(headers)) + "\r\n\r\n").encode() + body


CLOSE = ("Connection: close",)


def exchange(server, pieces, tls=False, pause=0.0, alpn=None):
    """Send the pieces in turn (a pause between them), then read until the
    server closes; the Date header masked."""
    sock = socket.create_connection(("127.0.0.1", server.https_port if tls
                                     else server.http_port), timeout=30)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        sock = ctx.wrap_socket(sock)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answer = b""
    with sock:
        for piece in pieces:
            if callable(piece):
                answer += piece(sock)
                continue
            sock.sendall(piece)
            time.sleep(pause)
        with sock.makefile("rb") as rest:
            answer += rest.read()
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)


def same(pair, pieces, **kw):
    direct, web = pair
    ours = exchange(direct, pieces, **kw)
    assert ours == exchange(web, pieces, **kw)
    return ours


BAD_SESSION = xml("VM.get_all", "OpaqueRef:no-such-session")


def test_a_call_and_its_headers(pair):
    answer = same(pair, [post(BAD_SESSION, headers=CLOSE)])
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 200 OK", b"Connection: close",
        b"Server: " + __import__("twisted.web.server").web.server.version,
        b"Date: -", b"Access-Control-Allow-Origin: *",
        b"Access-Control-Allow-Headers: X-Requested-With",
        b"Content-Type: text/xml", b"Content-Length: %d" % len(body)]
    assert b"SESSION_INVALID" in body


def test_pipelined_calls_are_answered_in_order(pair):
    calls = [xml("VM.get_all", "OpaqueRef:s%d" % i) for i in range(3)]
    answer = same(pair, [post(calls[0]) + post(calls[1])
                         + post(calls[2], headers=CLOSE)])
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(b"s0") < answer.index(b"s1") < answer.index(b"s2")


def test_http_1_0_is_answered_in_kind_and_closed(pair):
    answer = same(pair, [post(BAD_SESSION, version="1.0")
                         + post(BAD_SESSION)])
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert answer.count(b"HTTP/1.") == 1


def test_expect_100_continue(pair):
    request = post(BAD_SESSION, headers=("Expect: 100-continue",) + CLOSE)
    head, body = request.split(b"\r\n\r\n", 1)

    def continued(sock):
        got = sock.recv(65536)
        sock.sendall(body)
        return got
    answer = same(pair, [head + b"\r\n\r\n", continued])
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_a_request_in_small_pieces(pair):
    request = post(BAD_SESSION, headers=CLOSE)
    pieces = [request[i:i + 23] for i in range(0, len(request), 23)]
    answer = same(pair, pieces, pause=0.002)
    assert b"SESSION_INVALID" in answer


@pytest.mark.parametrize("alpn", [None, ["http/1.1"], ["h2", "http/1.1"]])
def test_over_tls(pair, alpn):
    """Browsers, curl and node offer protocols in ALPN: the server's
    choice is the site's, as before."""
    answer = same(pair, [post(BAD_SESSION) + post(BAD_SESSION,
                                                  headers=CLOSE)],
                  tls=True, alpn=alpn)
    assert answer.count(b"SESSION_INVALID") == 2


def test_malformed_bodies_keep_the_connection(pair):
    answer = same(pair, [post(b"<methodCall><nope") + post(
        b"{not json", path="/jsonrpc") + post(BAD_SESSION, headers=CLOSE)])
    assert answer.count(b"HTTP/1.1 400 Bad Request") == 2
    assert b"SESSION_INVALID" in answer


def test_json_rpc(pair):
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "VM.get_all",
                       "params": ["OpaqueRef:x"]}).encode()
    answer = same(pair, [post(body, path="/jsonrpc", headers=CLOSE)])
    assert b"Content-Type: application/json" in answer
    assert b"SESSION_INVALID" in answer


def test_a_login_and_calls_on_its_session(pair):
    """The same data: the pool's ref is the same on both servers."""
    sessions = []
    for server in pair:
        answer = exchange(server, [post(xml(
            "session.login_with_password", USER, PASSWORD, "1.0", "t"),
            headers=CLOSE + ("User-Agent: rpc-channel-test",))])
        sessions.append(xmlrpc.client.loads(
            answer.split(b"\r\n\r\n", 1)[1])[0][0]["Value"])
    answers = [exchange(server, [post(xml("pool.get_all", session),
                                      headers=CLOSE)])
               for server, session in zip(pair, sessions)]
    assert answers[0] == answers[1] and b"OpaqueRef:" in answers[0]


def test_a_refused_login_names_the_user_agent(pair):
    answer = same(pair, [post(xml("session.login_with_password", USER,
                                  "wrong", "1.0", "t"),
                              headers=CLOSE + ("User-Agent: agent-x",))])
    assert b"SESSION_AUTHENTICATION_FAILED" in answer


def test_other_requests_are_handed_to_twisted_web(pair):
    answer = same(pair, [post(BAD_SESSION) + b"GET / HTTP/1.1\r\nHost: x"
                         b"\r\n\r\n" + post(BAD_SESSION, headers=CLOSE)])
    assert answer.count(b"SESSION_INVALID") == 2 and b"txxapi\n" in answer
    assert b"Allow-Methods: POST, OPTIONS" in same(pair, [
        b"OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])


def test_an_oversized_body_is_refused_before_it_is_read(pair):
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (10 << 20))
    answer = same(pair, [head])
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body(pair):
    body = BAD_SESSION
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
               b"\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
               % (len(body), body))
    assert b"SESSION_INVALID" in same(pair, [request])


def test_a_malformed_head(pair):
    assert same(pair, [b"POST / HTTP/1.1\r\nBad Header\r\n\r\n"]).startswith(
        b"HTTP/1.1 400 Bad Request")
    assert same(pair, [b"POST / HTTP/1.1\r\nContent-Length: x1\r\n\r\n"]) \
        .startswith(b"HTTP/1.1 400 Bad Request")

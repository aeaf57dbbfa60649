"""
Bounded fuzzing of what a client controls: both RPC codecs (decoders fed
mutated and random bodies, encoders fed any value), calls through the RPC
endpoints, and raw HTTP requests to the site.  The site runs in-process
on a Clock-driven server, fed through a StringTransport, so a few hundred
examples take seconds.

What must hold: a decoder returns a call or raises MalformedRequest; an
encoder's output parses; HTTP answers carry no 5xx but XAPI's own (its 500
Internal Error page of the data handlers, 501); an RPC answer carries no
INTERNAL_ERROR except the one XAPI-style answer to a body that cannot be
decoded; nothing logs a failure.
"""

import json
import re
import xmlrpc.client
from urllib.parse import quote_from_bytes
from xml.parsers import expat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tests.support import inprocess
from txxapi.http.site import make_site
from txxapi.wire import jsonrpc
from txxapi.wire import xmlrpc as wire_xmlrpc
from txxapi.wire.errors import MalformedRequest

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

# --- inputs ------------------------------------------------------------------

XML_CALLS = [
    b"<?xml version='1.0'?><methodCall><methodName>session.login_with_"
    b"password</methodName><params><param><value><string>root</string>"
    b"</value></param><param><value>secret</value></param></params>"
    b"</methodCall>",
    b"<methodCall><methodName>VM.set_other_config</methodName><params>"
    b"<param><value>OpaqueRef:x</value></param><param><value><struct>"
    b"<member><name>k</name><value><int>1</int></value></member><member>"
    b"<name>d</name><value><array><data><value><double>1.5</double></value>"
    b"<value><boolean>1</boolean></value><value><dateTime.iso8601>"
    b"20240101T00:00:00Z</dateTime.iso8601></value><value><base64>AAE="
    b"</base64></value></data></array></value></member></struct></value>"
    b"</param></params></methodCall>",
]
XML_PIECES = [
    b"<value>", b"</value>", b"<struct>", b"<member>", b"<name>", b"<array>",
    b"<data>", b"<int>", b"<i8>99999999999999999999999</i8>", b"</",
    b"<double>nan</double>", b"<double>1e999</double>", b"&#0;", b"&#xD800;",
    b"&amp;", b"&bogus;", b"<![CDATA[x]]>", b"<!DOCTYPE a>",
    b"<?xml version='1.0' encoding='UTF-7'?>", b"<?xml encoding='x-y'?>",
    b"<boolean>2</boolean>", b"<base64>!!</base64>", b"<nil/>",
    b"<dateTime.iso8601>99999999T99:99:99</dateTime.iso8601>",
    b"\xff\xfe", b"\xc3", b"\x00", b"]]>", b"<methodName>", b"<params>",
]
JSON_CALLS = [
    b'{"jsonrpc":"2.0","id":1,"method":"session.login_with_password",'
    b'"params":["root","secret","1.0","fuzz"]}',
    b'{"id":"a","method":"VM.get_record","params":["OpaqueRef:x"]}',
    b'{"jsonrpc":"2.0","id":2,"method":"VM.set_other_config","params":'
    b'["OpaqueRef:x",{"k":"v","n":[1,2.5,true,null,{"d":[]}]}]}',
]
JSON_PIECES = [
    b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\ud800", b"\\u0000",
    b"1e999", b"-0", b"NaN", b"Infinity", b"null", b"true",
    b"123456789012345678901234567890", b'"jsonrpc":"1.0"', b'"id":true',
    b'"params":{}', b'"method":7', b"[" * 40, b"\xff", b"\xc3", b"\x00",
]


def mutated(seeds, pieces):
    """A seed body with a few slices replaced, removed or inserted."""
    def apply(seed, edits):
        data = bytearray(seed)
        for where, length, piece in edits:
            where = where % (len(data) + 1)
            data[where:where + length] = piece
        return bytes(data)
    edit = st.tuples(st.integers(0, 1 << 16), st.integers(0, 12),
                     st.one_of(st.sampled_from(pieces), st.binary(max_size=6),
                               st.just(b"")))
    return st.builds(apply, st.sampled_from(seeds),
                     st.lists(edit, min_size=1, max_size=4))


def bodies(seeds, pieces):
    return st.one_of(mutated(seeds, pieces), st.binary(max_size=300),
                     st.lists(st.sampled_from(pieces), max_size=30).map(
                         b"".join))


# Any text, surrogates and controls included.
texts = st.text(st.characters(codec=None), max_size=20)
scalars = st.one_of(texts, st.booleans(),
                    st.integers(-(1 << 63), (1 << 63) - 1),
                    st.floats(allow_nan=True, allow_infinity=True))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(texts, inner, max_size=4)), max_leaves=20)

# --- the codecs --------------------------------------------------------------


@FUZZ
@given(bodies(XML_CALLS, XML_PIECES))
def test_the_xmlrpc_decoder_returns_a_call_or_refuses(body):
    try:
        method, params = wire_xmlrpc.decode_call(body)
    except MalformedRequest:
        return
    assert isinstance(method, str) and method
    assert isinstance(params, list)


@FUZZ
@given(bodies(JSON_CALLS, JSON_PIECES))
def test_the_jsonrpc_decoder_returns_a_call_or_refuses(body):
    try:
        call = jsonrpc.decode_call(body)
    except MalformedRequest:
        return
    assert isinstance(call.method, str)
    assert isinstance(call.params, list)


@FUZZ
@given(values)
def test_the_encoders_write_what_parsers_read(value):
    answer = wire_xmlrpc.encode_success(value)
    expat.ParserCreate().Parse(answer, True)
    xmlrpc.client.loads(answer)
    call = jsonrpc.decode_call(b'{"jsonrpc":"2.0","id":1,"method":"m"}')
    json.loads(jsonrpc.encode_success(call, value))
    failure = wire_xmlrpc.encode_failure(
        ["X", value if isinstance(value, str) else repr(value)])
    xmlrpc.client.loads(failure)


# --- the site ----------------------------------------------------------------

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Site:
    """An in-process site: feed it raw bytes, read what it wrote."""

    def __init__(self, tmp_path):
        self.server, self.clock = inprocess.make_server(tmp_path,
                                                        failure_delay=0.5)
        self.site = make_site(self.server)
        self.session = inprocess.login(self.server)

    def exchange(self, pieces):
        channel = self.site.buildProtocol(PEER)
        transport = _Transport(self.clock, peerAddress=PEER)
        transport.protocol = channel
        channel.makeConnection(transport)
        for piece in pieces:
            if transport.disconnecting:
                break
            channel.dataReceived(piece)
        # Delayed answers (failed logins) and timers.
        self.clock.advance(5)
        self.clock.advance(120)
        self.clock.advance(120)
        transport.lose()
        return transport.value()


class _Transport(StringTransport):
    """A StringTransport that, like a real one, tells its protocol that
    the connection is gone (once, on the next turn) after a close."""

    def __init__(self, clock, **kw):
        StringTransport.__init__(self, **kw)
        self.clock = clock
        self.lost = False

    def loseConnection(self):
        if not self.disconnecting:
            StringTransport.loseConnection(self)
            self.clock.callLater(0, self.lose)

    abortConnection = loseConnection

    def lose(self):
        if not self.lost:
            self.lost = True
            self.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionError("closed")))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return Site(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture
def failures():
    """Failures and errors logged while a test runs."""
    seen = []

    def observe(event):
        if "log_failure" in event or \
                getattr(event.get("log_level"), "name", "") in (
                    "error", "critical"):
            seen.append(event)
    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")
# XAPI's own 5xx: its 500 page (a data handler's error) and 501.
XAPI_500 = b"<h1>HTTP 500 internal server error</h1>"


def check_answer(out):
    for match in STATUS.finditer(out):
        code = int(match.group(1))
        if code == 501:
            continue
        if code >= 500:
            assert code == 500 and XAPI_500 in out[match.end():], out[:600]
    if b"INTERNAL_ERROR" in out and XAPI_500 not in out:
        assert b"Malformed request" in out, out[:600]


def describe(events):
    from twisted.logger import formatEvent
    return "\n".join(formatEvent(e) + "\n" + (
        e["log_failure"].getTraceback() if "log_failure" in e else "")
        for e in events)


def post(path, body, content_type=b"text/xml"):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (path, content_type, len(body))
            + body)


@FUZZ
@given(st.one_of(
    bodies(XML_CALLS, XML_PIECES).map(lambda b: (b"/", b)),
    bodies(JSON_CALLS, JSON_PIECES).map(lambda b: (b"/jsonrpc", b))))
def test_rpc_bodies_get_no_internal_error(site, failures, case):
    path, body = case
    out = site.exchange([post(path, body)])
    assert STATUS.match(out), out[:300]
    check_answer(out)
    assert not failures, describe(failures)


@pytest.fixture(scope="module")
def method_names(site):
    out = site.exchange([post(b"/", b"<methodCall><methodName>system."
                              b"listMethods</methodName></methodCall>")])
    names = re.findall(rb"<value>([A-Za-z_0-9]+\.[A-Za-z_0-9]+)</value>",
                       out)
    assert len(names) > 100
    return sorted(n.decode() for n in names)


def json_call(method, params):
    try:
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": params}, allow_nan=False).encode()
    except ValueError:      # NaN and infinities are not JSON
        return None


REFS = st.sampled_from(["OpaqueRef:NULL", "OpaqueRef:bogus", "", "x" * 40,
                        "0f9d3f2a-0000-4000-8000-000000000000"])


def call_and_check(site, failures, method, params):
    body = json_call(method, params)
    if body is None:
        return
    out = site.exchange([post(b"/jsonrpc", body, b"application/json")])
    assert STATUS.match(out), out[:300]
    check_answer(out)
    assert not failures, describe(failures)


@FUZZ
@given(data=st.data())
def test_api_calls_with_a_bogus_session_get_no_internal_error(
        site, failures, method_names, data):
    method = data.draw(st.sampled_from(method_names), label="method")
    params = data.draw(st.lists(st.one_of(REFS, values), max_size=4),
                       label="params")
    call_and_check(site, failures, method, ["OpaqueRef:bogus"] + params)


@FUZZ
@given(data=st.data())
def test_reads_with_a_real_session_get_no_internal_error(
        site, failures, method_names, data):
    """Getters only: they change nothing, whatever they are given."""
    reads = [m for m in method_names if re.match(
        r"[A-Za-z_0-9]+\.get_", m)]
    method = data.draw(st.sampled_from(reads), label="method")
    params = data.draw(st.lists(st.one_of(REFS, values), max_size=3),
                       label="params")
    call_and_check(site, failures, method, [site.session] + params)


# --- raw HTTP requests -------------------------------------------------------

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /export_raw_vdi/?session_id=OpaqueRef:bogus&vdi=x&format=raw "
    b"HTTP/1.1\r\nHost: x\r\nCookie: task_id=OpaqueRef:t; a=b\r\n\r\n",
    b"PUT /import_raw_vdi?vdi=x&chunked=true HTTP/1.1\r\nHost: x\r\n"
    b"Authorization: Basic cm9vdDp3cm9uZw==\r\nContent-Length: 4\r\n"
    b"Expect: 100-continue\r\n\r\nabcd",
    b"PUT /import_raw_vdi?pool_secret=zz HTTP/1.0\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    b"OPTIONS /jsonrpc HTTP/1.1\r\nHost: x\r\n\r\n",
    post(b"/RPC2", XML_CALLS[1]),
    post(b"/jsonrpc", JSON_CALLS[0], b"application/json"),
    b"HEAD /export_raw_vdi HTTP/1.1\r\n\r\n",
]
HTTP_PIECES = [
    b"\r\n", b"\n", b" ", b":", b"?", b"&", b"=", b"%", b"%zz", b"%00",
    b"%C3%A9", b"/", b"//", b"..", b"HTTP/1.0", b"HTTP/9.9", b"GET",
    b"DELETE", b"BREW", b"CONNECT", b"Content-Length: 99999999999\r\n",
    b"Content-Length: -1\r\n", b"Content-Length: 1, 2\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
    b"Authorization: Basic !!!\r\n", b"Authorization: Digest x\r\n",
    b"Authorization: Basic \xff\xfe\r\n", b"Cookie: session_id=\xff\r\n",
    b"Expect: 100-continue\r\n", b"Connection: close\r\n",
    b"session_id=OpaqueRef:bogus", b"task_id=OpaqueRef:x", b"vdi=",
    b"format=vhd", b"sr_id=OpaqueRef:NULL", b"\x00", b"\xff", b"\t",
    b"x" * 300,
]


def structured_requests():
    """Requests built from the parts the handlers read."""
    word = st.one_of(st.sampled_from([
        b"", b"OpaqueRef:bogus", b"OpaqueRef:NULL", b"%C3%A9", b"%ff", b"%",
        b"raw", b"vhd", b"tar", b"true", b"x" * 60, b"a=b", b"%00"]),
        st.binary(max_size=6).map(lambda b: quote_from_bytes(b).encode()))
    query = st.lists(st.tuples(st.sampled_from([
        b"session_id", b"vdi", b"format", b"task_id", b"sr_id", b"sr_uuid",
        b"chunked", b"pool_secret", b"base", b"subtask_of"]), word),
        max_size=5).map(lambda kvs: b"&".join(k + b"=" + v for k, v in kvs))
    header = st.sampled_from([
        b"Host: x", b"Connection: close", b"Connection: keep-alive",
        b"Expect: 100-continue", b"Transfer-Encoding: chunked",
        b"Cookie: session_id=OpaqueRef:bogus; task_id=OpaqueRef:t",
        b"Cookie: a=b&task_id=x", b"Authorization: Basic cm9vdDp3cm9uZw==",
        b"Authorization: Basic !!", b"Authorization: Bearer x",
        b"Authorization: Basic " + b"QQ==" * 3, b"Content-Type: text/xml",
        b"Content-Length: 0", b"Content-Length: 3"])

    def build(method, path, query, version, headers, body, length):
        head = [method + b" " + path + b"?" + query + b" " + version]
        head += headers
        if length:
            head.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(head) + b"\r\n\r\n" + body
    return st.builds(
        build,
        st.sampled_from([b"GET", b"PUT", b"POST", b"HEAD", b"OPTIONS",
                         b"DELETE", b"CONNECT"]),
        st.sampled_from([b"/", b"/import_raw_vdi", b"/import_raw_vdi/",
                         b"/export_raw_vdi", b"/export_raw_vdi/",
                         b"/import%5Fraw%5Fvdi", b"/jsonrpc", b"/RPC2/",
                         b"/console", b"//x"]),
        query, st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
        st.lists(header, max_size=4), st.binary(max_size=40),
        st.booleans())


def split(data, cuts):
    """The request in pieces, as a network may deliver it."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


@FUZZ
@given(st.one_of(bodies(REQUESTS, HTTP_PIECES), structured_requests()),
       st.lists(st.integers(0, 1 << 16), max_size=3))
def test_raw_requests_get_no_5xx_but_xapis(site, failures, request, cuts):
    out = site.exchange(split(request, cuts))
    check_answer(out)
    assert not failures, describe(failures)

"""
The connection both listeners serve.  An RPC call (POST to an RPC path,
HTTP/1.0 or 1.1, its body sized by Content-Length within the RPC bound) is
read and answered here, straight from the bytes, without twisted.web's
Request, Headers and resource traversal: on the API's hot path these cost
more than the call itself.  Every other request (the data, console, CLI
and RRD handlers, OPTIONS, chunked or oversized bodies, anything odd) is
handed with the bytes read so far to the twisted.web site, which serves
the connection from then on exactly as it would have from the start.

What a client sees is what twisted.web answers: the same status line and
headers in the same order (Server, Date, the resource's own), keep-alive
on HTTP/1.1 unless the client asks to close (then "Connection: close"),
HTTP/1.0 closed after its answer, "100 Continue" to an HTTP/1.1
"Expect: 100-continue", answers in order on a pipelining connection.  The
limits hold too: the header timeouts and per-client cap of limits, the
idle timeout of the site.
"""

import io

from twisted.internet import defer, protocol, tcp
from twisted.internet.interfaces import (
    IProtocolNegotiationFactory, ISSLTransport, ITCPTransport)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web import server
# Names, not attributes of the module: twisted.web.http is wrapped in a
# proxy (for its deprecated names) that makes every attribute read slow.
from twisted.web.http import (
    INTERNAL_SERVER_ERROR, OK, RESPONSES, datetimeToString, toChunk)
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder
from zope.interface import implementer

from txxapi.http import limits, routes
from txxapi.wire import shared

log = Logger()

VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
# twisted.web's bounds on a request's head (it answers 400 beyond them).
MAX_HEAD = 16384
MAX_HEADERS = 500
# Bytes held from a pipelining client while a call is answered, beyond
# which its connection stops being read (twisted.web's figure).
MAX_HELD = 0x4000
ABORT_TIMEOUT = 15   # HTTPChannel's abortTimeout after an idle close
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PROCESSING_FAILED = (b"<html><head><title>Processing Failed</title></head>"
                     b"<body><b>Processing Failed</b></body></html>")
_ROUTES = {}   # request URI -> RPC handler or None, for the URIs seen most
# Request heads -> Head: a keep-alive client sends the same head for the
# same call over and over.  Heads are read, never changed.
_HEADS = {}
HEADS_KEPT = 256
HEAD_KEPT_BYTES = 2048


def rpc_route(uri):
    route = _ROUTES.get(uri, False)
    if route is False:
        route = routes.handler_of(b"POST", uri)
        if route not in routes.RPC:
            route = None
        if len(_ROUTES) < 64:
            _ROUTES[uri] = route
    return route


_date = [None, b""]


def http_date(now):
    """twisted.web's Date value, formatted once a second."""
    second = int(now)
    if _date[0] != second:
        _date[:] = [second, datetimeToString(second)]
    return _date[1]


class Head:
    """An RPC request's head, parsed."""

    __slots__ = ("uri", "version", "route", "length", "headers",
                 "persistent", "close", "expect")

    @classmethod
    def of(cls, block):
        """parse(block), remembered for the heads seen most."""
        head = _HEADS.get(block, False)
        if head is False:
            head = cls.parse(block)
            if len(block) <= HEAD_KEPT_BYTES:
                if len(_HEADS) >= HEADS_KEPT:
                    _HEADS.clear()
                _HEADS[block] = head
        return head

    @classmethod
    def parse(cls, block):
        """The head of the bytes before the blank line, or None if this
        is not a request served here."""
        lines = block.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"POST" or parts[2] not in VERSIONS \
                or len(lines) > MAX_HEADERS + 1:
            return None
        route = rpc_route(parts[1])
        if route is None:
            return None
        headers = {}
        length = connection = expect = None
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or line[:1] in b" \t":
                return None   # malformed, or a folded header
            try:
                name = _nameEncoder.encode(name)
            except InvalidHeaderName:
                return None
            value = value.strip(b" \t")
            if b"\x00" in value or b"\n" in value or b"\r" in value:
                return None
            if name == b"Content-Length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"Transfer-Encoding":
                return None
            elif name == b"Connection" and connection is None:
                connection = value
            elif name == b"Expect" and expect is None:
                expect = value
            headers[name] = value
        if length is None:
            return None
        head = cls()
        head.uri, head.version, head.route = parts[1], parts[2], route
        head.length, head.headers = length, headers
        http11 = head.version == b"HTTP/1.1"
        head.close = http11 and connection is not None and b"close" in [
            t.lower() for t in connection.split(b" ")]
        head.persistent = http11 and not head.close
        head.expect = http11 and expect is not None and \
            expect.lower() == b"100-continue"
        return head


def may_be_rpc(data):
    """Whether a head still arriving may be one served here."""
    end = data.find(b"\r\n")
    if end < 0:
        return data[:5] == b"POST "[:len(data)]
    parts = data[:end].split(b" ")
    return len(parts) == 3 and parts[0] == b"POST" \
        and parts[2] in VERSIONS and rpc_route(parts[1]) is not None


class RPCRequest:
    """What the RPC resource reads and writes of a request, as
    twisted.web's Request offers it."""

    method = b"POST"

    def __init__(self, channel, head, body):
        self.channel = channel
        self.uri = self.path = head.uri
        self.clientproto = head.version
        self.route = head.route
        self.persistent = head.persistent
        self.content = io.BytesIO(body)
        self._in = head.headers
        self.code = OK
        out = self._out = {}
        if head.close:
            out[b"Connection"] = b"close"
        out[b"Server"] = server.version
        out[b"Date"] = http_date(channel.now())
        self.startedWriting = self.chunked = False
        self.finished = self._disconnected = False
        self._finish_waiters = []
        self._lost = None   # the call's reply, told if the client goes

    def getHeader(self, name):
        return self._in.get(_nameEncoder.encode(name))

    def setHeader(self, name, value):
        self._out[_nameEncoder.encode(name)] = value

    def setResponseCode(self, code):
        self.code = code

    def getClientAddress(self):
        return self.channel.peer

    def isSecure(self):
        return self.channel.secure

    def getHost(self):
        # The local Unix socket's trust is read off it (txxapi.http.local).
        return self.channel.transport.getHost()

    def notifyFinish(self):
        d = defer.Deferred()
        self._finish_waiters.append(d)
        return d

    def when_lost(self, reply):
        """reply.connection_lost(reason) if the connection is lost before
        the answer: notifyFinish's errback without its Deferred."""
        self._lost = reply

    def write(self, data):
        if self.finished:
            raise RuntimeError("write after finish")
        if self._disconnected:
            return
        transport = self.channel.transport
        if self.startedWriting:
            if data:
                if self.chunked:
                    transport.writeSequence(toChunk(data))
                else:
                    transport.write(data)
            return
        self.startedWriting = True
        out = self._out
        if b"Content-Type" not in out and out.get(b"Content-Length") != b"0":
            out[b"Content-Type"] = b"text/html"   # server.Request's default
        if self.clientproto == b"HTTP/1.1" and b"Content-Length" not in out:
            out[b"Transfer-Encoding"] = b"chunked"
            self.chunked = True
        self.channel.send(self._response(
            toChunk(data) if data and self.chunked else (data,)))

    def _response(self, body):
        """The status line, the headers and the pieces of the body."""
        lines = [self.clientproto, b" %d " % self.code,
                 RESPONSES.get(self.code, b"Unknown Status"), b"\r\n"]
        for name, value in self._out.items():
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        lines.extend(body)
        return b"".join(lines)

    def answer_shared(self, value, key, content_type, encode):
        """Answer with encode(value) for a value many calls are answered
        with (txxapi.wire.shared): the whole response, head and body, is
        built once for all the requests whose heads are the same (``key``
        names what else encode's bytes depend on)."""
        if self._disconnected or self.finished:
            return
        out = self._out
        out[b"Content-Type"] = content_type
        head = (key, self.code, self.clientproto, tuple(out.items()))
        whole = shared.encoded(value, head, self._whole, encode)
        self.startedWriting = True
        self.channel.send(whole)
        self.finish()

    def _whole(self, value, encode):
        body = encode(value)
        self._out[b"Content-Length"] = b"%d" % len(body)
        return self._response((body,))

    def finish(self):
        if self._disconnected:
            raise RuntimeError("finish after the connection was lost")
        if self.finished:
            return
        if not self.startedWriting:
            self.write(b"")
        if self.chunked:
            self.channel.transport.write(b"0\r\n\r\n")
        self.finished = True
        self._lost = None
        waiters, self._finish_waiters = self._finish_waiters, []
        for d in waiters:
            d.callback(None)
        self.channel.answered(self)

    def processing_failed(self, failure):
        """twisted.web's answer to a resource that raised."""
        log.failure("", failure=failure)
        self.setResponseCode(INTERNAL_SERVER_ERROR)
        self.setHeader(b"Content-Type", b"text/html")
        self.setHeader(b"Content-Length", b"%d" % len(PROCESSING_FAILED))
        self.write(PROCESSING_FAILED)
        self.finish()

    def connectionLost(self, reason):
        self._disconnected = True
        waiters, self._finish_waiters = self._finish_waiters, []
        for d in waiters:
            d.errback(reason)
        lost, self._lost = self._lost, None
        if lost is not None and not self.finished:
            lost.connection_lost(reason)


class RPCChannel(protocol.Protocol):
    """One connection: RPC calls answered here, the first other request
    and all after it by the site's own channel."""

    _client = None
    _clock = None
    _idle_call = None
    _abort_call = None

    def __init__(self, factory, addr):
        self.factory = factory
        self.peer = addr
        self.now = factory.reactor.seconds
        self._buffer = b""
        self._head = None       # a call whose body is still arriving
        self._request = None    # the call being answered
        self._serving = False
        self._closing = False
        self._paused = False
        self.secure = False
        self._last_active = 0.0

    def connectionMade(self):
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        site = self.factory.site
        client = limits.client_key(self.peer)
        if not site.client_connections.admit(client):
            transport.abortConnection()
            return
        self._client = client
        self.secure = ISSLTransport(transport, None) is not None
        # The header's clock runs from the accept (a TLS handshake counts).
        self._clock = limits.HeaderClock(self.factory.reactor.callLater,
                                         site, self._header_timed_out)
        self._clock.start()
        self._last_active = self.now()
        self._arm_idle(site.timeOut)

    def dataReceived(self, data):
        if self._client is None:
            return
        self._last_active = self.now()
        if self._clock.running:
            self._clock.touch()
        if self._request is not None or self._serving:
            self._hold(data)
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        self._serve(data)

    def _hold(self, data):
        """Keep what a client sends while its previous call is answered."""
        self._buffer += data
        if len(self._buffer) > MAX_HELD and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _serve(self, data):
        self._serving = True
        try:
            while data and self._request is None and not self._closing:
                start = 0
                if self._head is None:
                    end = data.find(b"\r\n\r\n")
                    if end < 0:
                        if len(data) > MAX_HEAD or not may_be_rpc(data):
                            self._hand_off(data)
                            return
                        if not self._clock.running:
                            self._clock.start()   # its first byte came now
                        break
                    head = Head.of(data[:end])
                    if head is None or head.length > self.factory.max_rpc_size:
                        self._hand_off(data)
                        return
                    if self._clock.running:
                        self._clock.stop()
                    self._head = head
                    if head.expect:
                        self.transport.write(CONTINUE)
                    start = end + 4
                stop = start + self._head.length
                if len(data) < stop:
                    data = data[start:]
                    break
                head, self._head = self._head, None
                body, data = data[start:stop], data[stop:]
                if not head.persistent:
                    data = b""    # a client must not send past its last call
                self._answer(head, body)
            self._buffer = data + self._buffer
        finally:
            self._serving = False

    def _answer(self, head, body):
        request = self._request = RPCRequest(self, head, body)
        try:
            answer = self.factory.rpc.render_POST(request)
        except Exception:
            request.processing_failed(Failure())
            return
        if answer is not server.NOT_DONE_YET:
            request.setHeader(b"Content-Length", b"%d" % len(answer))
            request.write(answer)
            request.finish()

    def answered(self, request):
        """A call's answer is written: on to the next, or close."""
        self._request = None
        if self.transport is None:
            return
        if not request.persistent:
            self._closing = True
            self.transport.loseConnection()
            return
        self._last_active = self.now()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if not self._serving and self._buffer:
            data, self._buffer = self._buffer, b""
            self._serve(data)

    def send(self, data):
        """transport.write(data), sent at once when nothing is queued
        before it on a plain socket: a reply leaves the server while the
        event hub answers its batch, without a write registration and a
        reactor turn per connection."""
        transport = self.transport
        # A socket's own transport only: a TLS wrapper passes unknown
        # attributes (writeSomeData too) through to the socket beneath.
        if isinstance(transport, tcp.Connection) and not transport.TLS \
                and transport.connected and not transport.disconnecting \
                and not transport._tempDataLen and not transport.dataBuffer:
            sent = transport.writeSomeData(data)
            if not isinstance(sent, int):
                sent = 0   # the transport's own write meets the error
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def _hand_off(self, data):
        """Give the connection, and the bytes read, to the site."""
        self._stop_timers()
        site = self.factory.site
        if self._client is not None:
            site.client_connections.release(self._client)
            self._client = None
        transport, self.transport = self.transport, None
        channel = site.buildProtocol(self.peer)
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = channel
        else:
            transport.protocol = channel
        channel.makeConnection(transport)
        if data and getattr(channel, "_client", None) is not None:
            channel.dataReceived(data)

    def _header_timed_out(self):
        self._closing = True
        self._abort_call = limits.refuse_slow_header(
            self.transport, self.factory.reactor.callLater)

    # -- the idle timeout: one timer, moved only when it fires -------------

    def _arm_idle(self, delay):
        self._idle_call = self.factory.reactor.callLater(delay,
                                                         self._idle_check)

    def _idle_check(self):
        self._idle_call = None
        timeout = self.factory.site.timeOut
        left = self._last_active + timeout - self.now()
        if self._request is not None or left > 0:
            # A call being answered is not idleness.
            self._arm_idle(timeout if self._request is not None else left)
            return
        log.info("Timing out client: {peer}", peer=str(self.peer))
        self._closing = True
        self._abort_call = self.factory.reactor.callLater(
            ABORT_TIMEOUT, self.transport.abortConnection)
        self.transport.loseConnection()

    def _stop_timers(self):
        if self._clock is not None:
            self._clock.stop()
        for call in (self._idle_call, self._abort_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._abort_call = None

    def connectionLost(self, reason):
        self._stop_timers()
        if self._client is not None:
            self.factory.site.client_connections.release(self._client)
            self._client = None
        request, self._request = self._request, None
        if request is not None:
            request.connectionLost(reason)


@implementer(IProtocolNegotiationFactory)
class RPCFactory(protocol.Factory):
    """The listeners' factory: RPCChannels in front of ``site``."""

    def __init__(self, site):
        self.site = site
        self.reactor = site.reactor
        self.rpc = site.resource.rpc
        self.max_rpc_size = site.requestFactory.max_rpc_size

    def buildProtocol(self, addr):
        return RPCChannel(self, addr)

    def acceptableProtocols(self):
        """What TLS offers in ALPN: the site's choice, as before."""
        return self.site.acceptableProtocols()

    # The site opens and closes its log with the listeners.
    def startFactory(self):
        self.site.doStart()

    def stopFactory(self):
        self.site.doStop()

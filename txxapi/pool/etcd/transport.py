"""
HTTP to etcd's v3 JSON gateway, through Twisted's client: one persistent
connection pool per member, a deadline on every request, failover to the
next member when one cannot be reached, and streamed responses (watch)
read line by line in bounded memory.

Failover rule: a request moves to the next endpoint only when it certainly
did not reach the server (the connection could not be made) or when the
call is marked idempotent (reads); a write whose connection dropped after
it was sent is reported as EtcdUnavailable, its outcome unknown, rather
than sent twice.
"""

import json

from twisted.internet import defer, error as net_error, protocol
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web import client as web_client
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from txxapi.pool.etcd import errors

try:
    import orjson

    def dumps(obj):
        return orjson.dumps(obj)
    loads = orjson.loads
except ImportError:  # pragma: no cover
    def dumps(obj):
        return json.dumps(obj, separators=(",", ":")).encode()
    loads = json.loads

log = Logger()

API_PREFIX = "/v3"          # etcd 3.4 serves /v3/ and /v3beta/; not /v3alpha/
DEFAULT_TIMEOUT = 5.0
MAX_LINE = 64 << 20          # one watch response, at most

# Failures that prove the request never reached the server.
_NOT_SENT = (net_error.ConnectError, net_error.DNSLookupError,
             web_client.RequestNotSent)
# Failures after sending: the answer was lost with the connection.
_LOST = (web_client.ResponseNeverReceived,
         web_client.RequestTransmissionFailed, web_client.ResponseFailed,
         net_error.ConnectionLost, net_error.ConnectionDone)


def _is(failure_or_exc, kinds):
    exc = getattr(failure_or_exc, "value", failure_or_exc)
    if isinstance(exc, kinds):
        return True
    # Twisted wraps connection-level reasons in lists of Failures.
    reasons = getattr(exc, "reasons", None) or ()
    return any(isinstance(getattr(r, "value", r), kinds) for r in reasons)


@implementer(IBodyProducer)
class _Bytes:
    """A request body already in memory, written at once."""

    def __init__(self, data):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Collect(protocol.Protocol):
    """Reads a whole (unary) response body."""

    def __init__(self, finished):
        self.finished = finished
        self.parts = []

    def dataReceived(self, data):
        self.parts.append(data)

    def connectionLost(self, reason):
        if self.finished.called:
            return
        if reason.check(web_client.ResponseDone, web_client.PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


class LineStream(protocol.Protocol):
    """Splits a streamed body into JSON objects, one per line, handing each
    to ``on_message``; ``done`` fires with the reason the stream ended
    (an exception instance, as a result).
    Memory is bounded by one line (MAX_LINE)."""

    def __init__(self, on_message):
        self.on_message = on_message
        self.done = defer.Deferred()
        self._parts = []        # the pieces of the line not finished yet
        self._pending = 0

    def dataReceived(self, data):
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._parts.append(data[start:end])
            line = b"".join(self._parts)
            self._parts, self._pending = [], 0
            start = end + 1
            if line.strip() and not self._deliver(line):
                return
        if start < len(data):
            self._parts.append(data[start:])
            self._pending += len(data) - start
            if self._pending > MAX_LINE:
                log.error("etcd stream: a message over {max} bytes",
                          max=MAX_LINE)
                self.close()

    def _deliver(self, line):
        try:
            self.on_message(loads(line))
            return True
        except Exception:
            log.failure("etcd stream: message handler failed")
            self.close()
            return False

    def close(self):
        """Drop the stream (the connection is aborted)."""
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(reason.value)


class Endpoint:
    """One member's client URL with its own connection pool, so a member
    that went away can have its idle connections dropped alone."""

    def __init__(self, reactor, url, connect_timeout, max_connections):
        self.url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.pool = web_client.HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max_connections
        self.pool.retryAutomatically = False
        self.agent = web_client.Agent(reactor, connectTimeout=connect_timeout,
                                      pool=self.pool)

    def request(self, path, body):
        return self.agent.request(
            b"POST", (self.url + path).encode("ascii"),
            Headers({b"Content-Type": [b"application/json"],
                     # gRPC metadata through the gateway: a member without
                     # a leader refuses at once ("no leader") instead of
                     # holding the request, and ends a watch it serves.
                     b"Grpc-Metadata-Hasleader": [b"true"]}),
            _Bytes(dumps(body)))

    def __repr__(self):
        return "<etcd endpoint %s>" % self.url


class Transport:
    """The gateway over several endpoints, with deadlines and failover."""

    def __init__(self, endpoints, reactor=None, timeout=DEFAULT_TIMEOUT,
                 connect_timeout=None, max_connections=128):
        if reactor is None:
            from twisted.internet import reactor
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.reactor = reactor
        self.timeout = timeout
        connect_timeout = connect_timeout or max(1, min(timeout, 3))
        self.endpoints = [Endpoint(reactor, url, connect_timeout,
                                   max_connections) for url in endpoints]
        self._current = 0

    def add_endpoints(self, urls):
        """More members to fail over to (the cluster grew)."""
        known = {e.url for e in self.endpoints}
        first = self.endpoints[0]
        for url in urls:
            if url not in known:
                known.add(url)
                self.endpoints.append(Endpoint(
                    self.reactor, url, first.connect_timeout,
                    first.max_connections))

    @property
    def current(self):
        """The endpoint tried first (the last one that answered)."""
        return self.endpoints[self._current]

    def _order(self):
        n = len(self.endpoints)
        return [self.endpoints[(self._current + i) % n] for i in range(n)]

    def mark_failed(self, endpoint):
        """endpoint failed: drop its idle connections, prefer the next."""
        endpoint.pool.closeCachedConnections()
        if self.current is endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    def _prefer(self, endpoint):
        self._current = self.endpoints.index(endpoint)

    def call(self, path, body, timeout=None, idempotent=False):
        """POST body (a dict) to API_PREFIX + path; the decoded answer.
        Fails with an errors.EtcdError once timeout seconds have passed,
        whatever the number of endpoints tried.  An idempotent call gives
        each endpoint its share of the time left, so a member that hangs
        (stopped, overloaded) costs a share and the next one is asked."""
        timeout = self.timeout if timeout is None else timeout
        d = self._call(API_PREFIX + path, body, idempotent,
                       self.reactor.seconds() + timeout)
        return _with_deadline(d, timeout, self.reactor, path)

    def _attempt(self, endpoint, path, body):
        d = endpoint.request(path, body)
        d.addCallback(lambda response: _read_body(response).addCallback(
            lambda raw: (response.code, raw)))
        return d.addErrback(_unwrap_cancel)

    @defer.inlineCallbacks
    def _call(self, path, body, idempotent, deadline):
        tried, refused_here = [], None
        order = self._order()
        for i, endpoint in enumerate(order):
            tried.append(endpoint.url)
            attempt = self._attempt(endpoint, path, body)
            if idempotent and i < len(order) - 1:
                share = (deadline - self.reactor.seconds()) / (len(order) - i)
                attempt = _with_deadline(attempt, max(share, 0.01),
                                         self.reactor, path)
            try:
                code, raw = yield attempt
            except CancelledError:
                raise
            except Exception as e:
                if isinstance(e, errors.EtcdTimeout) or _is(e, _NOT_SENT) \
                        or (idempotent and _is(e, _LOST)):
                    log.debug("etcd {url}: {error}; trying the next member",
                              url=endpoint.url, error=e)
                    self.mark_failed(endpoint)
                    continue
                if _is(e, _LOST):
                    self.mark_failed(endpoint)
                    raise errors.EtcdUnavailable(
                        "etcd %s: connection lost before the answer to %s "
                        "(outcome unknown)" % (endpoint.url, path), tried)
                raise
            answer = decode(raw, code)
            if _not_here(answer):
                # Not proposed (no leader seen, or a learner asked): safe
                # to ask the next member.
                self.mark_failed(endpoint)
                refused_here = answer
                continue
            if isinstance(answer, Exception):
                raise answer
            self._prefer(endpoint)
            return answer
        if refused_here is not None:
            raise refused_here
        raise errors.EtcdUnavailable(
            "no etcd member answered %s (tried %s)" % (path, ", ".join(tried)),
            tried)

    @defer.inlineCallbacks
    def stream(self, path, body, on_message, connect_timeout=None):
        """Open a streamed request (watch): fires, once the response has
        started, with (endpoint, LineStream); stream.done fires when it
        ends.  Only the opening has a deadline."""
        connect_timeout = connect_timeout or self.timeout
        tried = []
        for endpoint in self._order():
            tried.append(endpoint.url)
            try:
                response = yield _with_deadline(
                    endpoint.request(API_PREFIX + path, body).addErrback(
                        _unwrap_cancel), connect_timeout, self.reactor, path)
            except CancelledError:
                raise
            except Exception as e:
                if isinstance(e, errors.EtcdTimeout) or _is(e, _NOT_SENT) \
                        or _is(e, _LOST):
                    self.mark_failed(endpoint)
                    continue
                raise
            if response.code != 200:
                raw = yield _read_body(response)
                answer = decode(raw, response.code)
                raise answer if isinstance(answer, Exception) else \
                    errors.EtcdRequestError("HTTP %d" % response.code,
                                            status=response.code)
            self._prefer(endpoint)
            lines = LineStream(on_message)
            response.deliverBody(lines)
            return endpoint, lines
        raise errors.EtcdUnavailable(
            "no etcd member answered %s (tried %s)" % (path, ", ".join(tried)),
            tried)

    def close(self):
        return defer.DeferredList([e.pool.closeCachedConnections()
                                   for e in self.endpoints])


def _unwrap_cancel(failure):
    """A cancelled request fails with Twisted's connection error wrapping
    the CancelledError, or, cancelled while it connects, with
    ConnectingCancelledError; a deadline (addTimeout) only knows the bare
    one, and a member's share of the deadline that ran out while its
    connection was being made must move the call on to the next member."""
    if _is(failure, (CancelledError, net_error.ConnectingCancelledError)):
        raise CancelledError()
    return failure


def _read_body(response):
    def cancel(d):
        transport = getattr(collector, "transport", None)
        if transport is not None:
            transport.stopProducing()
    finished = defer.Deferred(cancel)
    collector = _Collect(finished)
    response.deliverBody(collector)
    return finished


def _with_deadline(d, timeout, reactor, what):
    def timed_out(failure):
        failure.trap(defer.TimeoutError)
        raise errors.EtcdTimeout("etcd: no answer to %s in %.1f s"
                                 % (what, timeout))
    d.addTimeout(timeout, reactor)
    d.addErrback(timed_out)
    return d


def decode(raw, status):
    """The JSON answer, or the exception it stands for."""
    try:
        obj = loads(raw) if raw else {}
    except ValueError:
        return errors.EtcdRequestError(
            "etcd gateway: HTTP %d, %r" % (status, raw[:200]), status=status)
    if isinstance(obj, dict) and "error" in obj:
        error = obj["error"]
        if isinstance(error, dict):     # a stream's error: nested, grpc_code
            error = dict(error, code=error.get("grpc_code"))
        else:
            error = obj
        return errors.from_gateway(error, status)
    if status != 200:
        return errors.EtcdRequestError("etcd gateway: HTTP %d, %r"
                                       % (status, raw[:200]), status=status)
    return obj


def _not_here(answer):
    """An answer refusing the request at this member only: it sees no
    leader, it is a learner (which serves no client requests), or it is
    stopping (its gateway's own connection to it closed before the
    request went through)."""
    if isinstance(answer, errors.EtcdNoQuorum):
        return "no leader" in str(answer)
    if isinstance(answer, errors.EtcdMemberStopping):
        return answer.unsent
    return isinstance(answer, errors.EtcdRequestError) and \
        "not supported for learner" in str(answer)

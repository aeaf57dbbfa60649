"""
Limits on what a client can hold without sending a request: XAPI's
header-phase timeouts, and a cap on connections per client address.

A request's header must arrive with no gap longer than the read timeout
and whole within the total timeout (XAPI's header_read_timeout_tcp and
header_total_timeout_tcp), else the client gets XAPI's 408 page and the
connection closes.  The clock starts when the connection opens (before a
TLS handshake, which counts), and on a kept-alive connection when the
next request's first byte arrives: waiting between requests is the idle
timeout's business, and a body, however slow, is not the header's.
"""

import collections

from twisted.logger import Logger
from twisted.web import http

from txxapi.http import responses

log = Logger()

HEADER_READ_TIMEOUT = 10.0
HEADER_TOTAL_TIMEOUT = 60.0
# XAPI caps all TCP connections at 800 (conn_limit_tcp).  Per address, so
# that no one client takes them all, yet one Xen Orchestra with many
# watchers, or a script host running many jobs, has room; 0: no cap (load
# generators, which open every connection from one address).
MAX_CONNECTIONS_PER_CLIENT = 1000
# Seconds a connection closed for its header's slowness may take to go.
CLOSE_GRACE = 2.0


class ClientConnections:
    """Open connections per client address, refused beyond the cap."""

    def __init__(self, cap=MAX_CONNECTIONS_PER_CLIENT):
        self.cap = cap
        self.open = collections.Counter()
        self._refusing = set()

    def admit(self, client):
        if self.cap and self.open[client] >= self.cap:
            if client not in self._refusing:
                self._refusing.add(client)
                log.warn("refusing connections from {client}: {cap} open",
                         client=client, cap=self.cap)
            return False
        self.open[client] += 1
        return True

    def release(self, client):
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]
        if not self.cap or self.open[client] < self.cap:
            self._refusing.discard(client)


def client_key(address):
    """Whose connections an address counts among: its host, or one key
    for every caller on the local Unix socket."""
    return getattr(address, "host", None) or "local"


class HeaderClock:
    """The two timers of a request's header on one connection: the gap
    between its bytes and its whole time; ``on_timeout`` when either
    runs out."""

    __slots__ = ("_call_later", "_site", "_on_timeout", "_read_call",
                 "_total_call")

    def __init__(self, call_later, site, on_timeout):
        self._call_later = call_later
        self._site = site
        self._on_timeout = on_timeout
        self._read_call = self._total_call = None

    @property
    def running(self):
        return self._read_call is not None

    def start(self):
        self._read_call = self._call_later(self._site.header_read_timeout,
                                           self._expired)
        self._total_call = self._call_later(self._site.header_total_timeout,
                                            self._expired)

    def touch(self):
        """A byte of the header arrived."""
        if self._read_call is not None:
            self._read_call.reset(self._site.header_read_timeout)

    def stop(self):
        for call in (self._read_call, self._total_call):
            if call is not None and call.active():
                call.cancel()
        self._read_call = self._total_call = None

    def _expired(self):
        self.stop()
        self._on_timeout()


def refuse_slow_header(transport, call_later):
    """Answer XAPI's 408 and close; the call that cuts the connection if
    the close does not complete soon (a TLS client that never made its
    handshake never acknowledges one)."""
    transport.write(responses.request_timeout())
    abort = call_later(CLOSE_GRACE, transport.abortConnection)
    transport.loseConnection()
    return abort


class LimitedChannel(http.HTTPChannel):
    """An HTTPChannel under its site's header timeouts and per-client cap
    (the site's header_read_timeout, header_total_timeout and
    client_connections)."""

    _client = None
    _clock = None

    def connectionMade(self):
        http.HTTPChannel.connectionMade(self)
        client = client_key(self.transport.getPeer())
        if not self.site.client_connections.admit(client):
            self.transport.abortConnection()
            return
        self._client = client
        self._clock = HeaderClock(self.callLater, self.site,
                                  self._header_timed_out)
        self._begin_header()

    def dataReceived(self, data):
        clock = self._clock
        if clock is not None and clock.running:
            clock.touch()
        elif self.line_mode and not self._handlingRequest:
            self._begin_header()    # the first byte of the next request
        http.HTTPChannel.dataReceived(self, data)

    def allHeadersReceived(self):
        self._end_header()
        http.HTTPChannel.allHeadersReceived(self)

    def connectionLost(self, reason):
        self._end_header()
        if self._client is not None:
            self.site.client_connections.release(self._client)
            self._client = None
        http.HTTPChannel.connectionLost(self, reason)

    def _begin_header(self):
        if self._client is None or \
                getattr(self.transport, "disconnecting", False):
            return
        self._clock.start()

    def _end_header(self):
        if self._clock is not None:
            self._clock.stop()

    def _header_timed_out(self):
        self.transport.write(responses.request_timeout())
        # Cut if the close does not complete soon (see refuse_slow_header);
        # HTTPChannel cancels _abortingCall when the connection goes.
        self._abortingCall = self.callLater(CLOSE_GRACE,
                                            self.forceAbortClient)
        self.loseConnection()

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


class LimitedChannel(http.HTTPChannel):
    """An HTTPChannel under its site's header timeouts and per-client cap
    (the site's header_read_timeout, header_total_timeout and
    client_connections)."""

    _client = None
    _read_call = None
    _total_call = None

    def connectionMade(self):
        http.HTTPChannel.connectionMade(self)
        client = getattr(self.transport.getPeer(), "host", None)
        if not self.site.client_connections.admit(client):
            self.transport.abortConnection()
            return
        self._client = client
        self._begin_header()

    def dataReceived(self, data):
        if self._read_call is not None:
            self._read_call.reset(self.site.header_read_timeout)
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
        self._read_call = self.callLater(self.site.header_read_timeout,
                                         self._header_timed_out)
        self._total_call = self.callLater(self.site.header_total_timeout,
                                          self._header_timed_out)

    def _end_header(self):
        for call in (self._read_call, self._total_call):
            if call is not None and call.active():
                call.cancel()
        self._read_call = self._total_call = None

    def _header_timed_out(self):
        self._end_header()
        self.transport.write(responses.request_timeout())
        # Cut if the close does not complete soon (a TLS client that never
        # made its handshake never acknowledges one).
        self._abortingCall = self.callLater(CLOSE_GRACE,
                                            self.forceAbortClient)
        self.loseConnection()

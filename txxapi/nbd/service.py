"""
The NBD listener as a service of the tree (after the HTTPS listener, whose
certificate it serves for TLS).  Unlike the API's listeners, a port that
cannot be had only disables NBD: XAPI's NBD server is a service of its
own, and the toolstack runs without it.  Bound to the management
address, it moves with it (rebind) as the API's listeners do, and serves
the certificate they serve (txxapi.tls.HostCertificate).
"""

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from txxapi.http.management import EVERY_ADDRESS
from txxapi.nbd.protocol import REQUESTS_IN_FLIGHT, NBDFactory

log = Logger()

STANDARD_PORT = 10809
# Connections served at once (xapi-nbd's limit).
CONNECTION_LIMIT = 16


class NBDService(service.Service):
    name = "nbd"

    def __init__(self, server, port, bind, certificate,
                 requests_in_flight=REQUESTS_IN_FLIGHT):
        self.server = server
        self._wanted_port = port
        self._bind = bind
        self._certificate = certificate
        self._listening = None
        self.connections = set()
        self.connection_limit = CONNECTION_LIMIT
        self.requests_in_flight = requests_in_flight
        self.port = None        # the port listened on, once listening
        self.ready = None

    def startService(self):
        service.Service.startService(self)
        self.server.nbd = self
        d = self._listen(self._bind, self._wanted_port)

        def listening(port):
            self._listening = port
            self.port = port.getHost().port
            log.info("NBD server on port {port}", port=self.port)

        def failed(failure):
            log.warn("NBD server not started: {e}",
                     e=failure.getErrorMessage())
        self.ready = d.addCallbacks(listening, failed)

    def _listen(self, address, port):
        return endpoints.TCP4ServerEndpoint(
            self.server.reactor, port, interface=address or "").listen(
                NBDFactory(self))

    @defer.inlineCallbacks
    def rebind(self, address):
        """Listen on ``address`` instead of the last one, on the same
        port (connections open stay); an address it cannot listen on
        keeps the old one.  Nothing moves if it listens everywhere."""
        if self._bind in EVERY_ADDRESS or address == self._bind or \
                not self.running:
            return
        try:
            port = yield self._listen(address, self.port or self._wanted_port)
        except Exception as e:
            log.warn("NBD server: cannot listen on {address} ({error}); "
                     "still on {old}", address=address, error=e,
                     old=self._bind)
            return
        old, self._listening, self._bind = self._listening, port, address
        self.port = port.getHost().port
        log.info("NBD server on {address} port {port}", address=address,
                 port=self.port)
        if old is not None:
            yield old.stopListening()

    def stopService(self):
        service.Service.stopService(self)
        self.server.nbd = None
        self.port = None
        for conn in list(self.connections):
            conn.transport.abortConnection()
        port, self._listening = self._listening, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    def tls_context(self):
        return self._certificate

    def certificate_pem(self):
        """The host certificate clients check the server against, the
        one TLS serves now."""
        return self._certificate.pem

    def remember(self, conn):
        self.connections.add(conn)

    def forget(self, conn):
        self.connections.discard(conn)

"""
The NBD listener as a service of the tree (after the HTTPS listener, whose
certificate it serves for TLS).  Unlike the API's listeners, a port that
cannot be had only disables NBD: XAPI's NBD server is a service of its
own, and the toolstack runs without it.
"""

import re

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from txxapi import tls
from txxapi.nbd.protocol import REQUESTS_IN_FLIGHT, NBDFactory

log = Logger()

_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?"
                          r"-----END CERTIFICATE-----", re.S)

STANDARD_PORT = 10809
# Connections served at once (xapi-nbd's limit).
CONNECTION_LIMIT = 16


class NBDService(service.Service):
    name = "nbd"

    def __init__(self, server, port, bind, cert_path, key_path,
                 requests_in_flight=REQUESTS_IN_FLIGHT):
        self.server = server
        self._wanted_port = port
        self._bind = bind
        self._cert_path = cert_path
        self._key_path = key_path
        self._context = None
        self._certificate = None
        self._listening = None
        self.connections = set()
        self.connection_limit = CONNECTION_LIMIT
        self.requests_in_flight = requests_in_flight
        self.port = None        # the port listened on, once listening
        self.ready = None

    def startService(self):
        service.Service.startService(self)
        self.server.nbd = self
        endpoint = endpoints.TCP4ServerEndpoint(
            self.server.reactor, self._wanted_port,
            interface=self._bind or "")
        d = endpoint.listen(NBDFactory(self))

        def listening(port):
            self._listening = port
            self.port = port.getHost().port
            log.info("NBD server on port {port}", port=self.port)

        def failed(failure):
            log.warn("NBD server not started: {e}",
                     e=failure.getErrorMessage())
        self.ready = d.addCallbacks(listening, failed)

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
        if self._context is None:
            self._context = tls.server_context_factory(self._cert_path,
                                                       self._key_path)
        return self._context

    def certificate_pem(self):
        """The host certificate clients check the server against (the
        file may hold its key too: only the certificates).  Read once, as
        the TLS context is: both serve the certificate of this start."""
        if self._certificate is None:
            with open(self._cert_path) as f:
                text = f.read()
            self._certificate = "".join(
                m.group(0) + "\n" for m in _CERTIFICATE.finditer(text))
        return self._certificate

    def remember(self, conn):
        self.connections.add(conn)

    def forget(self, conn):
        self.connections.discard(conn)

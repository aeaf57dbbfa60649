"""
The twistd service: builds a Server from settings, starts it, and owns
the HTTP and HTTPS listeners (TLS terminated here, in-process).
"""

import os
import sys

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from txxapi import tls
from txxapi.auth.checkers import PAMChecker, PasswdFileChecker
from txxapi.auth.realm import make_portal
from txxapi.db.persist import open_persistence
from txxapi.http.site import make_site
from txxapi.server import Server

log = Logger()


class StartupError(Exception):
    pass


def make_backend(settings):
    """The txxenops backend the settings ask for; 'auto' takes libxl on a
    Xen host and the simulator elsewhere."""
    choice = settings["backend"]
    if choice in ("auto", "libxl"):
        try:
            from txxenops.backends.libxl import open_backend
            backend = open_backend()
            log.info("backend: libxl")
            return backend
        except Exception as e:
            if choice == "libxl":
                raise StartupError("--backend libxl: %s" % (e,))
            log.info("backend: simulator (no Xen here: {reason})", reason=e)
    elif choice != "simulator":
        raise StartupError("unknown backend %r" % choice)
    from txxenops.backends.simulator import SimulatorBackend
    # The domain table lives in the data dir, so domains outlive a restart
    # of the server as they outlive XAPI on a real host.
    return SimulatorBackend(
        memory=int(settings["simulator-memory"]),
        state_dir=os.path.join(settings["data-dir"], "xenops"),
        op_time=float(settings["simulator-op-time"]))


def make_checkers(settings):
    auth = settings["auth"]
    if auth.startswith("passwd:"):
        return [PasswdFileChecker(auth[len("passwd:"):])]
    return [PAMChecker(settings["pam-service"])]


class XapiService(service.Service):
    name = "xapi"

    def __init__(self, settings, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.reactor = reactor
        self.server = None
        self.ports = []
        self._starting = None

    def startService(self):
        service.Service.startService(self)
        self._starting = self._start()
        self._starting.addErrback(self._failed)

    def _failed(self, failure):
        log.failure("txxapi could not start", failure)
        sys.stderr.write("txxapi: could not start: %s\n"
                         % failure.getErrorMessage())
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def _start(self):
        s = self.settings
        data_dir = s["data-dir"]
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        backend = make_backend(s)
        persistence = open_persistence(data_dir, self.reactor)
        self.server = Server(
            data_dir, make_portal(make_checkers(s)), backend, persistence,
            bind=s["bind"], login_failure_delay=float(s["login-failure-delay"]),
            reactor=self.reactor, import_db=s["import-db"] or None,
            shutdown_timeout=float(s["shutdown-timeout"]),
            local_sr_dir=s["local-sr-dir"] or None,
            iso_dir=s["iso-dir"] or None)
        yield self.server.start()
        site = make_site(
            self.server, max_rpc_size=int(s["max-rpc-size"]),
            header_read_timeout=float(s["header-read-timeout"]),
            header_total_timeout=float(s["header-total-timeout"]),
            max_connections_per_client=int(
                s["max-connections-per-client"]))
        bind = s["bind"]
        if int(s["http-port"]):
            self.ports.append(self.reactor.listenTCP(
                int(s["http-port"]), site, interface=bind))
        if int(s["https-port"]):
            cert, key = self._certificate(data_dir)
            self.ports.append(self.reactor.listenSSL(
                int(s["https-port"]), site,
                tls.server_context_factory(cert, key), interface=bind))
        log.info("txxapi ready: http {http}, https {https}",
                 http=s["http-port"], https=s["https-port"])

    def _certificate(self, data_dir):
        s = self.settings
        if s["certificate"]:
            return s["certificate"], s["private-key"] or None
        cert = os.path.join(data_dir, "xapi-ssl.pem")
        key = os.path.join(data_dir, "xapi-ssl.key")
        fields = self.server.db.fields("host", self.server.host_ref)
        tls.ensure_self_signed(cert, key, fields["hostname"],
                               host_uuid=fields["uuid"],
                               ips=[fields["address"]])
        return cert, key

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        for port in self.ports:
            yield port.stopListening()
        self.ports = []
        if self.server is not None:
            yield self.server.stop()

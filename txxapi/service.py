"""
The twistd service tree, as Twisted builds one: ``XapiService`` is a
MultiService whose named children are the server's architecture, started
in this order and stopped in the reverse one, each waiting for the last:

    pool       this host's etcd member, once it is in a pool of two or
               more (txxapi.pool.database)
    database   the database, loaded from and kept in its persistence
               (the local redo log alone; in a pool, the master's log on
               etcd or a slave's replica of it)
    core       this host's identity, sessions, tasks, events, messages,
               storage, the xenops bridge (and the periodic jobs they own:
               session expiry, GC kicks, snapshots)
    management the plain listener, an endpoint string
               (tcp:PORT:interface=), and the TLS listener (TLS terminated
               here, in-process), on an SSL endpoint built from
               txxapi.tls's context factory, whose settings (TLS 1.2+, its
               suites, no renegotiation) the ssl: strports grammar cannot
               state; both bound again when the management address moves,
               and listening at start on the address the database
               records (txxapi.http.management)
    unix       the local Unix socket (<data-dir>/xapi unless told), the
               same site; its callers are trusted as root, as on XAPI's
               /var/lib/xcp/xapi (txxapi.http.local)
    nbd        the NBD server (txxapi.nbd), on the host certificate too,
               moving with the management address

The host certificate (txxapi.tls.HostCertificate) is shared by HTTPS and
NBD; our own self-signed one is issued again when the address moves.

A child joins once the one before it has started (the database and the
core start asynchronously).  An error at start stops the reactor with the
message on stderr.
"""

import os
import sys

from twisted.application import service, strports
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from txxapi import tls
from txxapi.config import local_socket_path
from txxapi.auth.checkers import PAMChecker, PasswdFileChecker
from txxapi.auth.realm import make_portal
from txxapi.db.persist import open_persistence
from txxapi.ha import local as ha_local
from txxapi.ha.monitor import fence_domains
from txxapi.http import management
from txxapi.http.rpc_channel import RPCFactory
from txxapi.http.site import make_site
from txxapi.metrics.token import TokenFile
from txxapi.nbd.service import NBDService
from txxapi.pool import database as pool_db
from txxapi.pool import role as pool_role
from txxapi.pool.database import PoolDatabase
from txxapi.pool.slavedb import SlavePersistence
from txxapi.server import Server

log = Logger()


class StartupError(Exception):
    pass


def make_backend(settings, discard_domains=False):
    """The txxenops backend the settings ask for; 'auto' takes libxl on a
    Xen host and the simulator elsewhere.  ``discard_domains``: the host
    was declared dead by HA while it was down (txxapi.ha.local), and
    what it ran before is not its own any more."""
    choice = settings["backend"]
    if choice in ("auto", "libxl"):
        try:
            from txxenops.backends.libxl import open_backend
            backend = open_backend()
            log.info("backend: libxl")
            if discard_domains:
                fence_domains(backend)
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
        op_time=float(settings["simulator-op-time"]),
        hostname=settings["simulator-hostname"] or None,
        discard_domains=discard_domains)


def ad_settings(settings):
    """Where Active Directory is looked for (used if it can be, see
    txxapi.extauth.service)."""
    from txxapi.extauth.settings import Settings
    return Settings(dns_server=settings["ad-dns-server"],
                    ca_file=settings["ad-ca-file"])


def make_checkers(settings):
    auth = settings["auth"]
    if auth.startswith("passwd:"):
        return [PasswdFileChecker(auth[len("passwd:"):])]
    return [PAMChecker(settings["pam-service"])]


class StepService(service.Service):
    """A child whose start and stop are Deferreds (``ready`` fires once it
    has started)."""

    def __init__(self, name, start, stop):
        self.setName(name)
        self._start, self._stop = start, stop
        self.ready = None

    def startService(self):
        service.Service.startService(self)
        self.ready = defer.maybeDeferred(self._start)

    def stopService(self):
        service.Service.stopService(self)
        return defer.maybeDeferred(self._stop)


# Connections the kernel queues before they are accepted: Twisted's 50
# drops the SYNs of a thousand clients connecting at once, which then
# retry after one and three seconds.
LISTEN_BACKLOG = 1024


def http_endpoint(port, bind):
    """The endpoint string of the plain listener."""
    description = "tcp:%d:backlog=%d" % (port, LISTEN_BACKLOG)
    if bind:
        description += ":interface=" + endpoints.quoteStringArgument(bind)
    return description


def _raising(listener):
    """A port that cannot be had fails the listener's start, as listenTCP
    did."""
    listener._raiseSynchronously = True
    return listener


class XapiService(service.MultiService):
    name = "xapi"

    def __init__(self, settings, reactor=None):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.reactor = reactor
        self.server = None
        self._starting = None
        self._management = None     # the listeners on the management address

    def startService(self):
        # Children are added, and so started, one after the other.
        service.Service.startService(self)
        self._starting = self._start()
        self._starting.addErrback(self._failed)

    def _failed(self, failure):
        log.failure("txxapi could not start", failure)
        sys.stderr.write("txxapi: could not start: %s\n"
                         % failure.getErrorMessage())
        if self.reactor.running:
            self.reactor.stop()

    def _join(self, child):
        """Add a child to the running tree (which starts it); a Deferred
        of its start."""
        child.setServiceParent(self)
        return getattr(child, "ready", None)

    def _listener(self, name, child):
        child.setName(name)
        return self._join(_raising(child))

    @defer.inlineCallbacks
    def restart_in_place(self):
        """Start again in a new role (an HA take-over) without leaving
        the process: every child but the pool's stops, then the server
        starts as a new process would, from the pool's log.  A process
        restart would also restart this host's etcd member, and with
        another member dead already the cluster would lose its quorum
        meanwhile (and every host its HA lease)."""
        pool_database = self.getServiceNamed("pool")
        for child in reversed(list(self)):
            if child is not pool_database:
                yield defer.maybeDeferred(child.disownServiceParent)
        log.info("restarting in place")
        self._starting = self._start(pool_database)
        self._starting.addErrback(self._failed)
        yield self._starting

    @defer.inlineCallbacks
    def _start(self, pool_database=None):
        s = self.settings
        data_dir = s["data-dir"]
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        if pool_database is None:
            pool_database = PoolDatabase(
                data_dir, self.reactor, int(s["pool-lease-ttl"]))
            self._join(pool_database)
        discard = False
        if pool_database.pooled:
            persistence, discard = yield self._pool_persistence(
                pool_database)
        else:
            persistence = open_persistence(data_dir, self.reactor)
        backend = make_backend(s, discard_domains=discard)
        server = self.server = Server(
            data_dir, make_portal(make_checkers(s)), backend, persistence,
            bind=s["bind"], login_failure_delay=float(s["login-failure-delay"]),
            reactor=self.reactor, import_db=s["import-db"] or None,
            shutdown_timeout=float(s["shutdown-timeout"]),
            local_sr_dir=s["local-sr-dir"] or None,
            iso_dir=s["iso-dir"] or None,
            ad_settings=ad_settings(s),
            session_revalidation_interval=float(
                s["session-revalidation-interval"]),
            extauth_cache_ttl=float(s["extauth-cache-ttl"]),
            import_read_timeout=float(s["import-read-timeout"]),
            metrics_interval=int(s["metrics-interval"]),
            heartbeat_interval=float(s["pool-heartbeat-interval"]),
            pool_call_timeout=float(s["pool-call-timeout"]),
            host_assumed_dead_interval=float(
                s["host-assumed-dead-interval"]),
            metrics_token=TokenFile(s["metrics-token-file"])
            if s["metrics-token-file"] else None)
        server.pool_database = pool_database
        if pool_database.pooled:
            server.greeting.on_greeted = pool_database.refresh_clients
        server.liveness.on_dead = \
            lambda host: pool_database.host_dead(server, host)
        server.restart_in_place = self.restart_in_place
        if isinstance(persistence, SlavePersistence):
            persistence.identity = server.identity
        yield self._join(StepService("database", server.open_database,
                                     server.close_database))
        yield self._join(StepService("core", server.start_core,
                                     server.stop_core))
        # Served once the host has its RRDs, as XAPI is once xcp-rrdd runs.
        yield server.metrics.first_sample()
        site = make_site(
            server, max_rpc_size=int(s["max-rpc-size"]),
            header_read_timeout=float(s["header-read-timeout"]),
            header_total_timeout=float(s["header-total-timeout"]),
            max_connections_per_client=int(
                s["max-connections-per-client"]))
        if s["rpc-http"] == "direct":
            site = RPCFactory(site)
        bind = s["bind"]
        # At start the recorded management address wins (see
        # txxapi.http.management.starting_address); a restart in place
        # falls back to where the last start listened.
        fallback = bind if self._management is None else \
            self._management.address
        recorded = server.db.fields("host", server.host_ref)["address"]
        address = management.starting_address(bind, recorded)
        certificate = None
        makers = []
        if int(s["http-port"]):
            makers.append(lambda address: _raising(strports.service(
                http_endpoint(int(s["http-port"]), address), site,
                reactor=self.reactor)))
        if int(s["https-port"]) or int(s["nbd-port"]):
            certificate = self._certificate(data_dir)
        # Our own certificate names the management address; one given
        # with --certificate is the operator's.
        own_certificate = certificate is not None and not s["certificate"]
        if int(s["https-port"]):
            makers.append(lambda address: _raising(
                StreamServerEndpointService(endpoints.SSL4ServerEndpoint(
                    self.reactor, int(s["https-port"]), certificate,
                    backlog=LISTEN_BACKLOG, interface=address), site)))
        self._management = management.ManagementListeners(
            self.reactor, server.db, server.host_ref, address, makers,
            fallback=fallback)
        if own_certificate:
            self._management.followers.append(
                lambda address: self._follow_address(certificate, address))
        self._management.followers.append(pool_database.address_moved)
        self._listener("management", self._management)
        if own_certificate:
            # Where it listens (the fallback, if it had to), before a turn
            # of the reactor lets a connection in.
            listening = self._management.address
            self._follow_address(certificate, recorded if listening in
                                 management.EVERY_ADDRESS else listening)
        socket_path = local_socket_path(s)
        if socket_path:
            # Owner only: connecting is being root here.  The lock file
            # beside it lets a restart after kill -9 take the path over.
            self._listener("unix", StreamServerEndpointService(
                endpoints.UNIXServerEndpoint(self.reactor, socket_path,
                                             mode=0o600, wantPID=True),
                site))
        if int(s["nbd-port"]):
            nbd = NBDService(
                server, int(s["nbd-port"]), self._management.address,
                certificate,
                requests_in_flight=int(s["nbd-requests-in-flight"]))
            self._management.followers.append(nbd.rebind)
            yield self._join(nbd)
        log.info("txxapi ready: http {http}, https {https}",
                 http=s["http-port"], https=s["https-port"])
        # A slave greets its master once it can be called back.
        server.greeting.begin()

    @defer.inlineCallbacks
    def _pool_persistence(self, pool_database):
        """A pooled host: its etcd member up, then the master's log (once
        it holds the mastership) or a slave's replica; and whether the
        domains it ran are still its own (see txxapi.ha.local)."""
        data_dir = self.settings["data-dir"]
        yield pool_database.start_member()
        armed = ha_local.armed(data_dir)
        ha_lease = yield ha_local.live_lease(pool_database.client, data_dir)
        if armed and pool_role.read(data_dir).is_master:
            master = yield ha_local.master_elsewhere(
                pool_database.client, pool_database.config["name"],
                ha_lease, self.reactor)
            if master is not None:
                log.warn("HA: {a} took the mastership while this host was "
                         "down: starting as its slave", a=master)
                pool_role.write(data_dir, pool_role.Role(pool_role.SLAVE,
                                                         master))
        if pool_role.read(data_dir).is_master:
            persistence = yield pool_database.master_persistence(
                pool_database.config["name"], ha_lease)
        else:
            persistence = SlavePersistence(
                pool_database.client, pool_db.PREFIX,
                os.path.join(data_dir, "replica"), None, self.reactor)
        return persistence, armed and ha_lease is None

    def _certificate(self, data_dir):
        """The host certificate the listeners serve: --certificate's, or
        our own self-signed one, made on a first start."""
        s = self.settings
        if s["certificate"]:
            return tls.HostCertificate(s["certificate"],
                                       s["private-key"] or None)
        cert = os.path.join(data_dir, "xapi-ssl.pem")
        key = os.path.join(data_dir, "xapi-ssl.key")
        fields = self.server.db.fields("host", self.server.host_ref)
        tls.ensure_self_signed(cert, key, fields["hostname"],
                               host_uuid=fields["uuid"],
                               ips=[fields["address"]])
        return tls.HostCertificate(cert, key)

    def _follow_address(self, certificate, address):
        """Our own certificate names the management address it serves
        on (issued again if it named another: the address moved, now or
        while the host was down)."""
        fields = self.server.db.fields("host", self.server.host_ref)
        try:
            if not tls.follow_address(
                    certificate.cert_path, certificate.key_path,
                    fields["hostname"], fields["uuid"], address):
                return
            certificate.load()
        except Exception:
            # The host serves on with the certificate it has.
            log.failure("host certificate: cannot issue it again for "
                        "{address}", address=address)
            return
        log.info("host certificate issued again for {address}",
                 address=address)

    @defer.inlineCallbacks
    def stopService(self):
        """Children in reverse order, each stopped before the next."""
        service.Service.stopService(self)
        for child in reversed(list(self)):
            yield defer.maybeDeferred(child.stopService)

"""
The Server: one host's toolstack, the object every layer reaches the
others through (database, persistence, sessions, tasks, events, dispatch,
forwarding, backends).  It is plain state plus start/stop; the twistd
service (txxapi.service) owns its lifetime and its listeners.
"""

import os
import socket

from twisted.internet import defer
from twisted.logger import Logger

import txxapi.impl  # noqa: F401  (registers the explicit messages)
from txxapi import bootstrap
from txxapi.api.audit import AuditLog
from txxapi.api.context import Context
from txxapi.api.dispatch import Dispatcher
from txxapi.api.sessions import SessionManager
from txxapi.api.tasks import TaskManager
from txxapi.datamodel import MODEL
from txxapi.db import statedb
from txxapi.db.memory import Database
from txxapi.events import EventHub
from txxapi.extauth import revalidation
from txxapi.extauth import service as extauth_service
from txxapi.xva import url_import
from txxapi.extauth.service import ExternalAuth
from txxapi.forwarding import Forwarder
from txxapi.ha.monitor import HAMonitor
from txxapi.identity import HostIdentity
from txxapi.messages import MessageStore
from txxapi.metrics.collector import Metrics
from txxapi.pool import role as pool_role
from txxapi.pool import liveness
from txxapi.pool.hello import Greeting
from txxapi.pool.client import ANSWER_TIMEOUT
from txxapi.pool.peers import PeerSessions
from txxapi.pool.transition import MasterTransition, Proposals
from txxapi.storage import Storage
from txxapi.xenops import DEFAULT_SHUTDOWN_TIMEOUT, Xenops

log = Logger()


class Server:
    """The parts, wired: each is given the collaborators it uses (see
    txxapi.interfaces), and this object is what ``ctx.server`` reaches
    them through."""

    def __init__(self, data_dir, portal, xenops, persistence,
                 bind="", login_failure_delay=5.0, reactor=None,
                 import_db=None, shutdown_timeout=DEFAULT_SHUTDOWN_TIMEOUT,
                 local_sr_dir=None, iso_dir=None, ad_settings=None,
                 session_revalidation_interval=revalidation.INTERVAL,
                 extauth_cache_ttl=extauth_service.CACHE_TTL,
                 import_read_timeout=url_import.READ_TIMEOUT,
                 metrics_interval=5,
                 heartbeat_interval=liveness.HEARTBEAT_INTERVAL,
                 pool_call_timeout=ANSWER_TIMEOUT,
                 host_assumed_dead_interval=liveness.ASSUMED_DEAD_INTERVAL,
                 metrics_token=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.data_dir = data_dir
        self.bind = bind
        self.identity = HostIdentity(data_dir, bind)
        self.db = db = Database(MODEL)
        self.persistence = persistence
        self.tasks = TaskManager(db, self.identity, clock=reactor)
        self.sessions = SessionManager(db, self.identity, self.tasks, portal,
                                       login_failure_delay, clock=reactor)
        self.extauth = ExternalAuth(db, self.identity, reactor,
                                    _unique(portal.checkers.values()),
                                    data_dir, ad_settings,
                                    cache_ttl=extauth_cache_ttl)
        self.sessions.extauth = self.extauth
        self.revalidator = revalidation.Revalidator(
            db, self.extauth, self.sessions, reactor,
            session_revalidation_interval)
        self.events = EventHub(db, reactor)
        # The backend, behind the bridge that runs it on threads and keeps
        # the database in step with its domains.
        self.xenops = Xenops(db, self.identity, reactor, self.tasks, xenops,
                             self.context, shutdown_timeout=shutdown_timeout)
        self.import_db = import_db
        # VM.import from a URL: how long a silent server is waited for.
        self.import_read_timeout = import_read_timeout
        # Parts that start after the database is ready and stop before it
        # closes, in order: objects with start() and stop(), each of which
        # may return a Deferred.
        self.components = []
        self.messages = MessageStore(db, self.events, reactor,
                                     os.path.join(data_dir, "messages"))
        self.components.append(self.messages)
        # Storage before the VMs: a VM's disks are attached through it.
        self.storage = Storage(db, self.identity, reactor, self.tasks,
                               local_sr_dir=local_sr_dir, iso_dir=iso_dir)
        self.storage.guest_writes = self.xenops.guest_writes()
        self.components.append(self.storage)
        # The NBD service, while it runs (txxapi.nbd.service).
        self.nbd = None
        self.components.append(self.xenops)
        # The RRDs of this host, sampled from the backend every step.
        self.metrics = Metrics(db, self.identity, reactor, self.xenops,
                               self.messages, data_dir, metrics_interval,
                               scrape_token=metrics_token)
        self.components.append(self.metrics)
        # A slave says pool.hello to its master once it is up, then sends
        # it heartbeats; the master tells live hosts from dead ones.
        self.greeting = Greeting(reactor, self.identity, db)
        self.components.append(self.greeting)
        self.peers = PeerSessions(reactor, self.identity, pool_call_timeout)
        self.liveness = liveness.Liveness(
            reactor, self.identity, db, self.peers, heartbeat_interval,
            host_assumed_dead_interval)
        self.components.append(self.liveness)
        # A new master names itself the pool's (txxapi.pool.transition).
        self.components.append(MasterTransition(db, self.identity,
                                                self.messages))
        # HA: this host in the liveset, its fencing, the master's
        # failover (txxapi.ha.monitor).
        self.ha = HAMonitor(self)
        self.components.append(self.ha)
        self.proposals = Proposals()
        # Parts made at their first use, one per class (the HTTP
        # handlers' pool side: txxapi.redirect.sessions.part_of).
        self.parts = {}
        self.forwarder = Forwarder(self.identity, db, reactor, self.storage)
        # Calls of sessions that are not local superusers (XAPI's RBAC
        # audit log).
        self.audit = AuditLog(db, os.path.join(data_dir, "audit.log"),
                              socket.gethostname())
        self.dispatcher = Dispatcher(db, self.sessions, self.tasks,
                                     self.forwarder, persistence,
                                     self.context, self.audit)

    def context(self, session=None, message=None, origin=None):
        """A call context on this server."""
        return Context(self, session, message, origin=origin)

    # This host's identity, as the implementations read it.
    host_ref = property(lambda self: self.identity.host_ref)
    pool_ref = property(lambda self: self.identity.pool_ref)
    pool_secret = property(lambda self: self.identity.pool_secret)

    @defer.inlineCallbacks
    def start(self):
        """The whole server: its database, then its core."""
        yield self.open_database()
        yield self.start_core()

    @defer.inlineCallbacks
    def stop(self):
        yield self.stop_core()
        yield self.close_database()

    def use_persistence(self, persistence):
        """Writes are made durable by another persistence from now on (a
        pool of one becoming a pool)."""
        self.persistence = self.dispatcher.persistence = persistence

    def open_database(self):
        """Load the database from its persistence (state.db, redo log)."""
        return self.persistence.open(self.db)

    def close_database(self):
        return self.persistence.close()

    @defer.inlineCallbacks
    def start_core(self):
        """On an open database: this host's identity (a first start makes
        the pool and the host), then sessions, tasks, events and the
        components in order."""
        identity = {}
        if self.import_db and not self.db.count("host"):
            identity = self._import(self.import_db)
            yield self.persistence.snapshot()
        inventory = bootstrap.read_inventory(self.data_dir, identity)
        self.identity.pool_secret = bootstrap.read_pool_secret(
            self.data_dir)
        self.identity.role = pool_role.read(self.data_dir)
        host_uuid = inventory["INSTALLATION_UUID"]
        bootstrap.load_roles(self.db)
        if host_uuid in self.db.table("host").by_uuid:
            self.identity.host_ref = self.db.by_uuid("host", host_uuid)
        else:
            address = bootstrap.management_address(self.bind)
            self.identity.host_ref = bootstrap.first_start(
                self.db, inventory, self.xenops.host_info(), address,
                self.xenops.name)
            log.info("first start: created pool and host {uuid}",
                     uuid=host_uuid)
        self.identity.pool_ref = self.db.refs("pool")[0]
        yield self.persistence.wait_durable(self.db.persistent_generation)
        self.sessions.start()
        self.extauth.restore()
        self.revalidator.start()
        self.tasks.start()
        self.events.start()
        for component in self.components:
            yield component.start()

    def _import(self, path):
        """Take over a real XAPI's state.db; this host becomes its pool's
        master host.  Returns the inventory facts that say so."""
        summary = statedb.import_xapi(path, self.db)
        log.info("imported {path}: {summary}", path=path, summary=summary)
        identity = {}
        for _, pool in self.db.records("pool"):
            if self.db.exists("host", pool["master"]):
                host = self.db.fields("host", pool["master"])
                identity["INSTALLATION_UUID"] = host["uuid"]
                dom0 = host["control_domain"]
                if self.db.exists("VM", dom0):
                    identity["CONTROL_DOMAIN_UUID"] = \
                        self.db.fields("VM", dom0)["uuid"]
        return identity

    @defer.inlineCallbacks
    def stop_core(self):
        for component in reversed(self.components):
            yield component.stop()
        self.events.stop()
        self.tasks.stop()
        self.sessions.stop()
        self.revalidator.stop()
        self.extauth.stop()
        self.audit.close()

    def assert_master(self):
        self.identity.assert_master()


def _unique(items):
    """Each object once (a portal lists a checker per interface)."""
    out = []
    for item in items:
        if not any(item is o for o in out):
            out.append(item)
    return out

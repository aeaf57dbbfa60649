"""
The pool's database across hosts: which persistence a host runs on, and
the etcd member it supervises.

- A host alone in its pool keeps its local redo log (txxapi.db.persist)
  and runs no etcd.
- The first join makes the master ``go_pooled`` while it runs: it starts
  an etcd member of a new cluster, wins the mastership (a key under a
  lease), and its database switches, in one reactor step, from the local
  log to PoolPersistence (every group commit on etcd).  Sessions and
  everything in memory stay: only where writes go changes.
- Each joiner is given its place (``place_joiner``): an etcd member (a
  learner, promoted once caught up) while the cluster has fewer than the
  pool wants (txxapi.pool.membership), else a client only.  What it
  needs is written to ``etcd.json`` in its data dir.  The master moves
  members between hosts as the pool grows and shrinks (``membership``);
  a host starts or stops its member when told (``become_member``,
  ``leave_member``).
- At start a host with ``etcd.json`` starts its member (a child of the
  service tree), then opens its database: the master on PoolPersistence
  once it holds the mastership, a slave on a Replica whose own writes go
  to the master (txxapi.pool.slavedb).
"""

import json
import os
import shutil

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from txxapi.files import write_atomically
from txxapi.pool.etcd import Election, EtcdClient, EtcdError, EtcdTimeout, \
    LeaseKeeper
from txxapi.pool.etcd.member import (
    CLIENT_PORT, PEER_PORT, WATCH_SILENCE, EtcdMember, promote_member,
    retry_unhealthy, url)
from txxapi.pool.membership import Membership, client_urls, member_cluster, \
    wait_healthy, wanted
from txxapi.pool.other_master import OtherMasterCheck
from txxapi.pool.persistence import PoolPersistence

log = Logger()

CONFIG = "etcd.json"
PREFIX = b"txxapi/db"
MASTER_KEY = b"txxapi/master"
# The mastership lease: a master that cannot renew it for this long stops
# writing, and a new master can take over after it.
LEASE_TTL = 10
MEMBER_TIMEOUT = 60.0
# A stopping master's revoke is a courtesy to its successor: without a
# quorum (the whole pool shutting down) it would wait out the lease.
REVOKE_ON_STOP_TIMEOUT = 2.0
# A member not ready this soon at start may have been removed meanwhile
# (its host was down, and its member went to another).
REMOVED_CHECK = 5.0


def read_config(data_dir):
    path = os.path.join(data_dir, CONFIG)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_config(data_dir, config):
    write_atomically(os.path.join(data_dir, CONFIG),
                     json.dumps(config, sort_keys=True) + "\n")


def member_urls(address):
    return url("http", address, CLIENT_PORT), url("http", address, PEER_PORT)


class PoolDatabase(service.MultiService):
    """The service-tree child that holds this host's etcd member (if it
    has one) and makes its pool persistence."""

    name = "pool"

    def __init__(self, data_dir, reactor, lease_ttl=LEASE_TTL):
        service.MultiService.__init__(self)
        self.data_dir = data_dir
        self.reactor = reactor
        self.lease_ttl = lease_ttl
        self.config = read_config(data_dir)
        self.client = None
        self.member = None
        self.lease_keeper = None
        self.membership = None
        # Ejected: nothing of the pool's is written any more.
        self.leaving = False

    def reconcile_members(self, server):
        """On the master: etcd's members brought to what the pool wants
        (in the background; a Deferred of the pass)."""
        return self._membership(server).reconcile()

    def host_dead(self, server, host):
        """On the master: ``host`` found dead; its etcd member may move."""
        return self._membership(server).host_dead(host)

    def _membership(self, server):
        if self.membership is None:
            self.membership = Membership(self, server)
        return self.membership

    @property
    def pooled(self):
        return self.config is not None

    def address_moved(self, address):
        """This host's management address moved.  Its etcd URLs (and, on
        the master, the mastership key the slaves read) stay those of the
        address it had when the pool placed it: moving them would take
        a member update, a restart of the member and every host's client
        list, which is not done.  Said loudly, as it leaves the pool
        depending on the old address."""
        old = self.config.get("address") if self.pooled else address
        if old != address:
            log.warn("management address moved to {address}: this host's "
                     "etcd URLs still name {old}, which the pool keeps "
                     "using", address=address, old=old)

    # -- start ------------------------------------------------------------------

    @defer.inlineCallbacks
    def start_member(self):
        """This host's etcd member, if it has one, serving; the client of
        the cluster either way (already, after a restart in place)."""
        if self.client is not None:
            return
        # Every member of the pool is a txxapi host's EtcdMember, which
        # sends progress notifications: a silent watch is a lost one.
        self.client = EtcdClient(self.config["clients"], self.reactor,
                                 watch_silence=WATCH_SILENCE)
        if self.config.get("member"):
            yield self._run_member()
        yield self.refresh_clients()

    @defer.inlineCallbacks
    def _run_member(self):
        config = self.config
        address = config["address"]
        self.member = EtcdMember(
            config["name"], os.path.join(self.data_dir, "etcd"), address,
            initial_cluster=config["cluster"],
            cluster_state=config["state"], reactor=self.reactor)
        self.member.setServiceParent(self)
        try:
            yield self.member.ready(
                MEMBER_TIMEOUT if config.get("learner") else REMOVED_CHECK)
        except EtcdTimeout:
            if (yield self._was_removed()):
                log.warn("pool: this host's etcd member was removed while "
                         "it was down; a client now")
                yield self.leave_member()
                return
            yield self.member.ready(MEMBER_TIMEOUT)
        # Serving: from now on an exit may mean it was removed meanwhile.
        self.member.may_restart = self._member_exited
        if config.get("learner"):
            yield promote_member(self.client, config["id"], MEMBER_TIMEOUT)
            config["learner"] = False
            write_config(self.data_dir, config)
            log.info("pool: etcd member {name} promoted to a voter",
                     name=config["name"])

    def forget_pool(self):
        """This host is ejected: its etcd.json goes, and stays gone (its
        member, removed from the cluster, may stop meanwhile)."""
        self.leaving = True
        path = os.path.join(self.data_dir, CONFIG)
        if os.path.exists(path):
            os.unlink(path)

    @defer.inlineCallbacks
    def _member_exited(self):
        """Whether this host's member, which exited by itself, starts
        again: not once its host was cut off while the master gave its
        place to another host (etcd stops a member when it learns that,
        and would at each restart); this host is a client then."""
        if self.leaving:
            return False
        if not (yield self._was_removed()) or self.member is None:
            return True
        if self.leaving:
            return False
        log.warn("pool: this host's etcd member was removed while the "
                 "host was cut off; a client now")
        yield self.leave_member()
        return False

    @defer.inlineCallbacks
    def _was_removed(self):
        """Whether the cluster (asked of the other members) no longer
        lists this host's member (by its id, its name once started, or
        its peer URL)."""
        try:
            members = yield self.client.members()
        except EtcdError:
            return False
        peer_url = member_urls(self.config["address"])[1]
        return not any(m.id == self.config.get("id") or
                       m.name == self.config["name"] or
                       peer_url in m.peer_urls for m in members)

    @defer.inlineCallbacks
    def become_member(self, cluster, member_id):
        """Told by the master (which added it as a learner): this client
        host starts an etcd member, which is promoted once caught up."""
        if self.member is not None:
            raise ValueError("this host runs an etcd member already")
        # What a member this host had before left is useless now.
        yield threads.deferToThread(shutil.rmtree,
                                    os.path.join(self.data_dir, "etcd"),
                                    True)
        self.config.update({"member": True, "cluster": cluster,
                            "state": "existing", "learner": True,
                            "id": member_id})
        write_config(self.data_dir, self.config)
        yield self._run_member()
        self.add_client_url(member_urls(self.config["address"])[0])

    @defer.inlineCallbacks
    def leave_member(self):
        """Told by the master (which removed it from the cluster): the
        member stops, its data goes, this host is a client."""
        member, self.member = self.member, None
        for key in ("cluster", "state", "learner", "id"):
            self.config.pop(key, None)
        self.config["member"] = False
        own = member_urls(self.config["address"])[0]
        self.config["clients"] = [u for u in self.config["clients"]
                                  if u != own] or self.config["clients"]
        write_config(self.data_dir, self.config)
        if member is not None:
            yield member.disownServiceParent()
        yield threads.deferToThread(shutil.rmtree,
                                    os.path.join(self.data_dir, "etcd"),
                                    True)
        log.info("pool: this host's etcd member stopped; a client now")

    def add_client_url(self, client_url):
        self.learn_clients([client_url])

    def learn_clients(self, urls):
        """Members' client URLs this host's client fails over to, now and
        (etcd.json) at its next start."""
        new = set(urls) - set(self.config["clients"])
        if new:
            self.config["clients"] = sorted(set(self.config["clients"]) | new)
            write_config(self.data_dir, self.config)
            self.client.add_endpoints(sorted(new))

    @defer.inlineCallbacks
    def refresh_clients(self):
        """The members etcd lists now, learnt (at start: members added
        while this host was down)."""
        try:
            members = yield self.client.members()
        except EtcdError as e:
            log.info("pool: etcd's member list not read ({e})", e=e)
            return
        self.learn_clients(client_urls(members))

    def master_persistence(self, host_uuid, lease=None):
        """PoolPersistence, once this host holds the mastership (under
        ``lease`` if given: the one an HA take-over won it with)."""
        granted_at = self.reactor.seconds()
        if lease is None:
            lease = yield self.client.grant(self.lease_ttl)
        # Renewed while it waits: the wait may outlast the lease's TTL.
        # Lost only once etcd says so: every write is fenced on the key's
        # lease in etcd, and a quorum lost for longer than the TTL (a
        # slave's member restarting while another is down) keeps it.
        self.lease_keeper = LeaseKeeper(
            self.client, lease, expiry_is_loss=False).start(granted_at)
        # Fires at once on a fresh pool; after a crash, once the old
        # master's lease has expired; after a transition, once the old
        # master has stopped.  Another master that holds it meanwhile makes
        # this host its slave (txxapi.pool.other_master).
        # The key holds the master's address: HOST_IS_SLAVE names it.
        address = self.config["address"]
        check = OtherMasterCheck(self.client, MASTER_KEY, lease.id, address,
                                 self.data_dir, self.reactor).start()
        try:
            yield Election(self.client, MASTER_KEY, address.encode(),
                           lease.id).campaign()
        finally:
            check.stop()
        log.info("pool: this host holds the mastership (lease {id})",
                 id=lease.id)
        return PoolPersistence(
            os.path.join(self.data_dir, "pooldb"), self.reactor, self.client,
            PREFIX, MASTER_KEY, lease.id, lease_keeper=self.lease_keeper,
            freeze_heap=True)

    @defer.inlineCallbacks
    def stopService(self):
        """The mastership let go at once (its lease revoked) rather than
        left to expire, so a host taking over after a planned transition
        waits for nobody; then the etcd member stops."""
        keeper, self.lease_keeper = self.lease_keeper, None
        if keeper is not None:
            try:
                yield keeper.stop(revoke=True, timeout=REVOKE_ON_STOP_TIMEOUT)
            except Exception as e:
                log.warn("pool: the mastership lease was not revoked ({e})",
                         e=e)
        yield service.MultiService.stopService(self)

    # -- the first join --------------------------------------------------------

    @defer.inlineCallbacks
    def go_pooled(self, server):
        """On the master of a pool of one: etcd, mastership, and the
        database switched onto the pool's log."""
        uuid = server.db.fields("host", server.host_ref)["uuid"]
        address = server.db.fields("host", server.host_ref)["address"]
        client_url, peer_url = member_urls(address)
        self.config = {"member": True, "name": uuid, "address": address,
                       "cluster": {uuid: peer_url}, "state": "new",
                       "clients": [client_url]}
        yield self.start_member()
        write_config(self.data_dir, self.config)
        pooled = yield self.master_persistence(uuid)
        local = server.persistence
        # One reactor step: no write between the two is missed.
        local.detach()
        pooled.attach(server.db)
        published = pooled.snapshot()
        server.use_persistence(pooled)
        yield local.close()
        yield published
        log.info("pool: the database is on the pool's log now")

    @defer.inlineCallbacks
    def place_joiner(self, server, uuid, address):
        """The etcd.json of a joining host (a learner member, added now,
        or a client)."""
        if not self.pooled:
            yield self.go_pooled(server)
        # One change of the cluster at a time (membership's too).
        return (yield self._membership(server).lock.run(
            self._place, server, uuid, address))

    @defer.inlineCallbacks
    def _place(self, server, uuid, address):
        client_url, peer_url = member_urls(address)
        members = yield wait_healthy(self.client)
        voters = [m for m in members if m.name]
        # The joiner is in the database already.
        limit = wanted(server.db.count("host"))
        clients = sorted({u for m in members for u in m.client_urls}
                         | set(self.config["clients"]))
        config = {"member": False, "name": uuid, "address": address,
                  "clients": clients}
        # etcd takes one learner at a time: while another joiner's is not
        # promoted yet, this one starts as a client (membership gives it
        # a member later, if the pool wants one).
        if len(members) < limit and not any(m.is_learner for m in members):
            # Refused for a few seconds after a member (re)started.
            new, now = yield retry_unhealthy(
                self.client, MEMBER_TIMEOUT,
                lambda: self.client.member_add([peer_url], learner=True))
            config.update({"member": True,
                           "cluster": member_cluster(now, new.id, uuid,
                                                     peer_url),
                           "state": "existing", "learner": True,
                           "id": new.id,
                           "clients": sorted(set(clients) | {client_url})})
            # The master's own client fails over to it too; the other
            # hosts learn it at the pass the joiner's pool.hello starts.
            self.learn_clients([client_url])
            log.info("pool: {uuid} joins as etcd member {n}", uuid=uuid,
                     n=len(voters) + 1)
        return config

    @defer.inlineCallbacks
    def remove_host(self, uuid):
        """An ejected host's etcd member leaves the cluster (before the
        host stops it, so quorum is counted without it)."""
        if not self.pooled:
            return
        members = yield self.client.members()
        for m in members:
            if m.name == uuid or (not m.name and m.peer_urls and any(
                    uuid in u for u in m.peer_urls)):
                # Refused while a member has just (re)connected.
                yield retry_unhealthy(
                    self.client, MEMBER_TIMEOUT,
                    lambda m=m: self.client.member_remove(m.id))
                log.info("pool: etcd member {uuid} removed", uuid=uuid)

"""
Which hosts of the pool run an etcd member, kept by the master.

A pool of n hosts wants ``wanted(n)`` members: every host up to
MEMBERS (3), MEMBERS_LARGE (5) from LARGE_POOL (5) hosts; the others are
clients only.  The master compares that with etcd's member list after
each change of the pool (a host said pool.hello, a host was ejected) and
moves one member at a time, each step through etcd's member API and only
on a healthy cluster, waiting for it to be healthy again afterwards:

- a member more: a live host without one is added as a learner, told to
  start it (``pool.etcd_member_join``: it starts, catches up and is
  promoted to a voter), then the next step;
- a member less: one that is not the master's is removed from the
  cluster, then its host is told to stop it (``pool.etcd_member_leave``)
  and becomes a client.

- a member replaced: a member whose host was found dead (by the
  master's liveness: silent for the pool's host-assumed-dead-interval;
  with HA on, by HA: out of the liveset for its fencing margin) and is
  not live since (as the same judge says) is removed, while a live host
  without one can take its place, which the next step adds.  Such a member need not answer for the
  cluster to count as healthy, but a majority of the voters must.

After a pass every host learns the members' client URLs
(``pool.etcd_clients``) unless it took those already (they change when
the members do, or when a joiner's was added as it joined), so its
client reaches the members there are.
A host whose member was removed while it was down finds it out at its
next start, one cut off while it ran once it is back (its member stops),
and runs as a client (txxapi.pool.database).

A host that cannot be reached is passed over for this round (the member
added for it is removed again).
"""

import json
from urllib.parse import urlsplit

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.pool.client import PeerUnreachable
from txxapi.pool.etcd import EtcdError, EtcdTimeout
from txxapi.pool.etcd.member import CLIENT_PORT, NOT_YET, retry_unhealthy, \
    url
from txxapi.pool.liveness import is_live

log = Logger()

MEMBERS, MEMBERS_LARGE, LARGE_POOL = 3, 5, 5
JOIN_CALL = "pool.etcd_member_join"
LEAVE_CALL = "pool.etcd_member_leave"
CLIENTS_CALL = "pool.etcd_clients"
HEALTH_TIMEOUT = 60.0
# How long a host may take to start its member (and see it promoted) or
# to stop it, when told to: its own steps are bounded by as much.
JOIN_ANSWER_TIMEOUT = 2 * HEALTH_TIMEOUT
LEAVE_ANSWER_TIMEOUT = HEALTH_TIMEOUT


def wanted(hosts):
    """etcd members a pool of ``hosts`` hosts runs."""
    return MEMBERS_LARGE if hosts >= LARGE_POOL else min(hosts, MEMBERS)


def client_urls(members):
    """The client URLs of etcd's ``members``: those they list, and those
    on the hosts of their peer URLs (a member that has just started may
    not list its own yet)."""
    urls = {u for m in members for u in m.client_urls}
    for peer in (u for m in members for u in m.peer_urls):
        host = urlsplit(peer).hostname
        if host:
            urls.add(url("http", host, CLIENT_PORT))
    return sorted(urls)


def member_cluster(members, new_id, name, peer_url):
    """The initial-cluster map a member added as ``new_id`` starts with."""
    cluster = {m.name: m.peer_urls[0] for m in members
               if m.id != new_id and m.name and m.peer_urls}
    cluster[name] = peer_url
    return cluster


@defer.inlineCallbacks
def wait_healthy(client, timeout=HEALTH_TIMEOUT, interval=0.25,
                 ignoring=()):
    """Fires once every voting member answers and knows a leader (but
    those named in ``ignoring``, members of dead hosts, as long as the
    others are a majority); EtcdError when not so within timeout."""
    deadline = client.reactor.seconds() + timeout
    while True:
        try:
            members = yield client.members()
            voters = [m for m in members if not m.is_learner]
            healthy, answering = bool(voters), 0
            for m in voters:
                try:
                    if not m.client_urls:
                        raise EtcdError("member %s not started" % m.name)
                    status = yield client.status(m.client_urls[0],
                                                 timeout=2.0)
                    if not status.leader or status.errors:
                        raise EtcdError("member %s without a leader"
                                        % m.name)
                    answering += 1
                except EtcdError:
                    if m.name not in ignoring:
                        raise
            if healthy and 2 * answering > len(voters):
                return members
        except EtcdError as e:
            if client.reactor.seconds() >= deadline:
                raise
            log.debug("pool: etcd not healthy yet ({e})", e=e)
        if client.reactor.seconds() >= deadline:
            raise EtcdTimeout("the pool's etcd is not healthy after %.0f s"
                            % timeout)
        yield task.deferLater(client.reactor, interval, lambda: None)


class Membership:
    """On the master: reconcile() brings etcd's members to wanted(n)."""

    def __init__(self, pool_database, server):
        self.pool_database = pool_database
        self.server = server
        self.lock = defer.DeferredLock()
        self._again = False
        self._running = None
        # Hosts the master's liveness found dead (and not heard since).
        self.dead = set()
        # host ref -> the client URLs it took last.
        self._told = {}

    @property
    def client(self):
        return self.pool_database.client

    def reconcile(self):
        """Start a pass (or ask for one more after the running one); a
        Deferred of the pass's end."""
        if not self.pool_database.pooled or \
                not self.server.identity.is_master:
            return defer.succeed(None)
        if self._running is not None:
            self._again = True
            return self._running
        self._running = d = self._passes()
        d.addErrback(lambda f: log.failure("pool: etcd membership", f))
        return d

    @defer.inlineCallbacks
    def _passes(self):
        try:
            while True:
                self._again = False
                yield self.lock.run(self._pass)
                if not self._again:
                    return
        finally:
            self._running = None

    def _hosts(self):
        db = self.server.db
        return {f["uuid"]: (ref, f["address"])
                for ref, f in db.records("host")}

    @defer.inlineCallbacks
    def _pass(self):
        yield self._moves()
        yield self._tell_clients()

    @defer.inlineCallbacks
    def _tell_clients(self):
        """Every other host that has not taken them yet learns the
        members' client URLs: those they report, and those of the hosts
        they run on (a member that has just started may not list its own
        yet).  A host that did not take them is told at the next pass."""
        members = yield self.client.members()
        urls = client_urls(members)
        self.pool_database.learn_clients(urls)
        me = self.server.host_ref
        hosts = {ref: address for ref, address in self._hosts().values()
                 if ref != me}
        self._told = {ref: u for ref, u in self._told.items() if ref in hosts}
        told = [ref for ref in hosts if self._told.get(ref) != urls]
        results = yield defer.DeferredList(
            [self.server.peers.call(hosts[ref], CLIENTS_CALL,
                                    json.dumps(urls)) for ref in told],
            consumeErrors=True)
        for ref, (ok, result) in zip(told, results):
            if ok:
                self._told[ref] = urls
            else:
                log.info("pool: {address} did not take etcd's client URLs "
                         "({e})", address=hosts[ref],
                         e=result.getErrorMessage())

    @defer.inlineCallbacks
    def _moves(self):
        """Members added or removed until the pool has what it wants;
        whether any was."""
        passed_over = set()
        changed = False
        while True:
            hosts = self._hosts()
            target = wanted(len(hosts))
            dead = self._dead(hosts)
            members = yield wait_healthy(self.client, ignoring=dead)
            candidates = self._candidates(members, hosts, passed_over)
            replaced = [m for m in members if m.name in dead]
            if replaced and candidates and len(members) >= target:
                log.warn("pool: the host of etcd member {name} is not live; "
                         "its member goes to a live host",
                         name=replaced[0].name)
                # Its host is not live: telling it waits for no answer.
                yield self._remove(replaced[0], hosts, wait_told=False)
                changed = True
            elif len(members) < target:
                if not candidates:
                    return changed
                address, uuid = candidates[0]
                if (yield self._add(uuid, address)):
                    changed = True
                else:
                    passed_over.add(uuid)
            elif len(members) > target:
                me = self.server.db.get("host", self.server.host_ref, "uuid")
                # Never the master's own; a learner not started yet (a
                # joiner's, placed a moment ago) stays too.
                removable = [m for m in members
                             if m.name and m.name != me and not m.is_learner]
                if not removable:
                    return changed
                yield self._remove(max(removable, key=lambda m: m.name),
                                   hosts)
                changed = True
            else:
                return changed

    def host_dead(self, host):
        """The master's liveness found ``host`` dead: a pass."""
        self.dead.add(host)
        return self.reconcile()

    def _dead(self, hosts):
        """Host uuids of hosts found dead and not live since (a joiner
        not heard from yet is not one)."""
        db = self.server.db
        self.dead = {ref for ref in self.dead
                     if db.exists("host", ref) and not is_live(db, ref)}
        return {uuid for uuid, (ref, _) in hosts.items() if ref in self.dead}

    def _candidates(self, members, hosts, passed_over):
        """(address, uuid) of live, enabled hosts without a member."""
        names = {m.name for m in members}
        peers = {u for m in members for u in m.peer_urls}
        db = self.server.db
        return sorted(
            (address, uuid) for uuid, (ref, address) in hosts.items()
            if uuid not in names and uuid not in passed_over
            and not any(address in u for u in peers)
            and is_live(db, ref) and db.get("host", ref, "enabled"))

    @defer.inlineCallbacks
    def _add(self, uuid, address):
        from txxapi.pool.database import member_urls
        client = self.client
        client_url, peer_url = member_urls(address)
        # A joiner's learner not promoted yet: one learner at a time.
        new, now = yield retry_unhealthy(
            client, HEALTH_TIMEOUT,
            lambda: client.member_add([peer_url], learner=True),
            NOT_YET + ("too many learner members",))
        config = {"cluster": member_cluster(now, new.id, uuid, peer_url),
                  "id": new.id}
        try:
            yield self.server.peers.call(address, JOIN_CALL,
                                         json.dumps(config),
                                         timeout=JOIN_ANSWER_TIMEOUT)
        except (PeerUnreachable, XenAPIError) as e:
            log.warn("pool: {uuid} did not start its etcd member ({e}); "
                     "removed again", uuid=uuid, e=e)
            yield retry_unhealthy(client, HEALTH_TIMEOUT,
                                  lambda: client.member_remove(new.id))
            return False
        self.pool_database.add_client_url(client_url)
        log.info("pool: {uuid} runs etcd member {n} now", uuid=uuid,
                 n=len(now))
        return True

    @defer.inlineCallbacks
    def _remove(self, member, hosts, wait_told=True):
        """``member`` out of the cluster, and its host told to stop it
        (waited for unless ``wait_told`` is false: a host not live would
        hold the next move for the call's whole timeout)."""
        client = self.client
        yield retry_unhealthy(client, HEALTH_TIMEOUT,
                              lambda: client.member_remove(member.id))
        host = hosts.get(member.name)
        log.info("pool: etcd member {name} removed", name=member.name)
        if host is None:
            return

        def untold(f):
            f.trap(PeerUnreachable, XenAPIError)
            # Its member stops by itself once it learns it was removed.
            log.warn("pool: {uuid} was not told to stop its etcd member "
                     "({e})", uuid=member.name, e=f.value)
        told = self.server.peers.call(host[1], LEAVE_CALL,
                                      timeout=LEAVE_ANSWER_TIMEOUT)
        told.addErrback(untold)
        if wait_told:
            yield told
        else:
            told.addErrback(lambda f: log.failure(
                "pool: telling {uuid} to stop its etcd member", f,
                uuid=member.name))

"""
Each host's part in HA, a server component that looks every TICK seconds
at the pool's ha_enabled (its replica of it on a slave):

- HA on: the host is in the liveset — it holds an etcd lease of TTL T
  (renewed every (T + 10) / 10 s, at most 3 s) with its key under
  LIVE_PREFIX, and its member key (once it joined) under MEMBER_PREFIX.
  The lease survives a restart of the process (ha.json): domains outlive
  the toolstack and stay this host's as long as the lease lives.
- A host that cannot renew its lease (cut off from etcd's quorum, etcd
  gone) fences itself: it stops every domain it runs through the
  backend, then the process restarts (and comes up without them).  Its
  LeaseKeeper counts the expiry from before etcd does, so this starts no
  later than the master can see the lease gone.
- A host that has not reached the statefile for T fences itself too,
  unless xhad's second survival rule lets it go on (no live host reaches
  it and none of the liveset is missing; txxapi.ha.statefile): it keeps
  its lease while it stops its domains, then revokes it, so that the
  master restarts its VMs as soon as they are stopped.
- A member of the liveset that lost its lease (fenced, or down past it)
  joins again only once the master has declared it dead, as a fenced
  host's reboot outlasts that: the master raises HA_HOST_FAILED for it
  and restarts its VMs, whatever the time its process took to restart.
  No host joins under a new lease while it cannot reach the statefile
  that another live host reaches (it would be fenced again; xhad does
  not start without it).
- On the master: failed hosts found and their VMs restarted
  (txxapi.ha.failover).
- On a slave: when the mastership key is gone (the master's lease
  expired), the slave campaigns for it with its own lease; the winner
  restarts as the master (its database replica is current: nothing to
  replay) and the others follow whoever holds the key.
- HA off: the lease is given up.
- host.emergency_ha_disable: this host alone leaves HA (XAPI's disarm of
  its fencing): it leaves the liveset as a leaver, so its VMs are not
  restarted elsewhere, and neither fences nor acts on failures any more —
  until the pool's HA is turned off; a soft disable lasts until then or
  the process's restart.  Where etcd cannot be reached (the emergency it
  is for) its lease expires instead, and, as with XAPI, the master
  declares it failed; its domains are then discarded at its next start.
"""

import threading

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.ha import local, statefile
from txxapi.ha.failover import Failover
from txxapi.pool import join as pool_join
from txxapi.pool import liveness
from txxapi.pool import role as pool_role
from txxapi.pool import transition
from txxapi.pool.database import MASTER_KEY
from txxapi.pool.etcd import EtcdError, LeaseKeeper

log = Logger()

TICK = 1.0


class HAMonitor:
    def __init__(self, server, tick=TICK):
        self.server, self.tick = server, tick
        self.failover = Failover(server)
        # This host's lease in the liveset, and T's timings, while in it.
        self.keeper = self.timeouts = self._loop = None
        # Whether this host reaches the statefiles, as last said on etcd
        # (None: not said under the lease it holds), and its checks.
        self.statefile_access = self.statefile_watch = None
        self._on_network_alone = False
        # When the survival rules last said fence, pending a check that
        # begins after (one that finds the statefile again cancels it:
        # a host slower to see it back than the others is not fenced).
        self._fence_verdict_at = None
        self.fenced = self._busy = self._stopping = self._warned = False
        self._waiting = self._unreached = False
        self._join_watch = None     # statefile checks before joining
        self.disabled = local.disabled_here(server.data_dir)

    @property
    def client(self):
        pool_database = getattr(self.server, "pool_database", None)
        if pool_database is None or not pool_database.pooled:
            return None
        return pool_database.client

    def start(self):
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.server.reactor
        self._loop.start(self.tick, now=False)

    def stop(self):
        """The lease is left to live (a restart keeps this host's place
        and its domains); only its renewal stops with the process."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.keeper is not None:
            self.keeper.stop()

    # -- the tick ------------------------------------------------------------

    def _tick(self):
        if self._busy or self.fenced or self._stopping or \
                self.client is None:
            return
        if self.disabled:
            self._until_ha_off()
            return
        self._busy = True
        d = self._step()
        d.addErrback(self._failed)
        d.addBoth(self._done)

    def _done(self, _):
        self._busy = False

    def _failed(self, failure):
        if failure.check(EtcdError):
            log.info("HA: etcd: {e}", e=failure.getErrorMessage())
        else:
            log.failure("HA monitor", failure)

    @defer.inlineCallbacks
    def _step(self):
        server = self.server
        pool = server.db.fields("pool", server.pool_ref)
        if pool["ha_enabled"]:
            self._approaching_timeout()
            if self.keeper is not None and \
                    self.timeouts.t != _timeout(pool):
                yield self._leave()     # disabled, enabled with a new T
            if self.keeper is None:
                yield self._join(pool)
                if self.keeper is None:
                    return
            else:
                yield self._stay_member()
            yield self._check_statefile()
            if server.identity.is_master:
                yield self.failover.check(self.client, self.timeouts)
            else:
                yield self._follow_master()
        elif self.keeper is not None:
            yield self._leave()

    def _approaching_timeout(self):
        """Logged, as XAPI logs HA_HEARTBEAT_APPROACHING_TIMEOUT (no
        alert), once each time renewals have failed for half of T."""
        keeper = self.keeper
        if keeper is None or keeper.expires_at is None:
            return
        near = keeper.expires_at - self.server.reactor.seconds() < \
            self.timeouts.ttl / 2.0
        if near and not self._warned:
            log.warn("HA_HEARTBEAT_APPROACHING_TIMEOUT: lease {id:x} "
                     "expires in {s:.1f} s", id=keeper.lease.id,
                     s=keeper.expires_at - self.server.reactor.seconds())
        self._warned = near

    # -- the liveset -----------------------------------------------------------

    def _uuid(self):
        return self.server.db.fields("host", self.server.host_ref)["uuid"]

    @defer.inlineCallbacks
    def _join(self, pool):
        server, client = self.server, self.client
        t = _timeout(pool)
        self.timeouts = timeouts = local.Timeouts(t)
        sent = server.reactor.seconds()
        lease = yield local.live_lease(client, server.data_dir)
        if lease is None:
            if not (yield self._may_join_anew(timeouts)):
                return
            lease = yield client.grant(timeouts.ttl)
        local.write(server.data_dir, lease)
        self.keeper = LeaseKeeper(client, lease, on_lost=self._fence,
                                  interval=timeouts.renew).start(sent)
        self.statefile_access = self._fence_verdict_at = None
        self.statefile_watch = statefile.Watch(server, timeouts.renew)
        uuid = self._uuid()
        address = server.db.fields("host", server.host_ref)["address"]
        yield client.put(local.live_key(uuid), address.encode(),
                         lease=lease.id)
        yield client.put(local.member_key(uuid), b"1")
        log.info("HA: in the liveset (lease {id:x}, T = {t} s)",
                 id=lease.id, t=t)

    @defer.inlineCallbacks
    def _may_join_anew(self, timeouts):
        """Whether this host may join under a new lease: not while it is
        a member the master (another host holding the mastership) has
        not declared dead yet, nor while it cannot reach the statefile
        another live host reaches."""
        server, client = self.server, self.client
        waiting = not server.identity.is_master and \
            (yield client.get(local.member_key(self._uuid()))) is not None \
            and liveness.is_live(server.db, server.host_ref)
        if waiting:
            holder = yield client.get(MASTER_KEY)
            waiting = holder is not None and \
                holder.value.decode() != self._uuid()
        if waiting and not self._waiting:
            log.info("HA: out of the liveset; joining again once the "
                     "master has declared this host dead")
        self._waiting = waiting
        if waiting:
            return False
        if self._join_watch is None:
            self._join_watch = statefile.Watch(server, timeouts.renew)
        access = self._join_watch.poll()
        if access is None:
            return False
        unreached = not access and bool(
            (yield local.uuids_under(client, local.STATEFILE_PREFIX)))
        if unreached and not self._unreached:
            log.warn("HA: not joining the liveset: the statefile is out "
                     "of reach here while other hosts reach it")
        self._unreached = unreached
        if not unreached:
            self._join_watch = None
        return not unreached

    @defer.inlineCallbacks
    def _stay_member(self):
        """HA disabled and enabled again before this host looked: the
        liveset was forgotten, and this host is put back in."""
        key = local.member_key(self._uuid())
        if (yield self.client.get(key)) is None:
            yield self.client.put(key, b"1")

    @defer.inlineCallbacks
    def _leave(self):
        keeper, self.keeper = self.keeper, None
        keeper.stop()
        client, uuid = self.client, self._uuid()
        self.statefile_access = self.statefile_watch = None
        yield client.delete(local.member_key(uuid))
        mastership = getattr(self.server.pool_database, "lease_keeper", None)
        if mastership is not None and mastership.lease.id == keeper.lease.id:
            # The mastership is held under it (taken over with HA on).
            yield client.delete(local.live_key(uuid))
            yield client.delete(local.statefile_key(uuid))
        else:
            yield client.revoke(keeper.lease.id)
        local.clear(self.server.data_dir)
        log.info("HA: left the liveset")

    # -- the statefile ---------------------------------------------------------

    @defer.inlineCallbacks
    def _check_statefile(self):
        """Whether this host reaches the statefiles, said on etcd (under
        its lease) when that changes; lost for the statefile timeout,
        the survival rules."""
        access = self.statefile_watch.poll()
        if access is None:
            return
        if access != self.statefile_access:
            key = local.statefile_key(self._uuid())
            if access:
                yield self.client.put(key, b"1", lease=self.keeper.lease.id)
                if self.statefile_access is not None:
                    log.info("HA: the statefile is reachable again")
            else:
                yield self.client.delete(key)
                log.warn("HA_STATEFILE_LOST: this host has lost access to "
                         "the HA statefile")
            self.statefile_access = access
        if access:
            self._on_network_alone = False
            self._fence_verdict_at = None
        elif self.statefile_watch.lost_for() >= self.timeouts.statefile:
            yield self._survive_without_statefile()

    @defer.inlineCallbacks
    def _survive_without_statefile(self):
        client, watch = self.client, self.statefile_watch
        read_at = self.server.reactor.seconds()
        live = yield local.uuids_under(client, local.LIVE_PREFIX)
        members = yield local.uuids_under(client, local.MEMBER_PREFIX)
        reaching = yield local.uuids_under(client, local.STATEFILE_PREFIX)
        if self.fenced or self.keeper is None:
            return
        me = self._uuid()
        if statefile.survives_without(me, live, members, reaching):
            if not self._on_network_alone:
                log.warn("HA: the statefile is lost to every host, and "
                         "every host is in the liveset: going on")
            self._on_network_alone = True
            self._fence_verdict_at = None
            return
        if self._fence_verdict_at is None:
            self._fence_verdict_at = read_at
        if not watch.failed_since(self._fence_verdict_at):
            watch.check_after(self._fence_verdict_at)
            return
        reason = ("the statefile lost here while other hosts reach it"
                  if set(reaching) - {me} else
                  "the statefile lost everywhere and hosts missing from "
                  "the liveset (%s)" % ", ".join(sorted(set(members) -
                                                        set(live))))
        self._fence(reason, keeper=self.keeper)

    # -- disabled on this host alone ---------------------------------------------

    @defer.inlineCallbacks
    def emergency_disable(self, soft):
        data_dir = self.server.data_dir
        if self.disabled or (self.keeper is None and
                             not local.armed(data_dir)):
            if soft:
                return
            raise XenAPIError("HA_NOT_ENABLED")
        log.warn("HA: disabled on this host only (emergency_ha_disable)")
        self.disabled = True
        if not soft:
            local.set_disabled_here(data_dir, True)
        if self.keeper is None:
            return
        try:
            yield self._leave()
        except EtcdError as e:
            log.warn("HA: could not leave the liveset ({e}); its lease "
                     "expires", e=e)

    def _until_ha_off(self):
        server = self.server
        if not server.db.fields("pool", server.pool_ref)["ha_enabled"]:
            local.set_disabled_here(server.data_dir, False)
            self.disabled = False
            log.info("HA: the pool's HA is off; this host may join it again")

    # -- fencing -----------------------------------------------------------------

    def _fence(self, reason, keeper=None):
        """The lease is lost (or, with ``keeper``, this host may not
        survive): nothing this host runs may go on running, as the
        survivors are about to restart it.  A lease still held is
        revoked once the domains are stopped, not before."""
        if self.fenced or self._stopping:
            return
        self.fenced = True
        log.error("HA: {reason}: fencing this host", reason=reason)
        self.server.xenops.mute()
        d = threads.deferToThread(fence_domains, self.server.xenops.backend)
        d.addErrback(lambda f: log.failure("HA: fencing", f))
        if keeper is not None:
            d.addCallback(lambda _: self._give_up(keeper))
        d.addBoth(lambda _: pool_join.restart(self.server.reactor, 0))

    @defer.inlineCallbacks
    def _give_up(self, keeper):
        """Out of the liveset at once: the master need not wait for the
        lease to expire.  Should etcd not answer, it simply expires.
        ha.json stays: the next start finds its lease gone, and discards
        any domain the fencing missed."""
        try:
            yield keeper.stop(revoke=True, timeout=self.timeouts.renew)
        except EtcdError as e:
            log.warn("HA: could not revoke lease {id:x} ({e}); it expires",
                     id=keeper.lease.id, e=e)

    # -- a slave: the master's failure ---------------------------------------------

    @defer.inlineCallbacks
    def _follow_master(self):
        server, client = self.server, self.client
        holder = yield client.get(MASTER_KEY)
        if holder is None:
            won, holder = yield client.campaign(
                MASTER_KEY, self._uuid().encode(), self.keeper.lease.id)
            if won:
                log.warn("HA: the master is gone; this host takes over")
                self._stopping = True
                self.keeper.stop()
                transition.take_over(server)
                return
        if holder is None:
            return
        uuid = holder.value.decode()
        if uuid == self._uuid():
            return
        hosts = server.db.table("host").by_uuid
        if uuid not in hosts:
            return
        address = server.db.fields("host", hosts[uuid])["address"]
        if server.identity.role.master_address != address:
            log.warn("HA: following the new master {a}", a=address)
            role = pool_role.Role(pool_role.SLAVE, address)
            pool_role.write(server.data_dir, role)
            server.identity.role = role


def _timeout(pool):
    try:
        return local.timeout_of(pool["ha_configuration"])
    except Exception:
        return local.DEFAULT_TIMEOUT


def fence_domains(backend):
    """Destroy every domain the backend runs (in threads: each waits for
    whatever operation holds its domain to give way)."""
    domains = [d.uuid for d in backend.list_domains()]
    workers = [threading.Thread(target=_destroy, args=(backend, uuid))
               for uuid in domains]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.warn("HA: fenced: {n} domains stopped", n=len(domains))


def _destroy(backend, uuid):
    try:
        backend.destroy(uuid)
    except Exception as e:
        log.error("HA: fencing {uuid}: {e}", uuid=uuid, e=e)

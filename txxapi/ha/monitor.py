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
        # (None: not said under the lease it holds), and when it looked.
        self.statefile_access = None
        self._statefile_checked = None
        self.fenced = self._busy = self._stopping = self._warned = False
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
            lease = yield client.grant(timeouts.ttl)
        local.write(server.data_dir, lease)
        self.keeper = LeaseKeeper(client, lease, on_lost=self._fence,
                                  interval=timeouts.renew).start(sent)
        self.statefile_access = None
        uuid = self._uuid()
        address = server.db.fields("host", server.host_ref)["address"]
        yield client.put(local.live_key(uuid), address.encode(),
                         lease=lease.id)
        yield client.put(local.member_key(uuid), b"1")
        log.info("HA: in the liveset (lease {id:x}, T = {t} s)",
                 id=lease.id, t=t)

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
        self.statefile_access = None
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
        """Every renewal interval: whether this host reaches the
        statefiles, said on etcd (under its lease) when that changes."""
        now = self.server.reactor.seconds()
        if self.statefile_access is not None and \
                now - self._statefile_checked < self.timeouts.renew:
            return
        self._statefile_checked = now
        access = yield statefile.reachable(self.server)
        if access == self.statefile_access:
            return
        key = local.statefile_key(self._uuid())
        if access:
            yield self.client.put(key, b"1", lease=self.keeper.lease.id)
            if self.statefile_access is not None:
                log.info("HA: the statefile is reachable again")
        else:
            yield self.client.delete(key)
            log.warn("HA_STATEFILE_LOST: this host has lost access to the "
                     "HA statefile")
        self.statefile_access = access

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

    def _fence(self, reason):
        """The lease is lost: nothing this host runs may go on running,
        as the survivors are about to restart it."""
        if self.fenced or self._stopping:
            return
        self.fenced = True
        log.error("HA: {reason}: fencing this host", reason=reason)
        d = threads.deferToThread(fence_domains, self.server.xenops.backend)
        d.addErrback(lambda f: log.failure("HA: fencing", f))
        d.addBoth(lambda _: pool_join.restart(self.server.reactor, 0))

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

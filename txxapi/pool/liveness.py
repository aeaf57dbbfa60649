"""
Which hosts of the pool are alive, as XAPI tells without HA: every slave
sends its master a heartbeat (``host.tickle_heartbeat``, hidden) every
``heartbeat_interval`` seconds; the master notes when it last heard from
each host (a heartbeat or a pool.hello) and, checking as often, marks
``host_metrics.live`` false for a host not heard from for
``dead_interval`` seconds (XAPI's host_assumed_dead_interval), and true
again when it is heard from.  A heartbeat is one small call and a check
one pass over the hosts, so the cost is linear in hosts; the database is
written only when a host's liveness changes.

A host the master has not heard from since it started (the master
restarted) keeps what the database says until the interval has passed.
With HA on, the liveset on etcd decides instead (txxapi.ha.failover):
a host heard from is not made live by that, nor one silent dead, and the
hosts HA declares dead are the ones whose etcd member may move
(``on_dead``, called by HA then).
"""

import time

from twisted.internet import task
from twisted.logger import Logger

from txxapi.pool.client import PeerUnreachable
from txxapi.errors import XenAPIError

log = Logger()

HEARTBEAT_CALL = "host.tickle_heartbeat"
HEARTBEAT_INTERVAL = 30.0
ASSUMED_DEAD_INTERVAL = 600.0


def is_live(db, host):
    metrics = db.fields("host", host)["metrics"]
    return db.exists("host_metrics", metrics) and \
        db.fields("host_metrics", metrics)["live"]


def set_live(db, host, live):
    metrics = db.fields("host", host)["metrics"]
    if db.exists("host_metrics", metrics):
        db.update("host_metrics", metrics, {"live": live})


class Liveness:
    """The master's account of its hosts, or a slave's heartbeat: which
    one is decided at start, by the host's role."""

    def __init__(self, reactor, identity, db, peers,
                 heartbeat_interval=HEARTBEAT_INTERVAL,
                 dead_interval=ASSUMED_DEAD_INTERVAL):
        self.heartbeat_interval = heartbeat_interval
        self.dead_interval = dead_interval
        self.reactor, self.identity, self.db = reactor, identity, db
        # Pool sessions with the master, for the heartbeat.
        self.peers = peers
        self._heard = {}        # host ref -> monotonic time
        # Called with a host found dead (its etcd member may move).
        self.on_dead = None
        self._loop = None
        self._beating = False

    def start(self):
        step = self.check if self.identity.is_master else self.beat
        self._loop = task.LoopingCall(step)
        self._loop.clock = self.reactor
        self._loop.start(self.heartbeat_interval, now=False)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    # -- on the master ------------------------------------------------------------

    def heard(self, host):
        """A host said something (a heartbeat, a pool.hello): alive."""
        self._heard[host] = time.monotonic()
        if not is_live(self.db, host) and not self._ha_enabled():
            set_live(self.db, host, True)

    def _ha_enabled(self):
        return self.db.get("pool", self.identity.pool_ref, "ha_enabled")

    def check(self, now=None):
        now = time.monotonic() if now is None else now
        db, me = self.db, self.identity.host_ref
        if self._ha_enabled():
            return      # the liveset on etcd says (txxapi.ha)
        for host in db.refs("host"):
            if host == me or not is_live(db, host):
                continue
            heard = self._heard.setdefault(host, now)
            if now - heard > self.dead_interval:
                log.warn("pool: host {host} not heard from for {s:.0f} s: "
                         "not live", host=host, s=now - heard)
                set_live(db, host, False)
                if self.on_dead is not None:
                    self.on_dead(host)

    # -- on a slave ---------------------------------------------------------------

    def beat(self):
        if self._beating or self.identity.host_ref is None:
            return
        self._beating = True
        d = self.peers.call(self.identity.role.master_address,
                            HEARTBEAT_CALL, self.identity.host_ref)

        def failed(f):
            f.trap(PeerUnreachable, XenAPIError)
            log.info("pool: heartbeat to the master failed ({e})",
                     e=f.getErrorMessage())

        def done(_):
            self._beating = False
        d.addErrback(failed).addBoth(done)

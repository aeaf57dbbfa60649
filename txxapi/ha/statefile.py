"""
The storage side of HA's heartbeat: whether this host reaches the pool's
statefiles (pool.ha_statefiles) — each VDI still there, its SR plugged
here (a PBD of this host attached, plugged again if it is not, as XAPI
attaches the statefile until it can) and found by the SR's driver (an SR
whose storage went away is not) — and what XAPI makes of it:

- each host in the liveset says whether it does (a key under its lease,
  STATEFILE_PREFIX) and logs HA_STATEFILE_LOST when it stops (a log
  line, no alert: XAPI's per-host warning);
- a host that has not reached them for the statefile timeout T applies
  xhad's survival rules (survives_without): it fences itself unless the
  statefiles are lost to every live host and every host of the liveset
  is still in it;
- the master sets each live host's ha_statefiles to the pool's
  statefiles or to none by what that host says, and alerts
  HA_STATEFILE_LOST once, when every live host has lost them: the pool
  then goes on on the network heartbeat alone (xhad's second survival
  rule), which the user should know to mend their storage.
"""

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

ALL_LOST = ("HA_STATEFILE_LOST", 2)
ALL_LOST_BODY = "All live servers have lost access to the HA statefile"


@defer.inlineCallbacks
def reachable(server):
    """Whether every statefile of the pool is there from this host."""
    db, storage = server.db, server.storage
    for vdi in db.fields("pool", server.pool_ref)["ha_statefiles"]:
        if not db.exists("VDI", vdi):
            return False
        f = db.fields("VDI", vdi)
        if not db.exists("SR", f["SR"]):
            return False
        pbds = [p for p in db.where("PBD", SR=f["SR"])
                if db.fields("PBD", p)["host"] == server.host_ref]
        if not pbds:
            return False
        try:
            if not db.fields("PBD", pbds[0])["currently_attached"]:
                yield storage.attach_sr(pbds[0])
            driver, sr_uuid = storage.driver_of(f["SR"])
            yield storage.run(driver.vdi_update, sr_uuid, f["uuid"])
        except Exception:
            return False
    return True


def survives_without(me, live, members, reaching):
    """xhad's survival rules for host ``me``, which has lost the
    statefiles, from the liveset (live), the hosts that joined it and
    did not leave (members: the non-excluded ones) and those that reach
    the statefiles: another live host reaching them survives by the
    first rule, and restarts this one's VMs; with none, this one
    survives only while every member is still in the liveset (the
    second rule)."""
    if set(reaching) - {me}:
        return False
    return set(members) <= set(live)


class Watch:
    """The statefile checks of one stay in the liveset: one at a time,
    at most every ``interval`` seconds, in the background (the storage
    may hang; the monitor's pass does not wait for it).  A check with no
    answer for two intervals says no: a loaded host's slow check is not
    a loss, one that hangs is."""

    def __init__(self, server, interval):
        self.server, self.interval = server, interval
        self.hung_after = 2 * interval
        # When a check that found them began (the stay's start before).
        self.reached_at = self._now()
        self.result = None          # the last check's answer
        self._result_started = None     # and when that check began
        self._started = self._running_since = None

    def _now(self):
        return self.server.reactor.seconds()

    def poll(self):
        """Starts a check when one is due.  Whether this host reaches
        the statefiles, by the last check (None before the first), or
        no if the check under way hangs."""
        now = self._now()
        if self._running_since is None and (
                self._started is None or now - self._started >= self.interval):
            self._start(now)
        if self._running_since is not None and \
                now - self._running_since > self.hung_after:
            return False
        return self.result

    def check_after(self, at):
        """Starts a check unless one began at ``at`` or since."""
        if self._running_since is None and (
                self._started is None or self._started < at):
            self._start(self._now())

    def failed_since(self, at):
        """Whether a check begun at ``at`` or since found no statefile,
        or the one under way hangs."""
        now = self._now()
        if self._running_since is not None:
            return now - max(self._running_since, at) > self.hung_after
        return self.result is False and self._result_started >= at

    def lost_for(self):
        """Seconds since a check last found the statefiles."""
        return self._now() - self.reached_at

    def _start(self, now):
        self._started = self._running_since = now
        d = reachable(self.server)
        d.addErrback(self._error)
        d.addCallback(self._checked, now)

    def _error(self, failure):
        log.failure("HA: checking the statefile", failure)
        return False

    def _checked(self, access, started):
        self._running_since = None
        self.result, self._result_started = access, started
        if access:
            self.reached_at = started


class AllLostAlert:
    """The master's edge-triggered alert: raised when every live host
    has lost the statefiles, again only after one has reached them."""

    def __init__(self, server):
        self.server = server
        self.raised = False

    def update(self, live, reaching):
        lost = bool(live) and not (set(live) & set(reaching)) and \
            bool(self.server.db.fields("pool", self.server.pool_ref)[
                "ha_statefiles"])
        if lost and not self.raised:
            db = self.server.db
            name, priority = ALL_LOST
            self.server.messages.create(
                name, priority, "Host",
                db.fields("host", self.server.host_ref)["uuid"],
                ALL_LOST_BODY)
        self.raised = lost

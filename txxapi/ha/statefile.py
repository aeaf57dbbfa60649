"""
The storage side of HA's heartbeat: whether this host reaches the pool's
statefiles (pool.ha_statefiles) — each VDI still there, its SR plugged
here (a PBD of this host attached) and found by the SR's driver (an SR
whose storage went away is not) — and what XAPI makes of it:

- each host in the liveset says whether it does (a key under its lease,
  STATEFILE_PREFIX) and logs HA_STATEFILE_LOST when it stops (a log
  line, no alert: XAPI's per-host warning);
- the master sets each live host's ha_statefiles to the pool's
  statefiles or to none by what that host says, and alerts
  HA_STATEFILE_LOST once, when every live host has lost them: the pool
  then goes on on the network heartbeat alone (xhad's second survival
  rule), which the user should know to mend their storage.
"""

from twisted.internet import defer

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
        if not db.exists("SR", f["SR"]) or not any(
                pbd["host"] == server.host_ref and pbd["currently_attached"]
                for pbd in (db.fields("PBD", p)
                            for p in db.where("PBD", SR=f["SR"]))):
            return False
        try:
            driver, sr_uuid = storage.driver_of(f["SR"])
            yield storage.run(driver.vdi_update, sr_uuid, f["uuid"])
        except Exception:
            return False
    return True


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

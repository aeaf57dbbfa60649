"""
Moving the mastership, as XAPI's pool transitions do.

- ``designate`` (pool.designate_new_master, run on the host that is to
  be master): a two-phase commit over emergency channels (a local login
  with the pool secret on each host).  Phase 1 proposes this host's
  address to every peer, the old master among them, then to itself; a
  host that agreed to another proposal in the last ten minutes refuses
  (HA_ABORT_NEW_MASTER) and every host that had agreed is told to abort.
  Phase 2 marks this host ``broken``, tells every peer to commit (each
  rewrites its pool.conf and restarts), then writes ``master`` — or stays
  broken if a peer failed — and restarts.
- ``become_master`` / ``become_slave_of``: pool.conf rewritten, then the
  process restarts in its new role (the role is read once at start).

Unlike XAPI, nothing has to be copied first: every acknowledged write is
already on the pool's etcd log, and a host starting as master takes the
mastership key only once the old master has let go of it (its lease is
revoked when it stops, or expires after a crash), so two masters never
write at once.
"""

import os
import time

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.pool import join as pool_join
from txxapi.pool import role as pool_role
from txxapi.pool.client import PeerUnreachable, local_call

log = Logger()

# A proposal another host's may not overturn for this long (XAPI's).
PROPOSAL_LIFETIME = 600.0
# Left in the data dir by a host that becomes master, so that once it
# runs as master it raises POOL_MASTER_TRANSITION (XAPI's local.db flag).
JUST_BECAME_MASTER = "just-became-master"
TRANSITION_MESSAGE = ("POOL_MASTER_TRANSITION", 4)
OLD_MASTER_DELAY = 2.0
# In a designation the other hosts restart once the old master has
# stopped: it lets go of the mastership (revokes its lease) while the
# pool's etcd still has its quorum, so nobody waits for the lease to
# expire (with two of three members down it could not revoke it).
AFTER_OLD_MASTER_DELAY = OLD_MASTER_DELAY + 1.5


class Proposals:
    """The one proposal of a new master this host has agreed to."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.address = None
        self.at = 0.0

    def propose(self, address):
        if self.address is not None and self.address != address and \
                self.clock() - self.at <= PROPOSAL_LIFETIME:
            raise XenAPIError(
                "HA_ABORT_NEW_MASTER",
                "Already agreed to commit host address '%s' (%.0f s ago)"
                % (self.address, self.clock() - self.at))
        self.address = address
        self.at = self.clock()

    def check_commit(self, address):
        if self.address is None:
            raise XenAPIError(
                "HA_ABORT_NEW_MASTER",
                "Received commit_new_master(%s) without a proposal" % address)
        if self.address != address:
            raise XenAPIError(
                "HA_ABORT_NEW_MASTER",
                "Received commit_new_master(%s) after agreeing to %s"
                % (address, self.address))

    def abort(self):
        if self.address is None:
            log.warn("abort_new_master without a proposal")
        self.address = None


def _set_role(server, new_role):
    data_dir = server.identity.data_dir
    flag = os.path.join(data_dir, JUST_BECAME_MASTER)
    if new_role.is_master and not server.identity.is_master:
        open(flag, "w").close()
    pool_role.write(data_dir, new_role)
    # Until the restart this host must not go on trusting what the old
    # master vouched for.
    server.identity.new_master()


def _leave_master(server):
    """This host is to follow another master, or none: nothing more is
    backed up to the one it followed (as XAPI's hosts, whose xcp-rrdd
    keeps its RRDs through xapi's restart and sends nothing then); one
    that is gone would hold the stop for a timeout."""
    server.metrics.handover.master_failed = True


def become_master(server):
    log.info("becoming the pool's master; restarting")
    _leave_master(server)
    _set_role(server, pool_role.Role(pool_role.MASTER))
    pool_join.restart(server.reactor)


def take_over(server):
    """Become the master at once (HA: the master failed and this host
    holds the mastership now): in place where the service can, else by
    a process restart."""
    _leave_master(server)
    restart = getattr(server, "restart_in_place", None)
    if restart is None:
        become_master(server)
        return
    log.info("becoming the pool's master; restarting in place")
    _set_role(server, pool_role.Role(pool_role.MASTER))
    server.reactor.callLater(0, restart)


def become_slave_of(server, address, delay=pool_join.RESTART_DELAY):
    role = server.identity.role
    if role.kind == pool_role.SLAVE and role.master_address == address:
        log.info("already a slave of {address}", address=address)
        return
    log.info("becoming a slave of {address}; restarting", address=address)
    was_master = server.identity.is_master
    _leave_master(server)
    _set_role(server, pool_role.Role(pool_role.SLAVE, address))
    # An old master still relays the designating call's answer to its
    # client: it stays up a little longer.
    pool_join.restart(server.reactor,
                      OLD_MASTER_DELAY if was_master else delay)


def my_address(server):
    return server.db.get("host", server.host_ref, "address")


def emergency_call(server, address, method, *args):
    """``method`` on the host at ``address`` through a local login with
    the pool secret (what works on a host whatever its state)."""
    return local_call(server.reactor, address, server.pool_secret, method,
                      *args)


@defer.inlineCallbacks
def designate(server, proposals, manual=True):
    """The two-phase commit that makes this host the master."""
    me = my_address(server)
    peers = sorted({fields["address"] for _, fields in
                    server.db.records("host")} - {me},
                   key=lambda a: a != server.identity.role.master_address)
    agreed = []
    try:
        for address in peers:
            yield emergency_call(server, address, "host.propose_new_master",
                                 me, manual)
            agreed.append(address)
        proposals.propose(me)
    except Exception as e:
        log.warn("new master {me}: phase 1 refused ({e}); aborting",
                 me=me, e=e)
        for address in agreed:
            try:
                yield emergency_call(server, address,
                                     "host.abort_new_master", me)
            except Exception as abort_error:
                log.warn("abort_new_master on {a}: {e}", a=address,
                         e=abort_error)
        if isinstance(e, PeerUnreachable):
            raise XenAPIError("CANNOT_CONTACT_HOST", str(e))
        raise
    _set_role(server, pool_role.Role(pool_role.BROKEN))
    failed = []
    for address in peers:
        try:
            yield emergency_call(server, address, "host.commit_new_master",
                                 me)
        except Exception as e:
            log.error("commit_new_master on {a} failed: {e}", a=address, e=e)
            failed.append(address)
    if failed:
        log.error("hosts {failed} did not commit; restarting broken",
                  failed=failed)
    else:
        _set_role(server, pool_role.Role(pool_role.MASTER))
    pool_join.restart(server.reactor, AFTER_OLD_MASTER_DELAY)


class MasterTransition:
    """A server component: on a host that runs as master, the pool's
    ``master`` field names it (a host that took over writes it once it
    holds the mastership), and the first start after a transition raises
    POOL_MASTER_TRANSITION."""

    def __init__(self, db, identity, messages):
        self.db = db
        self.identity = identity
        self.messages = messages

    def start(self):
        identity = self.identity
        if not identity.is_master:
            return None
        pool = identity.pool_ref
        if self.db.get("pool", pool, "master") != identity.host_ref:
            self.db.update("pool", pool, {"master": identity.host_ref})
        flag = os.path.join(identity.data_dir, JUST_BECAME_MASTER)
        if not os.path.exists(flag):
            return None
        os.unlink(flag)
        name, priority = TRANSITION_MESSAGE
        uuid = self.db.get("host", identity.host_ref, "uuid")
        return self.messages.create(name, priority, "Host", uuid, "")

    def stop(self):
        pass

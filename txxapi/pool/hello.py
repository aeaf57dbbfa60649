"""
A slave's greeting to its master at start (XAPI's pool.hello): it logs in
with the pool secret and says which host it is and at which address; the
master calls it back and marks it live.

Until the master has answered ``ok`` the slave is in emergency mode
(HostIdentity.emergency_error): it serves only the emergency calls and
local logins, and every other call gets the error that tells why, as
XAPI's does — HOST_STILL_BOOTING while it starts or cannot reach the
master, HOST_MASTER_CANNOT_TALK_BACK [its address], HOST_UNKNOWN_TO_MASTER
[its uuid] (also for a pool secret the master refuses: not its master),
or the master's own error (HOST_IS_SLAVE [address] from a host that is no
master any more).  It tries again every RETRY seconds, PERMANENT_RETRY
after an answer that will not change by itself, and leaves emergency mode
once the master says ``ok``.  The first retries come sooner (FIRST_RETRY, doubled
up to RETRY): a master restarting with its pool (a change of master)
is usually back within a second or two.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.pool.client import PeerClient, PeerUnreachable

log = Logger()

RETRY = 5.0
FIRST_RETRY = 0.25
PERMANENT_RETRY = 60.0
STILL_BOOTING = ("HOST_STILL_BOOTING",)


class Greeting:
    def __init__(self, reactor, identity, db):
        self.reactor = reactor
        self.identity = identity
        self.db = db
        self._later = None
        self.answer = None
        self._retry = FIRST_RETRY
        # Called once the master has said ok (the etcd members' list read
        # again: members added while this host restarted).
        self.on_greeted = None

    def start(self):
        """In emergency mode from the start, until the master answers."""
        if not self.identity.is_master:
            self.identity.emergency_error = STILL_BOOTING

    def begin(self):
        """Once this host serves (the master calls it back): the first
        pool.hello."""
        if not self.identity.is_master and self._later is None:
            self._attempt()

    def stop(self):
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    @defer.inlineCallbacks
    def _attempt(self):
        self._later = None
        identity = self.identity
        if identity.emergency_error is None:
            return
        master = identity.role.master_address
        host = self.db.fields("host", identity.host_ref)
        try:
            self.answer = yield self._hello(master, host)
            log.info("pool.hello to {master}: {answer}", master=master,
                     answer=self.answer)
            error, retry = {
                "ok": (None, None),
                "cannot_talk_back": (("HOST_MASTER_CANNOT_TALK_BACK",
                                      host["address"]), RETRY),
                "unknown_host": (("HOST_UNKNOWN_TO_MASTER", host["uuid"]),
                                 PERMANENT_RETRY),
            }.get(self.answer, (STILL_BOOTING, RETRY))
        except XenAPIError as e:
            if e.code == "SESSION_AUTHENTICATION_FAILED":
                error, retry = (("HOST_UNKNOWN_TO_MASTER", host["uuid"]),
                                PERMANENT_RETRY)
            else:
                error, retry = tuple(e.description), RETRY
            log.warn("pool.hello to {master} refused ({error})",
                     master=master, error=e)
        except PeerUnreachable as e:
            error, retry = STILL_BOOTING, RETRY
            log.warn("pool.hello to {master} failed ({error}); retrying",
                     master=master, error=e)
        was = identity.emergency_error
        identity.emergency_error = error
        if error is None and was is not None:
            log.info("pool: the master answered; out of emergency mode")
            if self.on_greeted is not None:
                self.on_greeted()
        elif error is not None:
            if retry == RETRY:
                retry, self._retry = self._retry, min(self._retry * 2, RETRY)
            log.info("pool: in emergency mode ({error}); again in {s:.2f} s",
                     error=error, s=retry)
            self._later = self.reactor.callLater(retry, self._attempt)

    @defer.inlineCallbacks
    def _hello(self, master, host):
        identity = self.identity
        client = PeerClient(self.reactor, master)
        session = yield client.call("session.slave_login", identity.host_ref,
                                    identity.pool_secret)
        try:
            answer = yield client.call("pool.hello", session, host["uuid"],
                                       host["address"])
        finally:
            client.call("session.logout", session).addErrback(
                lambda _: None)
        return answer

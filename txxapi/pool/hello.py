"""
A slave's greeting to its master at start (XAPI's pool.hello): it logs in
with the pool secret and says which host it is and at which address; the
master calls it back and marks it live.  A master that cannot be reached
is tried again every RETRY seconds until it answers, and so is one that
could not call back (``cannot_talk_back``); ``unknown_host`` is final.
(XAPI's emergency mode, where a slave refuses ordinary calls meanwhile,
is the next slice's.)
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.pool.client import PeerClient

log = Logger()

RETRY = 5.0


class Greeting:
    def __init__(self, reactor, identity, db):
        self.reactor = reactor
        self.identity = identity
        self.db = db
        self._later = None
        self.answer = None

    def start(self):
        if not self.identity.is_master:
            self._attempt()

    def stop(self):
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None

    @defer.inlineCallbacks
    def _attempt(self):
        self._later = None
        identity = self.identity
        client = PeerClient(self.reactor, identity.role.master_address)
        host = self.db.fields("host", identity.host_ref)
        try:
            session = yield client.call("session.slave_login",
                                        identity.host_ref,
                                        identity.pool_secret)
            self.answer = yield client.call("pool.hello", session,
                                            host["uuid"], host["address"])
            yield client.call("session.logout", session)
            log.info("pool.hello to {master}: {answer}",
                     master=identity.role.master_address, answer=self.answer)
            if self.answer == "cannot_talk_back":
                # Temporary (the master could not reach us yet): again.
                self._later = self.reactor.callLater(RETRY, self._attempt)
        except Exception as e:
            log.warn("pool.hello to {master} failed ({error}); retrying",
                     master=identity.role.master_address, error=e)
            self._later = self.reactor.callLater(RETRY, self._attempt)

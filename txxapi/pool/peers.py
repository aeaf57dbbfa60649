"""
Calls to the other hosts of the pool under a pool session: one session
per peer, made with session.slave_login and the pool secret on first use
and kept; a peer that no longer knows it (it restarted: SESSION_INVALID)
gets a fresh login and the call once more.  A peer whose address changed
gets a new client.

A call waits ``answer_timeout`` seconds for its answer unless it says
otherwise (a longer bound for a step that is long by nature, none for a
forwarded operation, which takes as long as it takes); ``ping`` is the
short call that tells whether a host still answers at all.
"""

from twisted.internet import defer

from txxapi.errors import XenAPIError
from txxapi.pool.client import ANSWER_TIMEOUT, PeerClient

PING_CALL = "pool.get_all"
# A call's timeout when it names none: the peers' answer_timeout.
BOUNDED = "bounded"


class PeerSessions:
    def __init__(self, reactor, identity, answer_timeout=ANSWER_TIMEOUT):
        self.reactor = reactor
        self.identity = identity
        self.answer_timeout = answer_timeout
        self._peers = {}        # address -> [PeerClient, session or None]

    @defer.inlineCallbacks
    def call(self, address, method, *params, headers=None, timeout=BOUNDED):
        """``method(session, *params)`` on the host at ``address``.
        PeerUnreachable when it cannot be reached or does not answer
        within ``timeout`` seconds (None: no bound; the login always has
        answer_timeout's); its XenAPI errors as they are."""
        if timeout == BOUNDED:
            timeout = self.answer_timeout
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = [
                PeerClient(self.reactor, address), None]
        for _ in range(2):
            fresh = peer[1] is None
            if fresh:
                peer[1] = yield peer[0].call(
                    "session.slave_login", self.identity.host_ref,
                    self.identity.pool_secret, timeout=self.answer_timeout)
            try:
                result = yield peer[0].call(method, peer[1], *params,
                                            headers=headers, timeout=timeout)
                return result
            except XenAPIError as e:
                if e.code != "SESSION_INVALID" or fresh:
                    raise
                peer[1] = None

    def ping(self, address):
        """A call any host that runs answers at once, from its own
        database: PeerUnreachable when it does not within the bound."""
        return self.call(address, PING_CALL)

    def forget(self, address):
        self._peers.pop(address, None)

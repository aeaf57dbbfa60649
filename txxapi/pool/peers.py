"""
Calls to the other hosts of the pool under a pool session: one session
per peer, made with session.slave_login and the pool secret on first use
and kept; a peer that no longer knows it (it restarted: SESSION_INVALID)
gets a fresh login and the call once more.  A peer whose address changed
gets a new client.
"""

from twisted.internet import defer

from txxapi.errors import XenAPIError
from txxapi.pool.client import PeerClient


class PeerSessions:
    def __init__(self, reactor, identity):
        self.reactor = reactor
        self.identity = identity
        self._peers = {}        # address -> [PeerClient, session or None]

    @defer.inlineCallbacks
    def call(self, address, method, *params, headers=None):
        """``method(session, *params)`` on the host at ``address``.
        PeerUnreachable when it cannot be reached; its XenAPI errors as
        they are."""
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = [
                PeerClient(self.reactor, address), None]
        for _ in range(2):
            fresh = peer[1] is None
            if fresh:
                peer[1] = yield peer[0].call(
                    "session.slave_login", self.identity.host_ref,
                    self.identity.pool_secret)
            try:
                result = yield peer[0].call(method, peer[1], *params,
                                            headers=headers)
                return result
            except XenAPIError as e:
                if e.code != "SESSION_INVALID" or fresh:
                    raise
                peer[1] = None

    def forget(self, address):
        self._peers.pop(address, None)

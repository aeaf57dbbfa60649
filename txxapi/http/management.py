"""
The listeners on the management address (HTTP and HTTPS), which follow
it: when this host's host.address changes (host.management_reconfigure,
PIF.reconfigure_ip), they are bound again on the new address, as XAPI
starts its management server on the new IP and stops the old one.  The
new listeners listen before the old ones close (connections already
open stay until they end); a new address that cannot be bound keeps the
old listeners, and says so in the log.  A host that listens on every
address (no bind address given) has nothing to move, and the local Unix
socket is not one of these.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

EVERY_ADDRESS = ("", "0.0.0.0", "::")


class ManagementListeners(service.MultiService):
    """``makers``: functions of an address to a listening service (one
    that raises at start if it cannot listen)."""

    def __init__(self, reactor, db, host_ref, address, makers):
        service.MultiService.__init__(self)
        self.reactor, self.db, self.host_ref = reactor, db, host_ref
        self.address = address
        self.makers = makers
        self._moves = defer.DeferredLock()
        self._listeners = self._made(address)

    def _made(self, address):
        return [make(address) for make in self.makers]

    def startService(self):
        # Each child raises at once if its port cannot be had, which
        # fails the host's start.
        service.MultiService.startService(self)
        for child in self._listeners:
            child.setServiceParent(self)
        self.db.listeners.append(self._changed)

    def stopService(self):
        if self._changed in self.db.listeners:
            self.db.listeners.remove(self._changed)
        return service.MultiService.stopService(self)

    def _changed(self, record, _cls):
        _, op, table, ref, fields = record
        if table == "host" and ref == self.host_ref and op == "mod" and \
                "address" in fields:
            # Not from inside the write that announced it.
            self.reactor.callLater(0, self._moves.run, self.rebind,
                                   fields["address"])

    @defer.inlineCallbacks
    def rebind(self, address):
        """Listen on ``address`` instead; whether the listeners moved."""
        if self.address in EVERY_ADDRESS or not address or \
                address == self.address or not self.running:
            return False
        moved = []
        try:
            for child in self._made(address):
                child.setServiceParent(self)
                moved.append(child)
        except Exception as e:
            log.error("management interface: cannot listen on {address} "
                      "({error}); still on {old}", address=address, error=e,
                      old=self.address)
            for child in moved:
                yield defer.maybeDeferred(child.disownServiceParent)
            return False
        old, self._listeners = self._listeners, moved
        for child in old:
            yield defer.maybeDeferred(child.disownServiceParent)
        log.info("management interface: listening on {address} (was {old})",
                 address=address, old=self.address)
        self.address = address
        return True

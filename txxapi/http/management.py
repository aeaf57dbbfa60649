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

What else follows the address (the host certificate, the NBD listener)
are ``followers``, called with the new address once the new listeners
listen and before the old ones close, in order; they are called too when
the listeners listen everywhere.

At start, the address recorded in the database wins over the one given
on the command line (see starting_address); one that cannot be bound any
more falls back to the command line's.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

EVERY_ADDRESS = ("", "0.0.0.0", "::")


def starting_address(bind, recorded):
    """Where a start listens: the host's management address as the
    database records it (host.address, which host.management_reconfigure
    and PIF.reconfigure_ip move), when the command line names an address
    at all; ``bind`` on a first start, when nothing is recorded, or when
    it asks for every address."""
    if bind in EVERY_ADDRESS or not recorded:
        return bind
    return recorded


class ManagementListeners(service.MultiService):
    """``makers``: functions of an address to a listening service (one
    that raises at start if it cannot listen).  ``fallback``: where to
    listen at start if ``address`` cannot be had."""

    def __init__(self, reactor, db, host_ref, address, makers,
                 fallback=None):
        service.MultiService.__init__(self)
        self.reactor, self.db, self.host_ref = reactor, db, host_ref
        self.address, self.fallback = address, fallback
        self.makers = makers
        self.followers = []
        self._moves = defer.DeferredLock()
        self._listeners = []

    def _listen(self, address):
        """The listeners on ``address``, listening; raises (the ones made
        closed again) if one cannot listen."""
        made = []
        try:
            for make in self.makers:
                made.append(make(address))
                made[-1].setServiceParent(self)
        except Exception:
            # The one that failed too: it joined before it raised.
            for child in made:
                if child.parent is self:
                    child.disownServiceParent()
            raise
        return made

    def startService(self):
        # A port that cannot be had (on the fallback too) fails the
        # host's start.
        service.MultiService.startService(self)
        try:
            self._listeners = self._listen(self.address)
        except Exception as e:
            if self.fallback is None or self.fallback == self.address:
                raise
            log.warn("management interface: cannot listen on the recorded "
                     "address {address} ({error}); listening on {bind}",
                     address=self.address, error=e, bind=self.fallback)
            self.address = self.fallback
            self._listeners = self._listen(self.address)
        else:
            if self.fallback is not None and self.fallback != self.address:
                log.info("management interface: listening on {address}, "
                         "the address the database records (not {bind})",
                         address=self.address, bind=self.fallback)
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
        if not address or address == self.address or not self.running:
            return False
        if self.address in EVERY_ADDRESS:
            yield self._follow(address)
            return False
        try:
            moved = self._listen(address)
        except Exception as e:
            log.error("management interface: cannot listen on {address} "
                      "({error}); still on {old}", address=address, error=e,
                      old=self.address)
            return False
        # No turn of the reactor between the listening and the first
        # follower (the certificate): the new address serves the new
        # certificate from its first connection.
        yield self._follow(address)
        old, self._listeners = self._listeners, moved
        for child in old:
            yield defer.maybeDeferred(child.disownServiceParent)
        log.info("management interface: listening on {address} (was {old})",
                 address=address, old=self.address)
        self.address = address
        return True

    @defer.inlineCallbacks
    def _follow(self, address):
        for follower in self.followers:
            try:
                yield follower(address)
            except Exception:
                log.failure("management interface: following {address}",
                            address=address)

"""
How long a slave trusts the master's word on a client's session.

A request the master sent to another host names a session that lives on
the master, which that host asks about (remote.local_session).  A
session the master vouched for is taken again for CACHE_TTL seconds
without asking (a console or an RRD poller comes back every few
seconds), unless the master says first that it has gone: every host
that asked about a session is told when it is logged out, destroyed or
expires there (``pool.http_session_gone``), so a logged-out session
stops working at once, and within CACHE_TTL if that word is lost.
Requests that need a task from the master ask it anyway.  What a master
vouched for goes as soon as the host learns the pool has another one
(HostIdentity.new_master), answers still on their way from the old one
with it: the new master is asked again.
"""

from twisted.logger import Logger

log = Logger()

CACHE_TTL = 30.0
GONE_CALL = "pool.http_session_gone"
# Past this many entries the expired ones are dropped.
PRUNE_AT = 1024


class VouchedSessions:
    """On a slave: master session -> the fields the master gave, for a
    while."""

    def __init__(self, reactor, identity, ttl=CACHE_TTL):
        self.reactor = reactor
        self.ttl = ttl
        self._known = {}
        # Counts the masters this host has followed: an answer asked of
        # an earlier one is not kept.
        self.epoch = 0
        identity.master_listeners.append(self.forget_all)

    def get(self, session):
        entry = self._known.get(session)
        if entry is None:
            return None
        fields, until = entry
        if self.reactor.seconds() >= until:
            del self._known[session]
            return None
        return fields

    def vouched(self, session, fields, epoch):
        """The master asked at ``epoch`` vouched for ``session``."""
        if epoch != self.epoch:
            return
        now = self.reactor.seconds()
        if len(self._known) >= PRUNE_AT:
            self._known = {s: e for s, e in self._known.items()
                           if e[1] > now}
        self._known[session] = (fields, now + self.ttl)

    def forget(self, session):
        self._known.pop(session, None)

    def forget_all(self):
        self._known = {}
        self.epoch += 1


class SessionAskers:
    """On the master: which hosts asked about which client session, each
    told once it is deleted here."""

    def __init__(self, server):
        self.server = server
        self._askers = {}
        server.db.listeners.append(self._changed)

    def asked(self, session, host):
        self._askers.setdefault(session, set()).add(host)

    def _changed(self, record, cls):
        _gen, op, table, ref, _fields = record
        if table != "session" or op != "del":
            return
        hosts = self._askers.pop(ref, None)
        if hosts:
            # Told from the reactor's next turn, not from inside a write.
            self.server.reactor.callLater(0, self._tell, ref, hosts)

    def _tell(self, session, hosts):
        db = self.server.db
        for host in hosts:
            if not db.exists("host", host):
                continue
            address = db.get("host", host, "address")
            d = self.server.peers.call(address, GONE_CALL, session)
            d.addErrback(lambda f, a=address: log.info(
                "{address} not told of a session gone ({e}); it forgets "
                "it within {ttl:.0f} s", address=a, e=f.getErrorMessage(),
                ttl=CACHE_TTL))


def part_of(server, cls, *args):
    """The one ``cls(*args)`` of this server, made at the first ask and
    kept with the server (its ``parts``), so it goes with it."""
    part = server.parts.get(cls)
    if part is None:
        part = server.parts[cls] = cls(*args)
    return part


def vouched_of(server):
    return part_of(server, VouchedSessions, server.reactor, server.identity)


def askers_of(server):
    return part_of(server, SessionAskers, server)

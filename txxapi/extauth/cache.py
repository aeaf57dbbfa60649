"""
What the directory said of a subject lately: its details (enabled,
locked...) and its transitive groups, per subject identifier, for a
while (the TTL, by default the session revalidation interval).  A login
of a user whose answers are here asks the directory only to check the
password: one bind instead of three connections.

An entry is dropped when it expires and everything is dropped whenever a
subject record changes (an administrator's subject.create, a role given
or taken, the periodic refresh of a subject's details) or external
authentication is enabled or disabled, so that such a change takes
effect at the next login.  An answer that was on its way when the cache
was cleared is not kept.  The revalidation pass refreshes the entries of
the users it checks.  Bounded: past CAPACITY entries the least recently
used go.
"""

import collections

CAPACITY = 10000


class DirectoryCache:
    def __init__(self, clock, ttl, capacity=CAPACITY):
        self.clock = clock
        self.ttl = float(ttl)
        self.capacity = capacity
        self._entries = collections.OrderedDict()  # (kind, sid) -> (t, v)
        # Bumped by clear(): an answer asked for before is not stored.
        self.generation = 0

    @property
    def enabled(self):
        return self.ttl > 0

    def get(self, kind, sid):
        """The answer kept for ``kind`` ("information", "groups") of
        ``sid``, or None."""
        key = (kind, sid)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock.seconds() >= entry[0]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, kind, sid, value, generation):
        """Keep ``value``, unless the cache was cleared since
        ``generation`` (when the question was asked)."""
        if not self.enabled or generation != self.generation:
            return
        self._entries[(kind, sid)] = (self.clock.seconds() + self.ttl, value)
        self._entries.move_to_end((kind, sid))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self):
        self.generation += 1
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

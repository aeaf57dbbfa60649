"""
Election: mastership as an etcd key held under a lease.  A contender
creates the key only if it does not exist (create_revision == 0); the
winner holds it as long as its lease lives; the others watch the key and
try again as soon as it is deleted (resigned, or its lease revoked or
expired).  A cluster without quorum for a moment (its members restarting
with the pool) is waited for: the campaign is asked again, which is safe
however far the last one went (a key this lease created is won).
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.pool.etcd import errors
from txxapi.pool.etcd.watch import Watcher

__all__ = ["Election", "elect"]

log = Logger()

RETRY = 0.5
# Answers after which the same campaign may simply be asked again: no
# quorum or member now, or a member stopping under the request.
PASSING = (errors.EtcdNoQuorum, errors.EtcdUnavailable, errors.EtcdTimeout,
           errors.EtcdMemberStopping)


class Election:
    """One contender for ``key``: campaign() fires once this contender
    holds the key (value under lease_id)."""

    def __init__(self, client, key, value, lease_id):
        self.client = client
        self.key, self.value, self.lease_id = key, value, lease_id
        self._watcher = None
        self._waiting = None
        self._stopped = False

    @defer.inlineCallbacks
    def campaign(self):
        while not self._stopped:
            try:
                won, holder = yield self.client.campaign(
                    self.key, self.value, self.lease_id)
            except errors.EtcdError as e:
                if not isinstance(e, PASSING):
                    raise
                log.info("election on {key}: {e}; asking again",
                         key=self.key, e=e)
                yield task.deferLater(self.client.reactor, RETRY,
                                      lambda: None)
                continue
            if won or (holder is not None and holder.lease == self.lease_id):
                return holder
            if holder is None:
                continue        # deleted between the compare and the read
            yield self._deleted_after(holder.mod_revision)
        raise defer.CancelledError("election on %r abandoned" % (self.key,))

    def _deleted_after(self, revision):
        """Fires when the key is deleted after revision."""
        self._waiting = defer.Deferred()

        def on_events(events):
            if any(e.type == "delete" for e in events):
                self._stop_watch()

        def on_compacted(revision):
            self._stop_watch()     # reread: campaign again

        self._watcher = Watcher(self.client, self.key, on_events,
                                start_revision=revision + 1,
                                on_compacted=on_compacted)
        self._watcher.start().addErrback(lambda f: None)
        return self._waiting

    def _stop_watch(self):
        watcher, self._watcher = self._watcher, None
        waiting, self._waiting = self._waiting, None
        if watcher is not None:
            watcher.stop()
        if waiting is not None:
            waiting.callback(None)

    def leader(self):
        """The KeyValue of the current holder, or None."""
        return self.client.get(self.key)

    def resign(self):
        """Give the key up if held; stops a campaign in progress."""
        self._stopped = True
        self._stop_watch()
        return self.client.resign(self.key, self.lease_id)


def elect(client, key, value, lease_id):
    """Campaign until this contender holds key; fires with its KeyValue."""
    return Election(client, key, value, lease_id).campaign()

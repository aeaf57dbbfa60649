"""
Watcher: follows a key (or a prefix) through etcd's watch stream, hands
each batch of events to its owner in revision order, and survives a
dropped stream: it reopens on the next reachable member from the revision
after the last one it delivered, so nothing is missed or delivered twice.
When that revision has been compacted away it cannot resume; it says so
(on_compacted) and stops, and its owner must reread the state.

A stream from a member that can no longer be reached (the network cut
between them) does not end: nothing comes to close it.  With the
client's ``watch_silence`` set (its members send progress notifications
at least that often), a stream silent for that long is dropped and the
watch resumes on another member.
"""

from twisted.internet import defer, task
from twisted.logger import Logger

from txxapi.pool.etcd import errors
from txxapi.pool.etcd.types import WatchEvent, key_range

__all__ = ["Watcher"]

log = Logger()

STABLE_STREAM = 2.0   # seconds; a stream that lasted less ends in a backoff


class Watcher:
    """Watch key (every key under it with prefix=True) from
    start_revision (0: from now).  on_events(list of WatchEvent) is called
    for each batch; on_compacted(compact_revision) when the watcher had to
    stop because its next revision is compacted."""

    def __init__(self, client, key, on_events, prefix=False,
                 start_revision=0, on_compacted=None, prev_kv=False,
                 retry_delay=0.1, max_retry_delay=2.0):
        self.client = client
        self.key, self.prefix, self.prev_kv = key, prefix, prev_kv
        self.on_events = on_events
        self.on_compacted = on_compacted
        self.retry_delay, self.max_retry_delay = retry_delay, max_retry_delay
        # The last revision delivered (events up to it are done).
        self.revision = max(start_revision - 1, 0) if start_revision else 0
        self._from_now = not start_revision
        self.created = defer.Deferred()   # the first stream is registered
        # Fires when the watcher ends: None once stopped, an EtcdCompacted
        # when it could not resume.
        self.finished = defer.Deferred()
        self.reconnects = 0
        self._running = False
        self._stream = None
        self._pause = None
        self._compacted = None
        self.silence = getattr(client, "watch_silence", None)
        self._silent = None     # the timer that drops a silent stream

    def start(self):
        """Start watching; returns self.created."""
        self._running = True
        self._run().addErrback(
            lambda f: log.failure("etcd watcher crashed", f))
        return self.created

    def stop(self):
        """Stop watching; fires once the stream is closed."""
        self._running = False
        if self._pause is not None:
            self._pause.cancel()
        if self._stream is not None:
            self._stream.close()
        return self.finished

    def _request(self):
        body = key_range(self.key, self.prefix)
        if not self._from_now:
            body["start_revision"] = str(self.revision + 1)
        body["progress_notify"] = True
        if self.prev_kv:
            body["prev_kv"] = True
        return body

    @defer.inlineCallbacks
    def _run(self):
        delay = self.retry_delay
        while self._running:
            try:
                endpoint, stream = yield self.client.watch_stream(
                    self._request(), self._on_message)
            except errors.EtcdError as e:
                log.debug("etcd watch on {key!r}: {error}", key=self.key,
                          error=e)
                yield self._sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            self._stream = stream
            if not self._running:
                stream.close()      # stopped while it was opening
            opened = self.client.reactor.seconds()
            self._listen(endpoint)
            yield stream.done
            self._stream = None
            self._unlisten()
            if not self._running or self._compacted is not None:
                break
            # The stream dropped (its member died, or lost its leader and
            # ended the watch): go elsewhere.
            self.reconnects += 1
            self.client.transport.mark_failed(endpoint)
            log.debug("etcd watch on {key!r}: stream from {url} ended, "
                      "resuming after revision {rev}", key=self.key,
                      url=endpoint.url, rev=self.revision)
            if self.client.reactor.seconds() - opened > STABLE_STREAM:
                delay = self.retry_delay
            else:   # ended at once (no quorum anywhere?): back off
                yield self._sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
        self._running = False
        if not self.created.called:
            self.created.errback(self._compacted or errors.EtcdError(
                "etcd watch stopped before it started"))
        if not self.finished.called:
            self.finished.callback(self._compacted)

    def _sleep(self, seconds):
        self._pause = task.deferLater(self.client.reactor, seconds,
                                      lambda: None)
        self._pause.addErrback(lambda f: f.trap(defer.CancelledError))
        self._pause.addBoth(self._unpause)
        return self._pause

    def _unpause(self, result):
        self._pause = None
        return result

    def _listen(self, endpoint):
        if self.silence is None or self._stream is None:
            return
        self._silent = self.client.reactor.callLater(
            self.silence, self._silence_from, endpoint)

    def _unlisten(self):
        if self._silent is not None and self._silent.active():
            self._silent.cancel()
        self._silent = None

    def _silence_from(self, endpoint):
        self._silent = None
        if self._stream is not None:
            log.info("etcd watch on {key!r}: nothing from {url} in {s:g} s; "
                     "resuming elsewhere", key=self.key, url=endpoint.url,
                     s=self.silence)
            self._stream.close()

    def _on_message(self, message):
        if self._silent is not None and self._silent.active():
            self._silent.reset(self.silence)
        if "error" in message:
            log.warn("etcd watch on {key!r}: {error}; reopening",
                     key=self.key, error=message["error"])
            self._stream.close()
            return
        result = message.get("result") or {}
        if result.get("canceled"):
            compact = int(result.get("compact_revision") or 0)
            if compact:
                self._compacted = errors.EtcdCompacted(
                    "etcd watch on %r: revision %d is compacted (now %d)"
                    % (self.key, self.revision + 1, compact), compact)
                self._running = False
                if self.on_compacted is not None:
                    self.on_compacted(compact)
            self._stream.close()
            return
        if result.get("created"):
            if self._from_now:
                # What follows is after the header's revision.
                self._from_now = False
                self.revision = int(
                    (result.get("header") or {}).get("revision") or 0)
            if not self.created.called:
                self.created.callback(self)
            return
        events = [WatchEvent.parse(e) for e in result.get("events") or ()]
        if events:
            self.revision = events[-1].kv.mod_revision
            self.on_events(events)
        else:   # a progress notification: everything up to it was sent
            revision = int((result.get("header") or {}).get("revision") or 0)
            self.revision = max(self.revision, revision)

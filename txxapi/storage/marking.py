"""
Operations on SRs and VDIs recorded in current_operations.  One that
conflicts with an operation in progress waits for it to end, as XAPI's
storage calls retry, instead of failing at once.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger

from txxapi import operations
from txxapi.errors import XenAPIError

log = Logger()

# How long an operation waits for a conflicting one (XAPI retries for two
# hours), and how often it looks again without being woken.
MARK_WAIT = 7200.0
MARK_POLL = 1.0


class Marking:
    """Waiting marks on storage objects."""

    # --- operations ---------------------------------------------------------

    def _wait_for(self, objects):
        """A Deferred that fires when an operation on one of the objects
        ends, or after MARK_POLL seconds."""
        d = defer.Deferred()
        for obj in objects:
            self._waiters.setdefault(obj, []).append(d)
        call = self.server.reactor.callLater(MARK_POLL, d.callback, None)

        def cleanup(result):
            if call.active():
                call.cancel()
            for obj in objects:
                waiting = self._waiters.get(obj, [])
                if d in waiting:
                    waiting.remove(d)
                if not waiting:
                    self._waiters.pop(obj, None)
            return result
        return d.addBoth(cleanup)

    def _wake(self, obj):
        for d in list(self._waiters.get(obj, [])):
            if not d.called:
                d.callback(None)

    @defer.inlineCallbacks
    def marked(self, ctx, marks, body):
        """Run ``body()`` with each (class, ref, op) of ``marks`` recorded
        in current_operations.  Refusals other than another operation in
        progress are raised at once; that one is waited out."""
        started = time.monotonic()
        while True:
            try:
                for cls, ref, op in marks:
                    operations.check(ctx, cls, ref, op)
                break
            except XenAPIError as e:
                if e.code != "OTHER_OPERATION_IN_PROGRESS" or \
                        time.monotonic() - started > MARK_WAIT:
                    raise
            ctx.check_cancelled()
            yield self._wait_for([(cls, ref) for cls, ref, _ in marks])
        keys = [(cls, ref, operations.begin(ctx, cls, ref, op))
                for cls, ref, op in marks]
        try:
            result = yield defer.maybeDeferred(body)
        finally:
            for cls, ref, key in keys:
                operations.end(self.db, cls, ref, key)
                self._wake((cls, ref))
        return result

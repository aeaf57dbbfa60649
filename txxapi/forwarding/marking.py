"""
Operation marking: one helper for the whole toolstack.

``Marker.marked(ctx, marks, body, wait)`` checks each (class, ref, op) of
``marks`` (or (class, ref, op, strict): a forced operation's is not
strict) against its class's rule (txxapi.operations), records them in
current_operations, runs ``body()`` and removes them when it finishes,
however it finishes.  The check and the record happen in one reactor
turn, so two conflicting calls cannot both pass.  The policy says what a
conflict (OTHER_OPERATION_IN_PROGRESS) does:

* fail fast (VM, VBD, VIF operations): the error at once;
* wait (SR, PBD, VDI operations, as XAPI's storage calls retry): wait for
  the conflicting operation to end, woken when a mark on one of the
  objects is removed or every MARK_POLL seconds, for up to MARK_WAIT.

Any other refusal is raised at once under either policy.
"""

import time

from twisted.internet import defer

from txxapi import operations
from txxapi.errors import XenAPIError

MARK_WAIT = 7200.0
MARK_POLL = 1.0


def _marks(marks):
    """(class, ref, op, strict) of each mark."""
    return [m if len(m) == 4 else tuple(m) + (True,) for m in marks]


class Marker:
    def __init__(self, db, clock):
        self.db = db
        self.clock = clock
        self._waiters = {}         # (class, ref) -> [Deferred]

    def marked(self, ctx, marks, body, wait=False):
        """``body()`` (a value or a Deferred) with ``marks`` recorded; a
        Deferred of its result.  Fail fast raises a refusal at once."""
        marks = _marks(marks)
        if wait:
            return self._wait_then_run(ctx, marks, body)
        for cls, ref, op, strict in marks:
            operations.check(ctx, cls, ref, op, strict)
        return self._run(ctx, marks, body)

    def _run(self, ctx, marks, body):
        keys = [(cls, ref, operations.begin(ctx, cls, ref, op, strict))
                for cls, ref, op, strict in marks]

        def finished(result):
            for cls, ref, key in keys:
                operations.end(self.db, cls, ref, key)
                self._wake((cls, ref))
            return result
        return defer.maybeDeferred(body).addBoth(finished)

    @defer.inlineCallbacks
    def _wait_then_run(self, ctx, marks, body):
        started = time.monotonic()
        while True:
            try:
                for cls, ref, op, strict in marks:
                    operations.check(ctx, cls, ref, op, strict)
                break
            except XenAPIError as e:
                if e.code != "OTHER_OPERATION_IN_PROGRESS" or \
                        time.monotonic() - started > MARK_WAIT:
                    raise
            ctx.check_cancelled()
            yield self._wait_for([m[:2] for m in marks])
        result = yield self._run(ctx, marks, body)
        return result

    def _wait_for(self, objects):
        """A Deferred that fires when an operation on one of the objects
        ends, or after MARK_POLL seconds."""
        d = defer.Deferred()
        for obj in objects:
            self._waiters.setdefault(obj, []).append(d)
        call = self.clock.callLater(MARK_POLL, d.callback, None)

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

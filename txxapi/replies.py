"""
A call's way back to its caller, without a Deferred on the way.

A reply is any object with ``ok(value)`` and ``fail(failure)`` and a
``cancel`` attribute.  The RPC endpoints hand one to the dispatcher with
each call; an implementation that answers at once has its result given
to it straight away, and one that answers later (event.from, blocked
until a change) keeps it and answers through it itself, returning
ANSWERED.  Whoever keeps a reply sets ``cancel`` to what frees the wait;
the caller calls it when its client goes away.

Callers that want a Deferred (the CLI, tasks, the tests) get one from
DeferredReply, whose Deferred's cancellation is that ``cancel``.
"""

from twisted.internet import defer

# Returned by an implementation that answers through ctx.reply itself.
ANSWERED = object()


class DeferredReply:
    """A reply that fires ``d``."""

    __slots__ = ("d", "cancel")

    def __init__(self):
        self.cancel = None
        self.d = defer.Deferred(self._cancelled)

    def ok(self, value):
        if not self.d.called:
            self.d.callback(value)

    def fail(self, failure):
        if not self.d.called:
            self.d.errback(failure)

    def _cancelled(self, _d):
        cancel, self.cancel = self.cancel, None
        if cancel is not None:
            cancel()

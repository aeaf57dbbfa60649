"""
Forwarding: the layer between dispatch and the implementations, as XAPI's
message_forwarding is.  For a message with a forwarding rule (one module
per class family: forwarding/vm.py holds ``VM.start``'s), it makes the
rule's checks, marks the operation on the objects it works on
(forwarding/marking.py) and runs the implementation on the host the rule
picks (forwarding/hosts.py): here, or re-issued there under the pool
session (forwarding/remote.py).  The implementations keep only the local
steps.  A message without a rule passes straight through.

Marks are the master's: on a slave, a call the master forwarded runs at
once, and a pool-session call of the slave's own that has a rule goes to
the master, which marks it and picks its host.

A route with an ``admit`` (a placement HA checks against its failover
plan, searched in a thread) is routed again under the master's placement
lock, as XAPI chooses, checks and reserves under its global lock: the
host is chosen, the plan checked and the memory held with every earlier
placement's reservation in place, so two concurrent placements cannot
both pass where only one keeps the plan.  The lock is let go once the
hold is made, not when the call ends; placements without an ``admit``
(HA off) never take it.
"""

from twisted.internet import defer
from zope.interface import implementer

from txxapi.errors import XenAPIError
from txxapi.forwarding import devices, host, master, vm  # noqa: F401
from txxapi.forwarding import migration, network  # noqa: F401
from txxapi.forwarding import hosts, remote
from txxapi.forwarding.marking import Marker
from txxapi.forwarding.registry import rule_for
from txxapi.forwarding.storage import StorageCalls
from txxapi.interfaces import IForwarder


@implementer(IForwarder)
class Forwarder:
    """Runs each call as its rule says.  ``storage`` holds the VDI calls
    the toolstack makes itself, forwarded like the API's."""

    def __init__(self, identity, db, clock, storage):
        self.identity = identity
        self.marker = Marker(db, clock)
        self.placements = defer.DeferredLock()
        self.storage = StorageCalls(self, storage)

    def execute(self, ctx, implementation, args):
        forwarded = remote.forwarded_here(ctx)
        if forwarded is not None:
            return self._forwarded(ctx, implementation, args, forwarded)
        rule = rule_for(ctx.message.wire_name) if ctx.message else None
        if rule is None:
            return implementation(ctx, *args)
        call = (ctx.message.wire_name, args)
        route = rule(ctx, *args)
        if not self.identity.is_master and (
                route.marks or route.host != self.identity.host_ref):
            # The master's to mark and to send where it runs.
            return remote.call_on(ctx, hosts.master(ctx), *call)
        if route.admit is not None:
            return self._admitted(ctx, rule, implementation, args, call)
        return self.run(ctx, route, lambda: implementation(ctx, *args), call)

    def _admitted(self, ctx, rule, implementation, args, call):
        """The call routed, admitted and run as far as its hold under
        the placement lock."""
        def admit(_):
            route = rule(ctx, *args)
            if route.admit is None:
                return route
            return route.admit().addCallback(lambda _: route)

        def admitted(route):
            # The marks and the hold are made before ``run`` returns: the
            # next placement, let in by the release, sees them.
            try:
                return self.run(ctx, route,
                                lambda: implementation(ctx, *args), call)
            finally:
                self.placements.release()

        def refused(f):
            self.placements.release()
            return f
        d = self.placements.acquire().addCallback(admit)
        return d.addCallbacks(admitted, refused)

    def run(self, ctx, route, local, call=None):
        """``local()`` as ``route`` says: on its host, with its marks.
        ``call``: (message, arguments) that do the same on another host;
        without one such a route is refused with NOT_IMPLEMENTED."""
        after = route.after
        if route.host != self.identity.host_ref:
            if call is None:
                raise XenAPIError("NOT_IMPLEMENTED", "%s on another host" % (
                    ctx.message.wire_name if ctx.message else "a call"))
            target = route.host if self.identity.is_master \
                else hosts.master(ctx)
            remote.assert_live(ctx, target, hosts.is_member)
            # The executing host makes any step after the call itself.
            if not self.identity.is_master:
                return remote.call_on(ctx, target, *call)
            local, after = self._elsewhere(ctx, route, target, call), None
        elif route.hold is not None:
            local = self._held(ctx, route, local)
        if route.marks:
            d = self.marker.marked(ctx, route.marks, local, route.wait)
        elif after is not None:
            d = defer.maybeDeferred(local)
        else:
            return local()
        if after is not None:
            d.addCallback(after)
        return d

    @staticmethod
    def _held(ctx, route, local):
        """``local`` between the route's hold and the step undoing it."""
        def run():
            release = route.hold(ctx)
            return defer.maybeDeferred(local).addBoth(release)
        return run

    @classmethod
    def _elsewhere(cls, ctx, route, target, call):
        def run():
            over = remote.cancel_there(ctx, target)
            return remote.call_on(ctx, target, *call).addBoth(over)
        return cls._held(ctx, route, run) if route.hold is not None else run

    @staticmethod
    def _forwarded(ctx, implementation, args, forwarded):
        """A call the master forwarded here: checked and marked there, so
        only the local steps (and a rule's step after them) run, once the
        replica has caught up with the master."""
        def run():
            rule = rule_for(ctx.message.wire_name)
            after = rule(ctx, *args).after \
                if getattr(rule, "step_after", False) else None
            d = defer.maybeDeferred(implementation, ctx, *args)
            return d.addCallback(after) if after is not None else d
        return remote.caught_up(ctx, forwarded).addCallback(
            lambda _: remote.under_task(ctx, forwarded, run))

"""
Forwarding: the layer between dispatch and the implementations, as XAPI's
message_forwarding is.  For a message with a forwarding rule (one module
per class family: forwarding/vm.py holds ``VM.start``'s), it makes the
rule's checks, marks the operation on the objects it works on
(forwarding/marking.py) and runs the local implementation on the host the
rule picks (forwarding/hosts.py).  The implementations keep only the
local steps.  A message without a rule passes straight through.

This host is the only member of its pool until the pool work lands, so a
route to another host is refused with NOT_IMPLEMENTED; the redirections
of a slave and the calls to another host slot in here, without touching
dispatch or the implementations.
"""

from twisted.internet import defer
from zope.interface import implementer

from txxapi.errors import XenAPIError
from txxapi.forwarding import devices, vm  # noqa: F401 (their rules)
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
        self.storage = StorageCalls(self, storage)

    def execute(self, ctx, implementation, args):
        rule = rule_for(ctx.message.wire_name) if ctx.message else None
        if rule is None:
            return implementation(ctx, *args)
        return self.run(ctx, rule(ctx, *args),
                        lambda: implementation(ctx, *args))

    def run(self, ctx, route, local):
        """``local()`` as ``route`` says: on its host, with its marks."""
        if route.host != self.identity.host_ref:
            raise XenAPIError("NOT_IMPLEMENTED", route.refusal or
                              "%s on another host" % ctx.message.wire_name)
        if route.marks:
            d = self.marker.marked(ctx, route.marks, local, route.wait)
        elif route.after is not None:
            d = defer.maybeDeferred(local)
        else:
            return local()
        if route.after is not None:
            d.addCallback(route.after)
        return d

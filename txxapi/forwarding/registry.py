"""
Where forwarding rules are registered, as implementations are with
``@implements``.

A rule is a function decorated with ``@forwards("VM.start")``; it takes
the call context and the message's parameters (as the implementation
does) and answers a ``Route``: the host that executes the call and the
operations to mark on the objects it works on.  It also makes the checks
that must come before any mark (a bad handle, a refused argument), so
that a refused call changes nothing.  A message without a rule passes
straight through to its implementation.
"""

from txxapi.datamodel import MODEL

RULES = {}


class Route:
    """Where a call runs and what it marks.

    ``marks``: (class, ref, op) recorded in current_operations for the
    call's length.  ``wait``: wait out a conflicting operation (storage's
    policy, as XAPI's storage calls retry) rather than fail at once with
    OTHER_OPERATION_IN_PROGRESS.  ``after``: a step on the result once
    the marks are gone (a PBD.plug's scan, a clone's fallback copy), made
    by the host that executes the call: a rule with one is registered
    with ``step_after=True``, so that the host the call is forwarded to
    asks the rule for it.  ``hold``: a step the host that routes the call
    makes first, whether the call runs there or is sent to another host
    (a start's memory reserved on the host chosen, so that concurrent
    placements see it); it answers the step that undoes it once the call
    is over.  ``admit``: a check the master makes before any mark that
    takes a while (HA's failover plan searched with the call's placement:
    a Deferred, whose failure refuses the call): a route with one is
    routed again under the master's placement lock and its ``admit``
    asked for in that reactor step, so it judges the state the rule saw,
    every earlier placement's hold included.
    """

    __slots__ = ("host", "marks", "wait", "after", "hold", "admit")

    def __init__(self, host, marks=(), wait=False, after=None, hold=None,
                 admit=None):
        self.host = host
        self.marks = list(marks)
        self.wait = wait
        self.after = after
        self.hold = hold
        self.admit = admit


def forwards(*wire_names, step_after=False):
    for name in wire_names:
        MODEL.messages[name]  # KeyError: not in the datamodel

    def register(fn):
        fn.step_after = step_after
        for name in wire_names:
            if name in RULES:
                raise ValueError("%s has two forwarding rules" % name)
            RULES[name] = fn
        return fn
    return register


def rule_for(wire_name):
    return RULES.get(wire_name)

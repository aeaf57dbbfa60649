"""
Where explicit messages are registered.

Implementation modules (txxapi.impl.*) decorate plain functions with
``@implements("VM.start")``; the function receives the call context and the
message's parameters, already type-checked, in wire order, and returns the
result or a Deferred of it.  A published message with no registered
function answers NOT_IMPLEMENTED.
"""

from txxapi.datamodel import MODEL

HANDLERS = {}


def implements(wire_name):
    message = MODEL.messages[wire_name]  # KeyError: not in the datamodel

    def register(fn):
        if wire_name in HANDLERS:
            raise ValueError("%s registered twice" % wire_name)
        HANDLERS[wire_name] = fn
        fn.message = message
        return fn

    return register


# Host-to-host calls of the pool that the published API does not list
# (XAPI's hidden pool.initial_auth and txxapi's own join steps): name ->
# fn(ctx, *wire_params); each checks its own credentials.
INTERNAL = {}


def internal(wire_name):
    def register(fn):
        if wire_name in INTERNAL or wire_name in MODEL.messages:
            raise ValueError("%s registered twice" % wire_name)
        INTERNAL[wire_name] = fn
        return fn

    return register


def handler_for(message):
    return HANDLERS.get(message.wire_name)

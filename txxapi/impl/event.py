"""event.*: the calls, delegating to the server's EventHub."""

from txxapi.api.registry import implements


@implements("event.from")
def event_from(ctx, classes, token, timeout):
    # Blocked watchers answer through the caller's reply, when it has one.
    return ctx.server.events.event_from(ctx.session, classes, token, timeout,
                                        ctx.reply)


@implements("event.next")
def next_(ctx):
    return ctx.server.events.next(ctx.session)


@implements("event.register")
def register(ctx, classes):
    ctx.server.events.register(ctx.session, classes)
    return ""


@implements("event.unregister")
def unregister(ctx, classes):
    ctx.server.events.unregister(ctx.session, classes)
    return ""


@implements("event.get_current_id")
def get_current_id(ctx):
    return ctx.server.events.get_current_id()


@implements("event.inject")
def inject(ctx, cls, ref):
    return ctx.server.events.inject(cls, ref)

"""
Dispatch: from a decoded wire call to a result.

    name → message (datamodel) → parameter count → parameter types →
    session → RBAC → forwarding → implementation → durability

in the order XAPI applies them, so that each kind of bad call gets the
error XAPI gives, and nothing runs before every check has passed.  Async
calls return a task ref as soon as the checks pass; the task records the
outcome.  The caller (a wire codec) turns XenAPIError into a Failure
envelope and anything else into INTERNAL_ERROR.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txxapi.api import implicit, rbac
from txxapi.api.audit import audited as is_audited
from txxapi.api.registry import INTERNAL, handler_for
from txxapi.datamodel import MODEL
from txxapi.datamodel.schema import REMOVED
from txxapi.datamodel.types import (
    BadEnum, BadString, MissingField, TypeMismatch)
from txxapi.errors import XenAPIError
from txxapi.interfaces import IDispatcher
from txxapi.replies import ANSWERED, DeferredReply

log = Logger()

ASYNC_PREFIX = "Async."


def _wire_names():
    """Every name a message answers to: Class.message and XAPI's
    alternative spelling Class_message (no two messages share one)."""
    names = {}
    for wire, m in MODEL.messages.items():
        names[wire] = m
        names["%s_%s" % (m.cls.name, m.name)] = m
    return names


_WIRE_NAMES = _wire_names()
_LONGEST_NAME = max(map(len, _WIRE_NAMES))


def resolve(name):
    """(message, is_async) for a wire name, or (None, is_async): one
    dictionary look-up, and none for a name longer than any known."""
    is_async = name.startswith(ASYNC_PREFIX)
    if is_async:
        name = name[len(ASYNC_PREFIX):]
    if len(name) > _LONGEST_NAME:
        return None, is_async
    return _WIRE_NAMES.get(name), is_async


def list_methods():
    """Every synchronous wire name a client may call, for
    system.listMethods."""
    return [w for w, m in MODEL.messages.items()
            if not m.hidden and m.state != REMOVED]


@implementer(IDispatcher)
class Dispatcher:
    """``make_context(session, message, origin)``: the context a call runs
    in (it carries the parts implementations reach)."""

    def __init__(self, db, sessions, tasks, forwarder, persistence,
                 make_context, audit=None):
        self.db = db
        self.sessions = sessions
        self.tasks = tasks
        self.forwarder = forwarder
        self.persistence = persistence
        self.make_context = make_context
        self.audit = audit

    @staticmethod
    def knows(name):
        m, is_async = resolve(name)
        return m is not None and (not is_async or m.is_async)

    def call(self, name, params, origin=None, reply=None):
        """Run one call.  Without ``reply``: a Deferred firing with its
        result.  With one (txxapi.replies): its outcome goes to it, at
        once for an implementation that answers at once, with no Deferred
        on the way; None is returned."""
        if reply is None:
            reply = DeferredReply()
            self._answer(name, params, origin, reply)
            return reply.d
        self._answer(name, params, origin, reply)
        return None

    def _answer(self, name, params, origin, reply):
        try:
            self._call(name, params, origin, reply)
        except XenAPIError:
            reply.fail(Failure())

    def _call(self, name, params, origin, reply):
        if name == "system.listMethods":
            return reply.ok(list_methods())
        if name.startswith("system.isAlive"):
            return reply.ok(params[0] if params else "")
        message, is_async = resolve(name)
        if message is None and name in INTERNAL:
            return self._internal(INTERNAL[name], params, origin).addCallbacks(
                reply.ok, reply.fail)
        if message is None:
            raise XenAPIError("MESSAGE_METHOD_UNKNOWN", name)
        self.sessions.identity.assert_not_emergency(message.wire_name)
        if is_async and not message.is_async:
            raise XenAPIError(
                "Fault", "No async mode for this operation (rpc: %s)" % name)
        if message.state == REMOVED:
            session = params[0] if message.session and params else None
            self.sessions.check(session)
            raise XenAPIError("MESSAGE_REMOVED")

        offset = 1 if message.session else 0
        received = len(params) - offset
        if not message.required_count <= received <= len(message.params):
            raise XenAPIError("MESSAGE_PARAMETER_COUNT_MISMATCH", name,
                              str(message.required_count), str(received))
        args = self._coerce(message, params[offset:])
        session = None
        audited = _unchanged
        if message.session:
            session = params[0]
            if not isinstance(session, str):
                raise XenAPIError("SESSION_INVALID", str(session))
            self.sessions.check(session)
            audited = self._audited(session, message, args)
        ctx = self.make_context(session, message, origin)
        if is_async:
            return reply.ok(self.tasks.run_async(
                ctx, name, lambda: audited(self._execute(ctx, args))))
        if audited is not _unchanged:
            return audited(self._execute(ctx, args)).addCallbacks(
                reply.ok, reply.fail)
        return self._run(ctx, args, _DurableReply(self, reply))

    def _run(self, ctx, args, reply):
        """Run the implementation and answer through ``reply`` (which
        waits for durability): at once for a result, on firing for a
        Deferred; an implementation that answers later itself finds the
        reply as ctx.reply."""
        ctx.reply = reply
        try:
            result = self.forwarder.execute(
                ctx, self._implementation(ctx.message), args)
        except Exception:
            return reply.fail(Failure())
        if result is ANSWERED:
            return None
        if isinstance(result, defer.Deferred):
            return result.addCallbacks(reply.ok, reply.fail)
        return reply.ok(result)

    def _audited(self, session, message, args):
        """The RBAC check, before anything runs: a refusal is audited and
        raised; an allowed call gets a function that audits its outcome
        (for sessions that are not local superusers)."""
        permission = rbac.permission_of(message, args)
        allowed = self.sessions.permissions.allows(session, permission)
        audit = self.audit
        if audit is None or not is_audited(message.wire_name) or \
                self.db.fields("session", session)["is_local_superuser"]:
            if not allowed:
                raise rbac.denied(permission)
            return _unchanged
        if not allowed:
            audit.write(session, message.wire_name, False, "",
                        audit.arguments(message, args))
            raise rbac.denied(permission)
        # XAPI names the objects a call refers to as the call left them,
        # except for a destroy, which leaves none.
        before = audit.arguments(message, args) \
            if message.name == "destroy" else None

        def write(outcome):
            audit.write(session, message.wire_name, True, outcome,
                        before or audit.arguments(message, args))

        def outcome(d):
            def ok(result):
                write("OK")
                return result

            def error(f):
                write("ERROR:" + _error_text(f.value))
                return f
            return d.addCallbacks(ok, error)
        return outcome

    @staticmethod
    def _coerce(message, values):
        args = []
        for param, value in zip(message.params, values):
            try:
                args.append(param.type.coerce(value))
            except TypeMismatch as e:
                raise XenAPIError("FIELD_TYPE_ERROR", e.field or param.name)
            except BadEnum as e:
                raise XenAPIError("INVALID_VALUE", e.field or param.name,
                                  e.value)
            except BadString as e:
                # XAPI's text for a parameter it cannot take as a string.
                raise XenAPIError("INVALID_VALUE",
                                  "Invalid UTF-8 string in parameter",
                                  e.value)
            except MissingField as e:
                # XAPI's unmarshaller answers INTERNAL_ERROR
                # [Server_helpers.Dispatcher_FieldNotFound("<field>")]; a
                # client's mistake is no internal error, so it is named as
                # a field of the wrong type.
                raise XenAPIError("FIELD_TYPE_ERROR", e.field)
        for param in message.params[len(values):]:
            args.append(param.type.coerce(param.default))
        return args

    def _internal(self, fn, params, origin):
        """A pool-internal call: the function checks its credentials; its
        writes are durable before it answers, as any call's."""
        ctx = self.make_context(None, None, origin)
        return self._durable(fn, ctx, *params)

    def _execute(self, ctx, args):
        """Run the implementation, then wait until what it wrote is
        durable: the response must not acknowledge a write a crash could
        lose."""
        return self._durable(self.forwarder.execute, ctx,
                             self._implementation(ctx.message), args)

    def _durable(self, fn, *args):
        before = self.db.persistent_generation
        return defer.maybeDeferred(fn, *args).addCallback(
            self._when_durable, before)

    def _when_durable(self, result, before):
        """result, or a Deferred of it once what was written since
        ``before`` is durable."""
        generation = self.db.persistent_generation
        # Calls answered together (a write's event.from watchers) find
        # it durable after the first has waited: no Deferred for them.
        if generation == before or self.persistence.is_durable(generation):
            return result
        return self.persistence.wait_durable(generation).addCallback(
            lambda _: result)

    @staticmethod
    def _implementation(message):
        fn = handler_for(message)
        if fn is not None:
            return fn
        if message.implicit:
            return implicit.handler(message)
        return _not_implemented


def _unchanged(d):
    return d


class _DurableReply:
    """A reply that passes a result on once what the call wrote is
    durable (at once when it already is, as for almost every call)."""

    __slots__ = ("dispatcher", "reply", "before")

    def __init__(self, dispatcher, reply):
        self.dispatcher = dispatcher
        self.reply = reply
        self.before = dispatcher.db.persistent_generation

    @property
    def cancel(self):
        return self.reply.cancel

    @cancel.setter
    def cancel(self, fn):
        self.reply.cancel = fn

    def ok(self, result):
        answer = self.dispatcher._when_durable(result, self.before)
        if isinstance(answer, defer.Deferred):
            answer.addCallbacks(self.reply.ok, self.reply.fail)
        else:
            self.reply.ok(answer)

    def fail(self, failure):
        self.reply.fail(failure)


def _error_text(e):
    if isinstance(e, XenAPIError):
        # XAPI's ExnHelper.string_of_exn for an API error.
        return "%s: [ %s ]" % (e.description[0],
                               "; ".join(e.description[1:]))
    return "INTERNAL_ERROR: [ %s ]" % (e,)


def _not_implemented(ctx, *args):
    raise XenAPIError("NOT_IMPLEMENTED", ctx.message.wire_name)

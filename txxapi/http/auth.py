"""
Who calls an HTTP data handler, decided as XAPI decides it: a session_id
(cookie before query), else the pool secret, else HTTP basic credentials
that log in a session lasting the request; on the local socket, no
credentials at all make a superuser session lasting the request.  Then
the handler's RBAC permission, ``http/<action>``: local superusers hold
every one.  On a slave, a session it does not hold is the master's (a
request the master sent here) and is checked there (txxapi.redirect);
a slave in emergency mode serves none (401, or 500 for the pool secret
and the local socket).

Failures are Refused exceptions carrying XAPI's canned response.  A task
the client named in ``task_id`` is failed with the reason first, as XAPI
does, but only on an RBAC refusal and only if the refused session created
it: a request with no valid credentials changes no task.
"""

import base64
import binascii
import hmac
from urllib.parse import parse_qsl, urlsplit

from twisted.internet import defer

from txxapi.api import rbac
from txxapi.datamodel.permissions import HTTP_PREFIX
from txxapi.errors import XenAPIError
from txxapi.http import responses
from txxapi.http.local import is_local
from txxapi.pool.client import PeerUnreachable
from txxapi.redirect import remote


class Refused(Exception):
    """Answer the request with ``response`` (bytes) and close it."""

    def __init__(self, response):
        Exception.__init__(self, response)
        self.response = response


def version_of(request):
    """The HTTP version XAPI answers a request in."""
    proto = getattr(request, "clientproto", None) or \
        getattr(request.channel, "_version", b"")
    return "1.0" if proto == b"HTTP/1.0" else "1.1"


def query_of(request):
    """The query parameters (first value of each).  Works before twisted
    has parsed the request, while the body is still arriving."""
    uri = getattr(request.channel, "_path", None) or request.uri
    # Parsed as text: parse_qsl of bytes fails on a %-escaped non-ASCII
    # byte.
    query = urlsplit(uri.decode("utf-8", "replace")).query
    args = {}
    for k, v in parse_qsl(query, keep_blank_values=True, errors="replace"):
        args.setdefault(k, v)
    return args


def cookies_of(request):
    """Cookies as XAPI parses them: separated by ';', or by '&' in the
    legacy form that has no ';'."""
    out = {}
    for raw in request.requestHeaders.getRawHeaders(b"cookie", []):
        text = raw.decode("utf-8", "replace")
        for item in text.split(";" if ";" in text else "&"):
            name, sep, value = item.strip().partition("=")
            if sep:
                out.setdefault(name, value)
    return out


class Params:
    """A request's parameters: query and cookies."""

    def __init__(self, request):
        self.query = query_of(request)
        self.cookies = cookies_of(request)

    def get(self, name, cookie_first=False):
        """XAPI reads session_id, pool_secret and task_id from the cookie
        first, and handler arguments from the query first."""
        first, second = (self.cookies, self.query) if cookie_first \
            else (self.query, self.cookies)
        return first.get(name, second.get(name))

    def __contains__(self, name):
        return name in self.query or name in self.cookies


class Caller:
    """The session a request runs in; a temporary one is logged out by
    close()."""

    # The task the master made for a request it sent here that named
    # none (txxapi.redirect.remote), else None.
    task = None

    def __init__(self, server, session, temporary):
        self.server = server
        self.session = session
        self.temporary = temporary

    def close(self):
        if self.temporary:
            self.temporary = False
            self.server.sessions.logout(self.session)


def fail_named_task(server, params, error, session):
    """Fail the task the client passed in task_id, if it is ``session``'s
    own: a refused request must not change a task its caller could not
    otherwise touch."""
    task = params.get("task_id", cookie_first=True)
    if task and server.db.exists("task", task) and \
            server.db.fields("task", task)["session"] == session:
        server.tasks.fail(task, error)


class _Unauthorised(Exception):
    pass


@defer.inlineCallbacks
def authenticate(server, request, params, realm, action, task_label=None):
    """The Caller of an HTTP data request (a Deferred), or Refused.
    ``task_label``: the handler makes a task of its own when the client
    names none (one the master makes, for a request it sent here)."""
    version = version_of(request)
    if server.identity.in_emergency_mode:
        raise Refused(_in_emergency_mode(server, request, params, realm))
    try:
        caller = yield _identify(server, request, params, task_label)
    except _Unauthorised:
        # XAPI fails the named task with SESSION_AUTHENTICATION_FAILED
        # here; a request without valid credentials leaves it alone.
        raise Refused(responses.unauthorised(version, realm))
    permission = HTTP_PREFIX + action
    allowed = server.sessions.permissions.allows(caller.session, permission)
    server.audit.write(caller.session, permission, allowed,
                       "OK" if allowed else "", _audited_query(params))
    if not allowed:
        fail_named_task(server, params, rbac.denied(permission),
                        caller.session)
        caller.close()
        raise Refused(responses.forbidden(version))
    return caller


def _in_emergency_mode(server, request, params, realm):
    """A slave in emergency mode serves no data handler, as XAPI's, which
    cannot check a session or log a user in without its master (401),
    and whose handler, let in by the pool secret or the local socket,
    fails at its first use of the master's database (500, with the
    reason here).  Nothing is begun that could only be half done."""
    version = version_of(request)
    if "session_id" in params or request.getHeader(b"authorization") or \
            ("pool_secret" not in params and not is_local(request)):
        return responses.unauthorised(version, realm)
    return responses.internal_error(
        version, " ".join(server.identity.emergency_error))


@defer.inlineCallbacks
def _masters_session(server, request, params, session, task_label):
    """On a slave, a session of the master's (a request the master sent
    here): checked there, and a local stand-in for the request."""
    try:
        local, task = yield remote.local_session(
            server, session, params.get("task_id", cookie_first=True),
            task_label)
    except XenAPIError:
        raise _Unauthorised()
    except PeerUnreachable:
        raise Refused(responses.service_unavailable(version_of(request)))
    caller = _StandIn(server, local, True)
    caller.task = task
    return caller


class _StandIn(Caller):
    """The local session of a master's session (``master_session``: one
    logged in there for the request, logged out after it)."""

    master_session = None

    def close(self):
        if self.temporary:
            remote.release(self.server, self.session)
            if self.master_session is not None:
                remote.master_logout(self.server, self.master_session)
        Caller.close(self)


def _audited_query(params):
    """The query arguments an HTTP audit line shows: the references."""
    return [[k, "", "", v] for k, v in sorted(params.query.items())
            if v.startswith("OpaqueRef:")]


@defer.inlineCallbacks
def _identify(server, request, params, task_label):
    session = params.get("session_id", cookie_first=True)
    if session is not None:
        if remote.is_masters(server, session):
            return (yield _masters_session(server, request, params, session,
                                           task_label))
        try:
            server.sessions.check(session)
        except XenAPIError:
            raise _Unauthorised()
        return Caller(server, session, False)
    secret = params.get("pool_secret", cookie_first=True)
    if secret is not None:
        # In constant time, as session.slave_login compares it.
        if not hmac.compare_digest(secret.encode(),
                                   server.pool_secret.encode()):
            raise _Unauthorised()
        return Caller(server, server.sessions.create(
            "", originator="pool secret", pool=True), True)
    header = request.getHeader(b"authorization")
    local = is_local(request)
    if header is None:
        if local:
            # Root on this host (txxapi.http.local).
            return Caller(server, server.sessions.create(
                "", originator="local socket"), True)
        raise _Unauthorised()
    header = header.decode("latin-1")
    scheme, _, data = header.partition(" ")
    if scheme.lower() != "basic":
        raise Refused(responses.internal_error(
            version_of(request), "Unknown authorization header: " + header))
    try:
        user, sep, password = base64.b64decode(data.strip()).decode(
            "utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _Unauthorised()
    if not sep:
        raise _Unauthorised()
    peer = getattr(request.getClientAddress(), "host", "unknown")
    originator = "%s using Basic auth" % peer
    if not server.identity.is_master and not local:
        return (yield _masters_login(server, request, params, user, password,
                                     originator, task_label))
    try:
        session = yield server.sessions.login(user, password, originator,
                                              trusted=local)
    except XenAPIError:
        raise _Unauthorised()
    return Caller(server, session, True)


@defer.inlineCallbacks
def _masters_login(server, request, params, user, password, originator,
                   task_label):
    """On a slave, basic credentials log in on the master (where logins
    are), for the request only, as XAPI's slaves log them in."""
    try:
        session = yield remote.master_login(server, user, password,
                                            originator)
    except XenAPIError:
        raise _Unauthorised()
    except PeerUnreachable:
        raise Refused(responses.service_unavailable(version_of(request)))
    try:
        caller = yield _masters_session(server, request, params, session,
                                        task_label)
    except Exception:
        remote.master_logout(server, session)
        raise
    caller.master_session = session
    return caller

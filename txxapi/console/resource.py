"""
CONNECT /console and GET /console with a websocket upgrade, answered as
XAPI's console handler answers (console.ml): credentials and the
``http/connect_console`` (or ``_ws``) permission first (401/403), then
the console named by ``uuid`` (a VM's or a console's) or ``ref`` (a VM,
meaning its rfb console, or a console), the control domain's console only
with ``http/connect_console/host_console``, the VM running on this host,
and a console server to connect to (404 without one).  XAPI's handler
fails every other check with an exception its HTTP server turns into a
500 naming it; those bodies are reproduced.

Beyond XAPI, whose handler refuses a VM running on another host, the
request is answered 302 there (txxapi.redirect), where the console's
``location`` points already.
"""

from twisted.internet import defer
from twisted.python import log
from twisted.web import resource, server

from txxapi.console import relay, websocket
from txxapi.errors import XenAPIError
from txxapi.http import responses
from txxapi.http.auth import Params, Refused, authenticate, query_of, \
    version_of
from txxapi.redirect import owners

HOST_CONSOLE = "http/connect_console/host_console"
TASK_LABEL = "Connection to VM console"
# The 200 XAPI writes before it connects to the console server.
CONNECTED = responses.header_lines(["HTTP/1.1 200 OK",
                                    "Connection: keep-alive",
                                    "Cache-Control: no-cache, no-store"])


def _console_failure(version, what="Console.Failure"):
    return Refused(responses.internal_error(version, what))


def console_of(server, query, version):
    """The console a request names (console.ml's console_of_request)."""
    db = server.db
    if "uuid" in query:
        uuid = query["uuid"]
        try:
            ref = db.by_uuid("VM", uuid)
        except XenAPIError:
            try:
                ref = db.by_uuid("console", uuid)
            except XenAPIError:
                raise _console_failure(
                    version, 'Db_exn.Read_missing_uuid("console", "", "%s")'
                    % uuid)
    elif "ref" in query:
        ref = query["ref"]
    else:
        raise _console_failure(version)
    if db.exists("console", ref):
        return ref
    if db.exists("VM", ref):
        for console in db.where("console", VM=ref):
            if db.fields("console", console)["protocol"] == "rfb":
                return console
    raise _console_failure(version)


def check_console(server, session, console, version):
    """The control domain's console needs host_console; the VM must be
    running here.  Returns the console server's port, or refuses."""
    db = server.db
    fields = db.fields("console", console)
    vm = db.fields("VM", fields["VM"])
    if vm["is_control_domain"]:
        if not server.sessions.permissions.allows(session, HOST_CONSOLE):
            # XAPI checks this in a fresh context without the session, so
            # its error says so.
            raise _console_failure(
                version, "RBAC_PERMISSION_DENIED: [ %s; no session in "
                "context ]" % HOST_CONSOLE)
    if vm["power_state"] != "Running" or \
            vm["resident_on"] != server.host_ref:
        raise _console_failure(version)
    if fields["protocol"] == "rdp":
        raise _console_failure(
            version, "Failure(\"No support for tunnelling RDP\")")
    port = fields.get("port", -1)
    if not port or port <= 0:
        raise Refused(responses.header_lines([
            "HTTP/1.1 404 Not Found", "Connection: close",
            "Cache-Control: no-cache, no-store"]))
    return port


def _gone(request):
    """Whether the client closed while its request was being checked."""
    return request.channel.transport is None or \
        getattr(request, "_disconnected", False)


class ConsoleResource(resource.Resource):
    isLeaf = True

    def __init__(self, server_):
        resource.Resource.__init__(self)
        self.server = server_

    def render(self, request):
        self._serve(request)
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _serve(self, request):
        ws = request.method == b"GET"
        action = "connect_console_ws" if ws else "connect_console"
        version = version_of(request)
        caller = None
        try:
            caller = yield authenticate(self.server, request,
                                        Params(request), action, action)
            console = console_of(self.server, query_of(request), version)
            owners.to_resident(self.server, request, self.server.db.fields(
                "console", console)["VM"])
            port = check_console(self.server, caller.session, console,
                                 version)
            if ws:
                side, head = self._upgrade(request)
            else:
                side, head = relay.Side(), CONNECTED
        except Refused as refused:
            self._refuse(request, caller, refused.response)
            return
        except Exception:
            log.err(None, "console request failed")
            self._refuse(request, caller, responses.internal_error(version))
            return
        try:
            backend = yield relay.connect(self.server.reactor, port)
        except Exception:
            backend = None
        if _gone(request):
            caller.close()
            if backend is not None:
                backend.close()
            return
        if backend is None:
            # XAPI sends its 200 before it connects, then just closes.
            self._refuse(request, caller, head)
            return
        request.channel.transport.write(head)
        end = self._task(request, caller)
        early = relay.take_over(request, side, end)
        relay.join(side, backend)
        if early:
            side.dataReceived(early)

    def _task(self, request, caller):
        """The connection runs as a task, as XAPI's handlers do: the one
        the client named in task_id (it succeeds when the console closes)
        or one of its own, gone with the connection.  Returns what ends
        it."""
        tasks, db = self.server.tasks, self.server.db
        named = Params(request).get("task_id", cookie_first=True)
        own = not (named and db.exists("task", named))
        task = tasks.create(caller.session, TASK_LABEL) if own else named

        def end():
            if db.exists("task", task):
                if db.fields("task", task)["status"] == "pending":
                    tasks.succeed(task, "")
                if own:
                    tasks.destroy(task)
            caller.close()
        return end

    @staticmethod
    def _refuse(request, caller, response):
        if caller is not None:
            caller.close()
        if not _gone(request):
            request.channel.transport.write(response)
            request.channel.loseConnection()

    def _upgrade(self, request):
        """The websocket end and XAPI's 101, or its 501 when the request
        is no websocket handshake."""
        key = request.getHeader(b"sec-websocket-key")
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if not key or upgrade != b"websocket":
            raise Refused(responses.header_lines([
                "HTTP/1.0 501 Method Not Implemented", "Connection: close",
                "Cache-Control: no-cache, no-store"]))
        offered = (request.getHeader(b"sec-websocket-protocol")
                   or b"").decode("latin-1")
        subprotocol = websocket.choose_subprotocol(offered)
        return (websocket.WebSocketSide(subprotocol),
                websocket.upgrade_response(key.strip(), subprotocol))

"""
POST /cli: XAPI answers it with no HTTP response at all.  The request's
body is the command; the connection is then taken from the web server
and speaks the thin CLI protocol until the command exits.
"""

from twisted.web import resource, server

from txxapi.cli import protocol as P
from txxapi.cli.connection import CliConnection
from txxapi.cli.table import TABLE
from txxapi.console import relay
from txxapi.http.rpc import Origin


class CliResource(resource.Resource):
    """Serves one server's commands (the whole table unless told)."""

    isLeaf = True

    def __init__(self, server_, table=None):
        resource.Resource.__init__(self)
        self.server, self.table = server_, table or TABLE

    def render_POST(self, request):
        body = request.content.read().decode("utf-8", "replace")
        terminal = request.getHeader(P.TERMINAL_HEADER) == b"true"
        conn = CliConnection(self.server, body, Origin(request),
                             self.table, terminal)
        early = relay.take_over(request, conn, lambda: None)
        if early:
            conn.dataReceived(early)
        return server.NOT_DONE_YET

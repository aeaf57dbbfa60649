"""
The site both listeners (HTTP and HTTPS) serve: the RPC endpoints, the VDI
and XVA data paths, and the HTTP handlers of later work (console, RRDs,
CLI).

Requests are bounded: an RPC body larger than ``max_rpc_size`` is refused
with 413 before it is read, and the connection is closed.  The body of an
upload (PUT /import_raw_vdi, /import, /import_metadata) is not buffered
at all: each piece goes to the upload's writer as it arrives, with the
connection paused while the writer is behind.
"""

import io

from twisted.web import resource, server

from txxapi.cli.resource import CliResource
from txxapi.console.resource import ConsoleResource
from txxapi.http import limits, responses, routes, vdi_transfer
from txxapi.http.auth import version_of
from txxapi.http.rpc import RPCResource
from txxapi.metrics.handlers import RrdResource
from txxapi.migration.receiver import MemoryReceiver
from txxapi.xva import handlers as xva

# Who reads each upload's body as it arrives, and who answers a GET.
UPLOADS = {routes.IMPORT_RAW_VDI: vdi_transfer.Upload,
           routes.IMPORT: xva.Import,
           routes.IMPORT_METADATA: xva.ImportMetadata}
DOWNLOADS = {routes.EXPORT_RAW_VDI: vdi_transfer.Download,
             routes.EXPORT: xva.Export,
             routes.EXPORT_METADATA: xva.ExportMetadata}

MAX_RPC_SIZE = 300 * 1024   # XAPI's limit for an RPC body
MAX_CLI_SIZE = 200 * 1024   # and for a CLI command
# A host's RRDs sent to its master (compressed; a few KiB a VM).
MAX_RRD_SIZE = 256 * 1024 * 1024


class XapiRequest(server.Request):
    max_rpc_size = MAX_RPC_SIZE
    xapi_server = None
    _refused = False
    _upload = None
    route = None    # the handler serving it (routes), set as its header ends

    def gotLength(self, length):
        command = getattr(self.channel, "_command", b"")
        # Routed once, before the body: the site's resources read it.
        self.route = handler = routes.handler_of(
            command, getattr(self.channel, "_path", b""))
        rpc = command == b"POST" and handler in routes.RPC
        limit = self.max_rpc_size if rpc else MAX_CLI_SIZE \
            if command == b"POST" and handler == routes.CLI else \
            MAX_RRD_SIZE if handler == routes.PUT_RRD else None
        if limit is not None and length is not None and length > limit:
            self._refuse()
            return
        if handler in routes.UPLOADS and self.xapi_server is not None:
            self.content = io.BytesIO()
            # The upload answers Expect itself, once the request is known
            # to be acceptable; twisted must not send its own 100 first.
            expect = self.requestHeaders.getRawHeaders(b"expect") or []
            version = getattr(self.channel, "_version", b"")
            self.requestHeaders.removeHeader(b"expect")
            self._upload = UPLOADS[handler](
                self.xapi_server, self, length,
                expect_continue=version == b"HTTP/1.1"
                and [v.lower() for v in expect] == [b"100-continue"])
            return
        self._limit = limit
        self._received = 0
        server.Request.gotLength(self, length)

    def handleContentChunk(self, data):
        if self._upload is not None:
            self._upload.data(data)
            return
        if self._refused:
            return
        self._received += len(data)
        limit = getattr(self, "_limit", None)
        if limit is not None and self._received > limit:
            self._refuse()  # a chunked body that turned out too large
            return
        server.Request.handleContentChunk(self, data)

    def _refuse(self):
        self._refused = True
        self.content = None
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\n"
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        transport.loseConnection()

    def requestReceived(self, command, path, version):
        if self._upload is not None:
            # The upload answers for itself; twisted renders nothing.
            self._upload.body_complete()
            return
        if self._refused:
            return
        server.Request.requestReceived(self, command, path, version)

    def connectionLost(self, reason):
        if self._upload is not None:
            self._upload.connection_lost()
        server.Request.connectionLost(self, reason)


class TransferResource(resource.Resource):
    """GET /export_raw_vdi, /export and /export_metadata; what XAPI
    answers other methods on the data paths (its HTTP server knows no
    HEAD at all)."""

    isLeaf = True

    def __init__(self, server_):
        resource.Resource.__init__(self)
        self.server = server_

    def render(self, request):
        handler = routes.handler_of_request(request)
        if handler in DOWNLOADS:
            DOWNLOADS[handler](self.server, request)
            return server.NOT_DONE_YET
        if request.method == b"HEAD":
            answer = responses.method_not_implemented(
                version_of(request), "HEAD")
        else:
            answer = responses.not_found(version_of(request))
        request.channel.transport.write(answer)
        request.channel.loseConnection()
        return server.NOT_DONE_YET


class Root(resource.Resource):
    def __init__(self, server_):
        resource.Resource.__init__(self)
        self.rpc = RPCResource(server_)
        self.transfers = TransferResource(server_)
        self.console = ConsoleResource(server_)
        self.cli = CliResource(server_)
        self.rrds = RrdResource(server_)
        self.migration = MemoryReceiver(server_)

    def getChildWithDefault(self, name, request):
        handler = routes.handler_of_request(request)
        if handler in routes.RPC:
            return self.rpc
        if handler in routes.CONSOLE:
            return self.console
        if handler == routes.CLI:
            return self.cli
        if handler in routes.RRDS:
            return self.rrds
        if handler == routes.MIGRATE_MEMORY:
            return self.migration
        if routes.is_transfer_path(request.uri):
            return self.transfers
        if request.path == b"/":
            return self
        return resource.Resource.getChildWithDefault(self, name, request)

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        return b"txxapi\n"


def make_site(server_, max_rpc_size=MAX_RPC_SIZE, access_log=False,
              header_read_timeout=limits.HEADER_READ_TIMEOUT,
              header_total_timeout=limits.HEADER_TOTAL_TIMEOUT,
              max_connections_per_client=limits.MAX_CONNECTIONS_PER_CLIENT):
    # The server's reactor runs the channels' timers too.
    site = server.Site(Root(server_), reactor=server_.reactor)
    site.protocol = limits.LimitedChannel
    site.header_read_timeout = header_read_timeout
    site.header_total_timeout = header_total_timeout
    site.client_connections = limits.ClientConnections(
        max_connections_per_client)
    # RPC bodies are XML or JSON, never forms: skip Twisted's form parsing.
    site._parsePOSTFormSubmission = False
    if not access_log:
        site.log = lambda request: None
    site.requestFactory = type("Request", (XapiRequest,),
                               {"max_rpc_size": max_rpc_size,
                                "xapi_server": server_})
    site.displayTracebacks = False
    # Idle keep-alive connections are closed after this long.
    site.timeOut = 300
    return site


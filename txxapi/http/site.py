"""
The site both listeners (HTTP and HTTPS) serve: the RPC endpoints, and the
HTTP handlers of later work (import/export, console, RRDs, CLI).

Requests are bounded: an RPC body larger than ``max_rpc_size`` is refused
with 413 before it is read, and the connection is closed.
"""

from twisted.web import resource, server

from txxapi.http.rpc import JSON_PATHS, XML_PATHS, RPCResource

MAX_RPC_SIZE = 300 * 1024   # XAPI's limit for an RPC body
RPC_PATHS = frozenset(XML_PATHS + JSON_PATHS)


class XapiRequest(server.Request):
    max_rpc_size = MAX_RPC_SIZE
    _refused = False

    def gotLength(self, length):
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        command = getattr(self.channel, "_command", b"")
        if command == b"POST" and path in RPC_PATHS and length is not None \
                and length > self.max_rpc_size:
            self._refuse()
            return
        self._rpc_limited = path in RPC_PATHS
        self._received = 0
        server.Request.gotLength(self, length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if getattr(self, "_rpc_limited", False) and \
                self._received > self.max_rpc_size:
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
        if self._refused:
            return
        server.Request.requestReceived(self, command, path, version)


class Root(resource.Resource):
    def __init__(self, server_):
        resource.Resource.__init__(self)
        self.rpc = RPCResource(server_)

    def getChildWithDefault(self, name, request):
        if request.path in RPC_PATHS and request.method in (b"POST",
                                                            b"OPTIONS"):
            return self.rpc
        if request.path == b"/":
            return self
        return resource.Resource.getChildWithDefault(self, name, request)

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        return b"txxapi\n"


def make_site(server_, max_rpc_size=MAX_RPC_SIZE, access_log=False):
    site = server.Site(Root(server_))
    # RPC bodies are XML or JSON, never forms: skip Twisted's form parsing.
    site._parsePOSTFormSubmission = False
    if not access_log:
        site.log = lambda request: None
    site.requestFactory = type("Request", (XapiRequest,),
                               {"max_rpc_size": max_rpc_size})
    site.displayTracebacks = False
    # Idle keep-alive connections are closed after this long.
    site.timeOut = 300
    return site


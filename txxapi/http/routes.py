"""
Which handler a request goes to, decided as XAPI's HTTP server decides it:
per method, the handler whose URI is the longest prefix of the request's
(percent-decoded) path.  So '/import_raw_vdi/' and '/import_raw_vdiX'
reach the import handler, and every POST reaches an RPC endpoint, '/'
being one of them.
"""

from urllib.parse import unquote_to_bytes, urlsplit

XMLRPC = "xmlrpc"
JSONRPC = "jsonrpc"
IMPORT_RAW_VDI = "import_raw_vdi"
EXPORT_RAW_VDI = "export_raw_vdi"
IMPORT = "import"
EXPORT = "export"
IMPORT_METADATA = "import_metadata"
EXPORT_METADATA = "export_metadata"
CONNECT_CONSOLE = "connect_console"
CONNECT_CONSOLE_WS = "connect_console_ws"
CLI = "cli"
RRD_UPDATES = "rrd_updates"
HOST_RRD = "host_rrd"
VM_RRD = "vm_rrd"
SR_RRD = "sr_rrd"
METRICS = "metrics"
PUT_RRD = "rrd"
MIGRATE_MEMORY = "migrate_memory"
RPC = frozenset((XMLRPC, JSONRPC))
CONSOLE = frozenset((CONNECT_CONSOLE, CONNECT_CONSOLE_WS))
RRDS = frozenset((RRD_UPDATES, HOST_RRD, VM_RRD, SR_RRD, METRICS,
                  PUT_RRD))
TRANSFERS = frozenset((IMPORT_RAW_VDI, EXPORT_RAW_VDI, IMPORT, EXPORT,
                       IMPORT_METADATA, EXPORT_METADATA))
# The handlers that read their body as it arrives.
UPLOADS = frozenset((IMPORT_RAW_VDI, IMPORT, IMPORT_METADATA))

IMPORT_PATH = b"/import_raw_vdi"
EXPORT_PATH = b"/export_raw_vdi"

# XAPI's handler URIs (xapi.ml's common_http_handlers) that are served here.
_RPC_URIS = [(b"/", XMLRPC), (b"/RPC2", XMLRPC), (b"/json", XMLRPC),
             (b"/jsonrpc", JSONRPC)]
_TABLE = {
    b"POST": _RPC_URIS + [(b"/cli", CLI)],
    b"OPTIONS": _RPC_URIS,
    b"PUT": [(IMPORT_PATH, IMPORT_RAW_VDI), (b"/import", IMPORT),
             (b"/import_metadata", IMPORT_METADATA),
             (b"/services/xenops/memory/", MIGRATE_MEMORY),
             (b"/rrd", PUT_RRD)],
    b"GET": [(EXPORT_PATH, EXPORT_RAW_VDI), (b"/export", EXPORT),
             (b"/export_metadata", EXPORT_METADATA),
             (b"/console", CONNECT_CONSOLE_WS),
             (b"/rrd_updates", RRD_UPDATES), (b"/host_rrd", HOST_RRD),
             (b"/vm_rrd", VM_RRD), (b"/sr_rrd", SR_RRD),
             (b"/metrics", METRICS)],
    b"CONNECT": [(b"/console", CONNECT_CONSOLE)],
}
# Longest URI first, so the first match is the longest prefix.
for _uris in _TABLE.values():
    _uris.sort(key=lambda entry: -len(entry[0]))


def path_of(uri):
    """The decoded path of a request URI (no query); an absolute URI's
    path too."""
    path = uri.split(b"?", 1)[0]
    if not path.startswith(b"/"):
        path = urlsplit(path).path
    return unquote_to_bytes(path)


def handler_of(method, uri):
    """The name of the handler serving ``method`` on ``uri``, or None."""
    path = path_of(uri)
    for prefix, handler in _TABLE.get(method, ()):
        if path.startswith(prefix):
            return handler
    return None


def handler_of_request(request):
    """The handler of a request, worked out once: XapiRequest records it
    as its header ends (``route``), and every later step reads it."""
    route = getattr(request, "route", None)
    if route is None:
        route = handler_of(request.method, request.uri)
        request.route = route
    return route


def is_transfer_path(uri):
    """Whether the path is one of a data handler's, by any method."""
    return any(handler_of(method, uri) in TRANSFERS
               for method in (b"GET", b"PUT"))

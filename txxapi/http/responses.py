"""
XAPI's canned HTTP responses for its data handlers, byte for byte: the
status lines, header spellings and HTML bodies its HTTP server writes
straight to the socket.  The data paths bypass twisted.web's response
machinery and write these themselves, because XAPI sends the headers of a
transfer before it has read or written any data, and then just closes the
connection.
"""

import html

CONNECTION_CLOSE = ("connection", "close")
NO_CACHE = ("cache-control", "no-cache, no-store")


def _version(request):
    """The version XAPI answers in: 1.1 to 1.1 clients, else 1.0."""
    return "1.1" if getattr(request, "clientproto", b"") == b"HTTP/1.1" \
        else "1.0"


def response(version, code, message, headers=(), body=None):
    """A whole response (XAPI's Http.Response.to_wire_string)."""
    lines = ["HTTP/%s %s %s" % (version, code, message)]
    if body is not None:
        lines.append("content-length: %d" % len(body.encode("utf-8")))
    lines += ["%s: %s" % kv for kv in headers]
    head = "".join(line + "\r\n" for line in lines) + "\r\n"
    return (head + (body or "")).encode("utf-8")


def header_lines(lines):
    """A bare header block (XAPI's Http_svr.headers)."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _error_html(version, code, message, extra_headers, body):
    return response(version, code, message,
                    [("content-type", "text/html"), CONNECTION_CLOSE,
                     NO_CACHE] + list(extra_headers), body)


def unauthorised(version, realm):
    return _error_html(
        version, "401", "Unauthorised",
        [("WWW-Authenticate", 'Basic realm="%s"' % realm)],
        "<html><body><h1>HTTP 401 unauthorised</h1>Please check your "
        "credentials and retry.</body></html>")


def forbidden(version):
    return _error_html(
        version, "403", "Forbidden", [],
        "<html><body><h1>HTTP 403 forbidden</h1>Access to the requested "
        "resource is forbidden.</body></html>")


def internal_error(version, extra=None):
    more = "" if extra is None else \
        "<h1> Additional information </h1>" + html.escape(extra)
    return _error_html(
        version, "500", "Internal Error", [],
        "<html><body><h1>HTTP 500 internal server error</h1>An unexpected "
        "error occurred; please wait a while and try again. If the problem "
        "persists, please contact your support representative." + more +
        "</body></html>")


def request_timeout():
    """What XAPI answers a request whose header is too slow to arrive."""
    return _error_html(
        "1.1", "408", "Request Timeout", [],
        "<html><body><h1>HTTP 408 request timeout</h1>Timed out waiting "
        "for the request.</body></html>")


def service_unavailable(version):
    return _error_html(
        version, "503", "Service Unavailable", [],
        "<html><body><h1>HTTP 503 service unavailable</h1>The server is "
        "temporarily unable to handle the request.</body></html>")


def method_not_implemented(version, method):
    return _error_html(
        version, "501", "Method not implemented", [],
        "<html><body><h1>HTTP 501 Method Not Implemented</h1><p>%s not "
        "supported.<br /></p></body></html>" % html.escape(method))


def not_found(version="1.0"):
    """The bare 404 the import and export handlers send."""
    return header_lines(["HTTP/%s 404 Not Found" % version,
                         "Connection: close",
                         "Cache-Control: no-cache, no-store"])


def bad_request(version="1.1"):
    return header_lines(["HTTP/%s 400 Bad Request" % version,
                         "Connection: close",
                         "Cache-Control: no-cache, no-store"])


def ok_streaming(task, extra=()):
    """The head of a transfer: 200 with the task, no length, closed at the
    end of the data."""
    return header_lines(["HTTP/1.1 200 OK", "Connection: close",
                         "Cache-Control: no-cache, no-store",
                         "task-id:" + task] + list(extra))

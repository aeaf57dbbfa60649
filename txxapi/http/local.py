"""
The local Unix socket's trust, as XAPI gives its /var/lib/xcp/xapi: only
the server's own user can connect to it (mode 0600 in a 0700 data dir),
so a caller there is root on this host.  It still logs in and calls with
a session, but the login checks no password and makes a local
superuser; an HTTP handler asked without credentials runs as a
temporary superuser session.
"""

from twisted.internet.address import UNIXAddress


def is_local(request):
    """Whether the request came in on the local Unix socket."""
    return isinstance(request.getHost(), UNIXAddress)

"""
Which host serves an HTTP data request, chosen as XAPI's handlers choose
it, and the 302 that sends the client there:

* a VDI's import or export, an XVA import into an SR: a host where the SR
  is plugged, this one if it is, else one drawn among the live hosts that
  have it plugged;
* an XVA export: a running (or paused) VM's resident host; otherwise a
  host that has the SR of every disk it streams plugged, this one first;
* a console: the host the VM runs on;
* a VM's RRD: this host while it keeps the VM's live RRD, else the host
  the VM runs on, else this host if it keeps one, else the master (a slave sends it there with
  ``rrd_unarchive``, as XAPI's does, for the RRD kept of a stopped VM).

When no other host qualifies the request is served here, and the
handler's own checks answer it (SR_HAS_NO_PBDS, a halted VM's console).

The Location is the request's path and query on the host's address, in
the request's scheme; cookies are not carried (nor are they by XAPI), so
a client that sent its session in a cookie sends it again.  The query
gains one key, ``redirected``: a request carrying it is served where it
arrives and never sent on, so two hosts whose views of the pool differ
for a moment (a replica a little behind the master) cannot pass a
request back and forth.
"""

import random
from urllib.parse import parse_qsl, urlencode, urlsplit

from txxapi.api.context import Context
from txxapi.errors import XenAPIError
from txxapi.forwarding import hosts
from txxapi.http import responses
from txxapi.http.auth import Refused
from txxapi.values import NULL_REF

HOP_KEY = "redirected"
UNARCHIVE_KEY = "rrd_unarchive"


def _split(request):
    uri = getattr(request.channel, "_path", None) or request.uri
    parts = urlsplit(uri.decode("utf-8", "replace"))
    return parts.path or "/", parse_qsl(parts.query, keep_blank_values=True,
                                        errors="replace")


def location(request, address, extra=()):
    """The URL of the same request on the host at ``address``."""
    path, query = _split(request)
    pairs = [kv for kv in query if kv[0] != HOP_KEY] + list(extra) + \
        [(HOP_KEY, "1")]
    scheme = "https" if request.isSecure() else "http"
    host = "[%s]" % address if ":" in address else address
    return "%s://%s%s?%s" % (scheme, host, path, urlencode(pairs))


def found(request, address, extra=()):
    """XAPI's 302 to the host at ``address``."""
    return responses.header_lines([
        "HTTP/1.1 302 Found", "Connection: close",
        "Cache-Control: no-cache, no-store",
        "Location: " + location(request, address, extra)])


def _context(server, request):
    """A context to choose in; None when the request is served here
    whatever the pool looks like (it was sent here already)."""
    if any(k == HOP_KEY for k, _ in _split(request)[1]):
        return None
    return Context(server)


def _send(ctx, request, host, extra=()):
    if host is not None:
        address = ctx.db.fields("host", host)["address"]
        raise Refused(found(request, address, extra))


def _resident(ctx, vm):
    """The other live host a running or paused VM is resident on."""
    f = ctx.db.fields("VM", vm)
    host = f["resident_on"]
    if f["power_state"] in hosts.RESIDENT_STATES and host != NULL_REF and \
            host != hosts.this_host(ctx) and hosts.is_member(ctx, host):
        return host
    return None


def _seeing(ctx, srs):
    """Another live host with every SR of ``srs`` plugged, when this one
    has not; None otherwise."""
    candidates = None
    for sr in set(srs):
        on = set(hosts.plugged_on(ctx, sr))
        candidates = on if candidates is None else candidates & on
    if not candidates or hosts.this_host(ctx) in candidates:
        return None
    return random.choice(sorted(candidates))


def to_sr(server, request, sr):
    """Refused with the 302 when another host serves the SR's data."""
    ctx = _context(server, request)
    if ctx is not None:
        _send(ctx, request, _seeing(ctx, [sr]))


def to_exporter(server, request, vm, srs):
    """Refused with the 302 when another host exports the VM, whose
    disks are on ``srs``."""
    ctx = _context(server, request)
    if ctx is not None:
        _send(ctx, request, _resident(ctx, vm) or _seeing(ctx, srs))


def to_resident(server, request, vm):
    """Refused with the 302 when the VM runs on another host."""
    ctx = _context(server, request)
    if ctx is not None:
        _send(ctx, request, _resident(ctx, vm))


def to_vm_rrd(server, request, uuid, live_here, kept_here):
    """Refused with the 302 when another host holds the VM's RRD.
    ``live_here``: its domain's RRD is here; ``kept_here``: an RRD of it
    is (one handed here that no sample has taken up yet, one not yet
    archived to the master)."""
    ctx = _context(server, request)
    if ctx is None or live_here or \
            any(k == UNARCHIVE_KEY for k, _ in _split(request)[1]):
        return
    try:
        vm = ctx.db.by_uuid("VM", uuid)
    except XenAPIError:
        vm = None
    host = _resident(ctx, vm) if vm is not None else None
    if host is not None:
        _send(ctx, request, host)
    elif not server.identity.is_master and not kept_here:
        raise Refused(found(request, server.identity.role.master_address,
                            [(UNARCHIVE_KEY, "")]))

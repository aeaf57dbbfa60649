"""
The RRD handlers, answered as xcp-rrdd's (behind XAPI's proxy) answer:

* GET /rrd_updates?start=[&cf=][&interval=][&host=true][&vm_uuid=]...
  [&sr_uuid=]...[&json=]: the rows since ``start`` (negative: before the
  last update) of the host's RRD, the VMs' here (all, or those named) and
  the SRs named; JSON when the Accept header prefers it or a ``json``
  key is present, else XML.  No ``start``: 400.
* GET /host_rrd, /vm_rrd?uuid=, /sr_rrd?uuid=: a whole RRD, JSON when
  the Accept header prefers it or a ``json`` key is present.  No uuid:
  400; an RRD this host does not hold: 404.  A VM's RRD held by
  another host is answered 302 there, as XAPI's rrdd_proxy does: the
  VM's resident host, else the master (txxapi.redirect).  The host's
  RRD, the SRs' and /rrd_updates are this host's: clients ask each host.
* GET /metrics: the newest readings in OpenMetrics text (openmetrics).
* PUT /rrd?uuid=[&archive=]: an RRD another host of the pool sends
  (txxapi.metrics.transfer), and with ``dbsync`` /host_rrd, /vm_rrd and
  /sr_rrd answer what is kept here in the same form.  As XAPI's proxy
  answers: an archive sent to a slave, 302 to the master; a uuid of no
  VM, host or SR, 404; a host's (or an SR's) not to be archived, 400.

Each needs a session allowed ``http/<action>``; a task the client names
in task_id is completed as the answer goes.  /metrics also takes the
server's scrape token (``--metrics-token-file``) as ``Authorization:
Bearer``, so that a scraper needs no account; any other bearer token is
unauthorised.  Documents are made (and encoded) on the
metrics threads.
"""

import hmac
from urllib.parse import parse_qsl, urlsplit

from twisted.internet import defer
from twisted.python import log
from twisted.web import resource, server

from txxapi.http import responses, routes
from txxapi.http.auth import Params, Refused, authenticate, version_of
from txxapi.metrics import openmetrics, transfer
from txxapi.metrics.rrd import CFS, NoArchive
from txxapi.metrics.store import HOST, SR, VM
from txxapi.redirect import owners

CORS = [(b"Access-Control-Allow-Origin", b"*"),
        (b"Access-Control-Allow-Headers", b"X-Requested-With")]
XML_TYPE, JSON_TYPE = b"text/xml", b"application/json"

ACTIONS = {routes.RRD_UPDATES: "rrd_updates", routes.HOST_RRD: "host_rrd",
           routes.VM_RRD: "vm_rrd", routes.SR_RRD: "sr_rrd",
           # The same readings as /rrd_updates, so the same permission.
           routes.METRICS: "rrd_updates", routes.PUT_RRD: "rrd"}
KINDS = {routes.HOST_RRD: HOST, routes.VM_RRD: VM, routes.SR_RRD: SR}


def all_values(request, name):
    """Every value of a repeated query key, in order."""
    query = urlsplit(request.uri.decode("utf-8", "replace")).query
    return [v for k, v in parse_qsl(query, keep_blank_values=True,
                                    errors="replace") if k == name]


def wants_json(request, params):
    """The Accept header's preference between JSON and XML (so */* is
    JSON), else a ``json`` key."""
    accept = (request.getHeader(b"accept") or b"").decode("latin-1")
    best = None
    for item in accept.split(","):
        kind, _, rest = item.strip().partition(";")
        q = 1.0
        for p in rest.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        kind = kind.strip().lower()
        for candidate, is_json in (("application/json", True),
                                   ("text/xml", False)):
            if kind in (candidate, candidate.split("/")[0] + "/*", "*/*") \
                    and q > 0 and (best is None or q > best[0] or
                                   (q == best[0] and is_json)):
                best = (q, is_json)
    return best[1] if best is not None else "json" in params


class BadRequest(Exception):
    pass


class Scraper:
    """The caller a valid scrape token stands for: no session."""

    session = None

    def close(self):
        pass


def bearer_token(request):
    """The token of an ``Authorization: Bearer`` header, else None."""
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def scraper(metrics, token, version):
    """A Scraper for the server's scrape token, else Refused as a request
    without valid credentials is."""
    expected = metrics.scrape_token
    # In constant time, as the pool secret is compared.
    if expected is None or not hmac.compare_digest(
            token.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise Refused(responses.unauthorised(version,
                                             ACTIONS[routes.METRICS]))
    return Scraper()


def updates_query(request, params):
    """(start, interval, cf, host, vm uuids, sr uuids, json) of an
    /rrd_updates request; BadRequest without a usable ``start``."""
    query = params.query
    try:
        start = int(query["start"])
    except (KeyError, ValueError):
        raise BadRequest()
    try:
        interval = max(0, int(query.get("interval", "0")))
    except ValueError:
        interval = 0
    cf = query.get("cf")
    if cf not in CFS:
        cf = None
    host = query.get("host", "").lower() == "true"
    vms = all_values(request, "vm_uuid") or None
    srs = all_values(request, "sr_uuid") or None
    return start, interval, cf, host, vms, srs, wants_json(request, params)


def _exposition(store, host_uuid):
    return openmetrics.render(store.latest(described=True), host_uuid)


def _encoded(fn, *args):
    """``fn(*args)`` in UTF-8 (None stays None): encoded on the metrics
    thread, since a document of 1,000 VMs runs to megabytes."""
    text = fn(*args)
    return None if text is None else text.encode("utf-8")


@defer.inlineCallbacks
def document(metrics, route, request, params, version):
    """(body, content type, whether the connection stays open) of an
    authenticated request; BadRequest, Refused or NoArchive."""
    if route == routes.RRD_UPDATES:
        args = updates_query(request, params)
        body = yield metrics.run(_encoded, metrics.store.updates, *args)
        return body, JSON_TYPE if args[-1] else XML_TYPE, True
    if route == routes.METRICS:
        host = metrics.db.fields("host", metrics.identity.host_ref)["uuid"]
        body = yield metrics.run(_encoded, _exposition, metrics.store,
                                 host)
        return body, openmetrics.CONTENT_TYPE, True
    uuid = params.query.get("uuid")
    dbsync = "dbsync" in params.query and route in KINDS
    if route == routes.PUT_RRD or dbsync:
        return (yield _between_hosts(metrics, route, request, params, uuid,
                                     version))
    json = wants_json(request, params)
    if route != routes.HOST_RRD and not uuid:
        raise BadRequest()
    body = yield metrics.run(_encoded, metrics.store.dump, KINDS[route],
                             uuid, json)
    if body is None:
        raise Refused(responses.not_found(version))
    return body, JSON_TYPE if json else XML_TYPE, False


@defer.inlineCallbacks
def _between_hosts(metrics, route, request, params, uuid, version):
    """PUT /rrd, or a dbsync GET: RRDs to or from another host."""
    if not uuid:
        raise BadRequest()
    host = metrics.db.fields("host", metrics.identity.host_ref)["uuid"]
    handover = metrics.handover
    if route == routes.PUT_RRD:
        archive = "archive" in params.query
        if archive and not metrics.identity.is_master:
            raise Refused(owners.found(
                request, metrics.identity.role.master_address))
        # As XAPI's: a VM's or a host's, and a host's only to keep; an
        # SR's too (a slave's backup), only to keep.
        db = metrics.db
        kind = next((k for k, table in ((VM, "VM"), (HOST, "host"),
                                        (SR, "SR"))
                     if uuid in db.table(table).by_uuid), None)
        if kind is None:
            raise Refused(responses.not_found(version))
        if kind != VM and not archive:
            raise BadRequest()
        content = request.content
        try:
            # Read on the thread too: an RRD runs to hundreds of KiB.
            yield metrics.run(lambda: handover.received(
                kind, uuid, content.read() if content else b"", archive,
                host))
        except ValueError:
            raise BadRequest()
        return b"", transfer.CONTENT_TYPE, False
    body = yield metrics.run(handover.kept, KINDS[route], uuid, host)
    if body is None:
        raise Refused(responses.not_found(version))
    return body, transfer.CONTENT_TYPE, False


class RrdResource(resource.Resource):
    """The four handlers; each request answered by ``serve``."""

    isLeaf = True

    def __init__(self, server_):
        super().__init__()
        self.server = server_

    def render(self, request):
        self.serve(request).addErrback(log.err, "RRD request failed")
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def serve(self, request):
        route = routes.handler_of_request(request)
        version = version_of(request)
        params = Params(request)
        caller = None
        try:
            token = bearer_token(request) if route == routes.METRICS \
                else None
            if token is not None:
                caller = scraper(self.server.metrics, token, version)
            else:
                caller = yield authenticate(self.server, request, params,
                                            ACTIONS[route], ACTIONS[route])
            uuid = params.query.get("uuid")
            if route == routes.VM_RRD and uuid and \
                    "dbsync" not in params.query:
                store = self.server.metrics.store
                live, kept = yield self.server.metrics.run(store.holds_vm,
                                                           uuid)
                owners.to_vm_rrd(self.server, request, uuid, live, kept)
            body, content_type, keep_alive = yield document(
                self.server.metrics, route, request, params, version)
        except Refused as refused:
            self._refuse(request, caller, refused.response)
            return
        except BadRequest:
            self._refuse(request, caller, responses.bad_request(version))
            return
        except NoArchive:
            self._refuse(request, caller, responses.internal_error(
                version, "Rrd.No_RRA_Available"))
            return
        except Exception:
            log.err(None, "RRD request failed")
            self._refuse(request, caller, responses.internal_error(version))
            return
        self._complete_task(params, caller)
        caller.close()
        if getattr(request, "_disconnected", False):
            return
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        for name, value in CORS:
            request.setHeader(name, value)
        if not keep_alive:
            request.setHeader(b"Connection", b"close")
        request.write(body)
        request.finish()

    def _complete_task(self, params, caller):
        """The task the caller named succeeds with the answer (XAPI's
        handlers run as it)."""
        tasks, db = self.server.tasks, self.server.db
        task = params.get("task_id", cookie_first=True)
        if task and db.exists("task", task):
            fields = db.fields("task", task)
            if fields["session"] == caller.session and \
                    fields["status"] == "pending":
                tasks.succeed(task, "")

    @staticmethod
    def _refuse(request, caller, answer):
        if caller is not None:
            caller.close()
        if not getattr(request, "_disconnected", False) and \
                request.channel.transport is not None:
            request.channel.transport.write(answer)
            request.channel.loseConnection()

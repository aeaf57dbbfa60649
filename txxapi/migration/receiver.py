"""
The destination of a migration: PUT /services/xenops/memory/<vm uuid>
(stream.py has the exchange), for pool sessions only (the pool secret,
or a pool session's session_id): any other caller gets 403, as one
without credentials gets 401, except for a VM arriving from another
pool (VM.migrate_send: imported here, Halted and scheduled to be
resident on this host), which the session host.migrate_receive gave may
send; until it is here, a start of it is refused (assert_not_arriving).

Once its replica holds what the master had written when it sent the
call to the source (``generation``), the handler checks the VM (known,
running or paused on another host: else 404 or 409) and answers 200.
The connection is then taken over from twisted.web and spliced to one
end of a socket pair whose other end the backend's migrate_receive
reads, on the bridge's threads, building a paused domain (without the
disks: the source still holds them).  Once the source has let its
domain and disks go, the disks are attached here and plugged, the guest
unpaused (unless it was paused), and the bridge writes the VM's new home
in one refresh; once that is durable, DONE.  On any failure the domain
here is destroyed and its disks let go: nothing is left behind, and the
source, if it still has the domain, keeps running it.
"""

import socket

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.web import resource, server

from txxapi import disks, vmspec
from txxapi.console import relay
from txxapi.errors import XenAPIError
from txxapi.http import responses
from txxapi.http.auth import Params, Refused, authenticate, query_of, \
    version_of
from txxapi.http.routes import path_of
from txxapi.migration import stream
from txxapi.values import NULL_REF
from txxenops.errors import MigrationError

log = Logger()

ACTION = "put_services_xenops"
RECEIVE_TIMEOUT = 600.0
READY = responses.header_lines(["HTTP/1.1 200 OK", "Connection: close",
                                "Cache-Control: no-cache, no-store"])


def _refusal(version, code, message, text):
    return Refused(responses.response(
        version, code, message,
        [responses.CONNECTION_CLOSE, ("content-type", "text/plain")],
        text))


def _error_text(e):
    if isinstance(e, XenAPIError):
        return "%s: [ %s ]" % (e.description[0],
                               "; ".join(e.description[1:]))
    return str(e)


class MemoryReceiver(resource.Resource):
    """The handler, for every method (XAPI's takes only PUT: the route
    says so)."""

    isLeaf = True

    def __init__(self, server_):
        super().__init__()
        self.server = server_

    def render(self, request):
        d = self._serve(request)
        d.addErrback(lambda f: log.failure("migration receiver", f))
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _serve(self, request):
        version = version_of(request)
        caller = None
        try:
            caller = yield authenticate(self.server, request,
                                        Params(request), ACTION, ACTION)
            pool = self.server.db.fields("session", caller.session)["pool"]
            query = query_of(request)
            if pool:
                yield self._caught_up(query)
            vm, arriving = self._vm_of(request, version)
            if not (pool or arriving):
                raise Refused(responses.forbidden(version))
        except Refused as refused:
            if caller is not None:
                caller.close()
            _answer(request, refused.response)
            return
        except Exception as e:
            log.failure("migration receiver", None)
            if caller is not None:
                caller.close()
            _answer(request, responses.internal_error(version, str(e)))
            return
        ctx = self.server.context(session=caller.session)
        local = yield _splice(self.server.reactor, request, caller.close)
        if local is None:
            return
        try:
            yield receive(ctx, vm, local, query.get("paused") == "true",
                          arriving)
        except Exception as e:
            log.info("migration of VM {vm} here failed: {e}", vm=vm,
                     e=_error_text(e))
            yield self.server.xenops.run_blocking(
                _send_quietly, local, stream.error_line(_error_text(e)))
        finally:
            stream.close(local)

    def _caught_up(self, query):
        wait = getattr(self.server.persistence, "caught_up", None)
        try:
            generation = int(query.get("generation", "0"))
        except ValueError:
            generation = 0
        if wait is None or generation <= 0:
            return defer.succeed(None)
        return wait(generation)

    def _vm_of(self, request, version):
        db = self.server.db
        uuid = path_of(request.uri).decode("utf-8", "replace")[
            len(stream.MEMORY_PATH):]
        try:
            vm = db.by_uuid("VM", uuid)
        except XenAPIError:
            raise _refusal(version, "404", "Not Found",
                           "no VM with uuid %s" % uuid)
        f = db.fields("VM", vm)
        if arrival(db, vm, self.server.host_ref):
            return vm, True
        if f["power_state"] not in vmspec.LIVE_STATES or \
                f["resident_on"] in (NULL_REF, self.server.host_ref):
            raise _refusal(version, "409", "Conflict",
                           "VM %s is %s on %s" % (uuid, f["power_state"],
                                                  f["resident_on"]))
        return vm, False


def arrival(db, vm, host):
    """A VM coming from another pool: imported here (Halted), scheduled
    to be resident on this host until its memory arrives, and no
    operation of its under way (a start holds its host so too)."""
    f = db.fields("VM", vm)
    return f["power_state"] == "Halted" and f["resident_on"] == NULL_REF \
        and f["scheduled_to_be_resident_on"] == host \
        and not f["current_operations"]


def assert_not_arriving(db, vm):
    """A VM whose memory is on its way here from another pool is not to
    be started by a client of this pool: refused as XAPI's xenopsd
    refuses it, the incoming domain (paused until its memory is all
    here) being the VM's already."""
    f = db.fields("VM", vm)
    if f["scheduled_to_be_resident_on"] != NULL_REF and \
            arrival(db, vm, f["scheduled_to_be_resident_on"]):
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", "paused")


def _answer(request, response):
    if request.channel.transport is not None:
        request.channel.transport.write(response)
        request.channel.loseConnection()


def _send_quietly(sock, line):
    try:
        stream.send_line(sock, line)
    except OSError:
        pass


@defer.inlineCallbacks
def _splice(reactor, request, on_end):
    """Answer 200, take the connection over and splice it to one end of a
    socket pair; the other end (blocking, for the bridge's threads), or
    None if the source went away."""
    if request.channel.transport is None:
        on_end()
        return None
    mine, theirs = socket.socketpair()
    ready = defer.Deferred()

    class Factory(protocol.Factory):
        def buildProtocol(self, addr):
            side = relay.Side()
            reactor.callLater(0, ready.callback, side)
            return side
    try:
        reactor.adoptStreamConnection(theirs.fileno(), socket.AF_UNIX,
                                      Factory())
    finally:
        theirs.close()  # adopted as a copy
    pair_side = yield ready
    request.channel.transport.write(READY)
    client = relay.Side()
    early = relay.take_over(request, client, on_end)
    relay.join(client, pair_side)
    if early:
        client.dataReceived(early)
    return mine


def receive(ctx, vm, sock, paused, arriving=False):
    """The destination's steps (a Deferred), as one operation of the
    bridge on the VM.  ``arriving``: from another pool, whose disks here
    are all to be plugged."""
    db, server = ctx.db, ctx.server
    xen = server.xenops
    uuid = db.fields("VM", vm)["uuid"]
    spec = vmspec.vm_spec(db, server, vm, with_disks=False)

    def plugged(vbd):
        f = db.fields("VBD", vbd)
        return not f["empty"] if arriving else f["currently_attached"]
    vbds = [v for v in sorted(db.where("VBD", VM=vm),
                              key=lambda r: db.fields("VBD", r)["userdevice"])
            if plugged(v)]
    xen.ensure_metrics(vm)

    @defer.inlineCallbacks
    def steps():
        yield xen.call("migrate_receive", spec, sock, True, RECEIVE_TIMEOUT)
        try:
            yield xen.run_blocking(stream.expect, sock, uuid,
                                   stream.RELEASED)
            for vbd in vbds:
                yield disks.attach_disk(ctx, vbd)
                device = vmspec.vbd_spec(db, server, vbd,
                                         db.fields("VBD", vbd))
                yield xen.call("plug_vbd", uuid, device)
            if not paused:
                yield xen.call("unpause", uuid)
        except BaseException:
            yield xen.call("destroy", uuid)
            for vbd in vbds:
                server.storage.detach_key(vbd)
            raise

    def failed(failure):
        failure.trap(MigrationError)
        source = db.fields("VM", vm)["resident_on"]
        raise XenAPIError("VM_MIGRATE_FAILED", vm, source, server.host_ref,
                          failure.value.reason)
    d = xen.vm_change(vm, steps, cancellable=False, errors=failed)

    def durable(_):
        return server.persistence.wait_durable(db.persistent_generation)
    d.addCallback(durable)
    d.addCallback(lambda _: xen.run_blocking(stream.send_line, sock,
                                             stream.DONE))
    return d

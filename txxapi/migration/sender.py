"""
VM.pool_migrate's local steps, on the host the VM runs on (the master
has made the checks, holds the marks and has the VM scheduled to be
resident on the destination, which reserves its memory there, and
raises VM_MIGRATED afterwards: the route's hold, txxapi.forwarding.
migration, whether the VM runs on the master or elsewhere).

To another host: the stream (stream.py) to the destination's receiver
(receiver.py), the domain sent by the backend, this host's domain and
disks let go, then the destination's word that the guest runs there and
its new home is written; the call answers once this host's database says
the VM is resident there, and its RRD has gone there too.  Until the domain has gone, a failure leaves
the VM running here as it was (VM_MIGRATE_FAILED [vm; source;
destination; reason]); the toolstack treats the whole move as one
operation on the VM, so no moment of it (the domain paused while its
state is sent, gone from here before it runs there) is written.

To this host: XAPI's localhost migration, here a suspend to an image and
a resume from it (a new domain); should the resume fail, the VM is left
Suspended with its image.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.forwarding import remote
from txxapi.impl import vm as vm_impl
from txxapi.migration import checks, stream
from txxenops.errors import MigrationError

log = Logger()

RESIDENT_WAIT = 60.0
MIGRATED_MESSAGE = ("VM_MIGRATED", 5)


def _void(_):
    return ""


def reserve(ctx, vm, host):
    """The VM scheduled to be resident on ``host`` (its memory counted
    there) until the step this answers is made."""
    ctx.db.update("VM", vm, {"scheduled_to_be_resident_on": host})
    return vm_impl.release_reservation(ctx, vm)


def announce(ctx, vm, source, destination):
    """XAPI's VM_MIGRATED message of a move that succeeded (a Deferred;
    a message that cannot be made does not fail the move)."""
    db = ctx.db

    def host(ref):
        return "host '%s' (uuid: %s)" % (db.get("host", ref, "name_label"),
                                        db.get("host", ref, "uuid"))
    name, priority = MIGRATED_MESSAGE
    uuid = db.get("VM", vm, "uuid")
    body = "VM '%s' (uuid: %s) migrated from %s to %s" % (
        db.get("VM", vm, "name_label"), uuid, host(source),
        host(destination))
    d = defer.maybeDeferred(ctx.server.messages.create, name, priority,
                            "VM", uuid, body)
    return d.addErrback(lambda f: log.warn(
        "VM_MIGRATED of {vm} not made: {e}", vm=vm, e=f.getErrorMessage()))


@implements("VM.pool_migrate")
def pool_migrate(ctx, vm, host, options):
    ctx.db.fields("host", host)
    if host == ctx.server.host_ref:
        d = _localhost(ctx, vm, host)
    else:
        d = send(ctx, vm, host, options)
    return d.addCallback(_void)


@defer.inlineCallbacks
def _localhost(ctx, vm, host):
    yield vm_impl.suspend_to(ctx, vm)
    yield vm_impl.resume_from(ctx, vm, False, host)
    return ""


def send(ctx, vm, host, options):
    db, server = ctx.db, ctx.server
    xen = server.xenops
    source = server.host_ref
    f = db.fields("VM", vm)
    uuid = f["uuid"]
    address = checks.destination_address(ctx, host, options)
    forwarded = remote.forwarded_here(ctx)
    params = {
        "paused": "true" if f["power_state"] == "Paused" else "false",
        # What the destination's replica must hold before it reads the VM.
        "generation": str(forwarded["generation"] if forwarded
                          else db.persistent_generation)}

    @defer.inlineCallbacks
    def steps():
        yield hand_over(ctx, vm, address, params, server.pool_secret)
        yield _resident(ctx, vm, host)
        # Its RRD follows it (XAPI's migrate_rrd); this never fails.
        yield server.metrics.handover.migrated(uuid, address)

    def failed(failure):
        failure.trap(MigrationError)
        raise XenAPIError("VM_MIGRATE_FAILED", vm, source, host,
                          failure.value.reason)
    return xen.vm_change(vm, steps, task=ctx.task, errors=failed)


@defer.inlineCallbacks
def hand_over(ctx, vm, address, params, secret):
    """The domain sent to the receiver at ``address`` (with the pool
    ``secret``, or another pool's session in ``params``) and this host's
    hold on it and its disks let go, up to the destination's DONE."""
    server = ctx.server
    xen = server.xenops
    uuid = ctx.db.fields("VM", vm)["uuid"]
    vbds = ctx.db.where("VBD", VM=vm)
    sock = yield xen.run_blocking(stream.connect, address, uuid, params,
                                  secret)
    try:
        yield xen.call("migrate_send", uuid, sock)
        # The domain is the destination's now: let its disks go there.
        for vbd in vbds:
            server.storage.detach_key(vbd)
        yield server.storage.settled()
        yield xen.run_blocking(_released, sock, uuid)
    finally:
        yield xen.run_blocking(stream.close, sock)


def _released(sock, uuid):
    stream.send_line(sock, stream.RELEASED)
    stream.expect(sock, uuid, stream.DONE)


def _resident(ctx, vm, host):
    """Fires once this host's database has the VM on ``host`` (a slave's
    replica gets the destination's write through the master), looked at
    again at each change of the VM's record; MigrationError when not so
    within RESIDENT_WAIT."""
    db, reactor = ctx.db, ctx.server.reactor
    uuid = db.fields("VM", vm)["uuid"]

    def there():
        return db.exists("VM", vm) and \
            db.fields("VM", vm)["resident_on"] == host
    if there():
        return defer.succeed(None)
    d = defer.Deferred()

    def changed(record, cls):
        _gen, _op, table, ref, _fields = record
        if table == "VM" and ref == vm and there() and not d.called:
            # Out of the write (and of the listeners' loop) first.
            reactor.callLater(0, finish, None)

    def finish(result):
        if changed in db.listeners:
            db.listeners.remove(changed)
        if timer.active():
            timer.cancel()
        if d.called:
            return
        if result is None:
            d.callback(None)
        else:
            d.errback(result)
    timer = reactor.callLater(RESIDENT_WAIT, finish, MigrationError(
        uuid, "the destination's record of the VM did not arrive"))
    db.listeners.append(changed)
    return d

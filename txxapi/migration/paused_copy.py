"""
A running VM's disks moved to other SRs of this pool (VM.migrate_send's
vdi_map), on the host it runs on.  XAPI mirrors the disks while the
guest runs; here the guest is paused instead: every disk is copied to
its new SR, then each of the domain's disks is switched to its copy (the
old one unplugged, the VBD pointed at the copy and plugged again), and
the guest runs on.  Only then are the old disks destroyed.  Should a
copy or a switch fail, the switched disks go back to the old ones, the
copies are destroyed and the guest runs on as it was.
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi import disks, vmspec
from txxapi.errors import XenAPIError
from txxapi.values import NULL_REF

log = Logger()


def assert_can_copy_here(ctx, vm, moves):
    """The copies are made where the VM runs: each new SR plugged there."""
    db = ctx.db
    host = db.fields("VM", vm)["resident_on"]
    for _, _, sr in moves:
        if not any(db.fields("PBD", p)["host"] == host and
                   db.fields("PBD", p)["currently_attached"]
                   for p in db.where("PBD", SR=sr)):
            raise XenAPIError(
                "NOT_IMPLEMENTED", "moving a running VM's disk to an SR "
                "its host does not see")


@defer.inlineCallbacks
def _switch(ctx, vm, vbd, vdi):
    """The domain's disk of ``vbd`` replaced by ``vdi``."""
    db, server = ctx.db, ctx.server
    xen = server.xenops
    uuid = db.fields("VM", vm)["uuid"]
    yield xen.call("unplug_vbd", uuid, db.fields("VBD", vbd)["device"], True)
    server.storage.detach_key(vbd)
    yield server.storage.settled()
    db.update("VBD", vbd, {"VDI": vdi})
    yield disks.attach_disk(ctx, vbd)
    yield xen.call("plug_vbd", uuid, vmspec.vbd_spec(
        db, server, vbd, db.fields("VBD", vbd)))


@defer.inlineCallbacks
def move_disks(ctx, vm, moves):
    """``moves``: [(VBD, VDI, new SR)] of the running VM (marked)."""
    server = ctx.server
    xen, calls = server.xenops, server.forwarder.storage
    uuid = ctx.db.fields("VM", vm)["uuid"]
    copies, switched = [], []

    @defer.inlineCallbacks
    def steps():
        yield xen.call("pause", uuid)
        try:
            for _, vdi, sr in moves:
                copies.append((yield server.storage.copy_vdi(
                    ctx, vdi, sr, NULL_REF, NULL_REF, calls)))
            for (vbd, vdi, _), copy in zip(moves, copies):
                yield _switch(ctx, vm, vbd, copy)
                switched.append((vbd, vdi))
        except BaseException:
            yield _undo(ctx, vm, switched, copies)
            raise
        finally:
            yield xen.call("unpause", uuid)
    yield xen.vm_change(vm, steps, task=ctx.task)
    for _, vdi, _ in moves:
        yield calls.destroy_vdi(ctx, vdi)


@defer.inlineCallbacks
def _undo(ctx, vm, switched, copies):
    for vbd, vdi in reversed(switched):
        try:
            yield _switch(ctx, vm, vbd, vdi)
        except Exception as e:
            log.warn("VBD {vbd} not switched back: {e}", vbd=vbd, e=e)
    for copy in copies:
        try:
            yield ctx.server.forwarder.storage.destroy_vdi(ctx, copy)
        except Exception as e:
            log.warn("copy {vdi} not destroyed: {e}", vdi=copy, e=e)

"""
A running VM's disks moved to other SRs of this pool (VM.migrate_send's
vdi_map), on the host it runs on.  XAPI mirrors each disk: a snapshot's
data copied while the guest runs, its new writes sent to both sides.
Here there is no synchronous mirror; instead a pre-copy:

1. each disk snapshotted, and the snapshot copied to the new SR while
   the guest runs on (the snapshot does not change);
2. the guest paused, and only the blocks where the disk now differs from
   its snapshot (what the guest wrote meanwhile) copied onto the copy;
3. each of the domain's disks switched to its copy (the old one
   unplugged, the VBD pointed at the copy and plugged again), the guest
   unpaused; then the old disks and the snapshots destroyed.

Should a copy or a switch fail, the switched disks go back to the old
ones, the copies and snapshots are destroyed and the guest runs on as it
was.
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
def destroy_quietly(ctx, vdis, what):
    for vdi in vdis:
        try:
            yield ctx.server.forwarder.storage.destroy_vdi(ctx, vdi)
        except Exception as e:
            log.warn("{what} {vdi} not destroyed: {e}", what=what, vdi=vdi,
                     e=e)


@defer.inlineCallbacks
def move_disks(ctx, vm, moves):
    """``moves``: [(VBD, VDI, new SR)] of the running VM (marked)."""
    server = ctx.server
    xen, calls = server.xenops, server.forwarder.storage
    storage = server.storage
    uuid = ctx.db.fields("VM", vm)["uuid"]
    snapshots, copies, switched = [], [], []

    @defer.inlineCallbacks
    def steps():
        yield xen.call("pause", uuid)
        try:
            for (_, vdi, sr), snapshot, copy in zip(moves, snapshots,
                                                    copies):
                yield storage.copy_vdi(ctx, vdi, sr, snapshot, copy, calls)
            for (vbd, vdi, _), copy in zip(moves, copies):
                yield _switch(ctx, vm, vbd, copy)
                switched.append((vbd, vdi))
        except BaseException:
            for vbd, vdi in reversed(switched):
                try:
                    yield _switch(ctx, vm, vbd, vdi)
                except Exception as e:
                    log.warn("VBD {vbd} not switched back: {e}", vbd=vbd,
                             e=e)
            raise
        finally:
            yield xen.call("unpause", uuid)
    try:
        for _, vdi, sr in moves:
            snapshots.append((yield calls.snapshot_vdi(ctx, vdi)))
            copies.append((yield storage.copy_vdi(
                ctx, snapshots[-1], sr, NULL_REF, NULL_REF, calls)))
        yield xen.vm_change(vm, steps, task=ctx.task)
    except BaseException:
        yield destroy_quietly(ctx, copies, "copy")
        raise
    finally:
        yield destroy_quietly(ctx, snapshots, "snapshot")
    for _, vdi, _ in moves:
        yield calls.destroy_vdi(ctx, vdi)

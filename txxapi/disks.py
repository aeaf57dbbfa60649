"""
The seam between the VM lifecycle and the storage layer: everything a VM
operation needs from disks goes through the hooks below, which call the
storage component (txxapi.storage).  Each returns a Deferred, except
vdi_path, which answers from what attach_disks / attach_disk attached.

A VBD's disk is attached for the VBD (the claim's key is the VBD ref)
before its domain or hot-plug is built; the storage component lets go of
it when the device goes away (VM halted or suspended, VBD unplugged or
destroyed).  release_disks undoes an attach whose start never happened.
Suspend images are VDIs too (txxapi.suspend_images).
"""

from twisted.internet import defer

from txxapi.errors import XenAPIError
from txxapi.values import NULL_REF


# --- disks (the storage layer's job) ---------------------------------------

def vdi_path(server, vdi):
    """The local path of an attached, activated VDI, for the backend."""
    path = server.storage.path_of(vdi)
    if path is None:
        raise XenAPIError("INTERNAL_ERROR", "VDI %s is not attached" % vdi)
    return path


def attach_disk(ctx, vbd, vdi=None):
    """Attach the VDI of ``vbd`` (or ``vdi``, a CD being inserted) for
    it, after XAPI's sharing checks (VDI_IN_USE, VDI_READONLY)."""
    db, storage = ctx.db, ctx.server.storage
    f = db.fields("VBD", vbd)
    vdi = vdi or f["VDI"]
    if vdi == NULL_REF or (f["empty"] and vdi == f["VDI"]) or \
            storage.attached_for(vdi, vbd):
        return defer.succeed(None)
    writable = f["mode"] == "RW"
    storage.assert_attachable(vdi, vbd, writable)
    return storage.attach(vdi, writable, vbd,
                          tracked=storage.guest_writes is not None)


@defer.inlineCallbacks
def with_disks(ctx, vm, build):
    """Attach the disks of every VBD of the VM, then ``build()`` (a
    Deferred: the domain); if either fails, the disks are let go."""
    try:
        for vbd in ctx.db.where("VBD", VM=vm):
            yield attach_disk(ctx, vbd)
        result = yield build()
    except Exception:
        for vbd in ctx.db.where("VBD", VM=vm):
            ctx.server.storage.detach_key(vbd)
        raise
    return result


@defer.inlineCallbacks
def with_disk(ctx, vbd, build, vdi=None):
    """attach_disk, then ``build()`` (a Deferred: the device); if that
    fails, a disk attached here is let go."""
    storage = ctx.server.storage
    target = vdi or ctx.db.fields("VBD", vbd)["VDI"]
    fresh = not storage.attached_for(target, vbd)
    yield attach_disk(ctx, vbd, vdi)
    try:
        result = yield build()
    except Exception:
        if fresh:
            storage.detach_key(vbd, keep=None if vdi is None else
                               ctx.db.fields("VBD", vbd)["VDI"])
        raise
    return result


def clone_disk(ctx, vdi):
    """VM.clone: a new VDI sharing ``vdi``'s data (copy on write)."""
    return ctx.server.forwarder.storage.clone_vdi(ctx, vdi)


def copy_disk(ctx, vdi, sr):
    """VM.copy: a full copy of ``vdi`` into ``sr`` (NULL: the same SR)."""
    if sr == NULL_REF:
        sr = ctx.db.fields("VDI", vdi)["SR"]
    return ctx.server.forwarder.storage.copy_vdi(ctx, vdi, sr)


def snapshot_disk(ctx, vdi):
    """VM.snapshot/checkpoint: a read-only snapshot VDI of ``vdi``."""
    return ctx.server.forwarder.storage.snapshot_vdi(ctx, vdi)


def destroy_disk(ctx, vdi):
    """Undo a clone/copy/snapshot that failed half way, or VM.revert
    replacing the disks it reverts."""
    return ctx.server.forwarder.storage.destroy_vdi(ctx, vdi)


def create_disk(ctx, sr, size, name_label, vdi_type):
    """VM.provision: a new empty VDI of ``size`` bytes in ``sr``."""
    return ctx.server.forwarder.storage.create_vdi(
        ctx, sr, size, name_label, vdi_type=vdi_type)


def provision_sr(ctx, sr_uuid):
    """The SR a provision <disk sr="..."/> names: by uuid, else the
    pool's default SR."""
    db = ctx.db
    if sr_uuid:
        return db.by_uuid("SR", sr_uuid)
    sr = db.fields("pool", ctx.server.pool_ref)["default_SR"]
    if not db.exists("SR", sr):
        raise XenAPIError("DEFAULT_SR_NOT_FOUND", sr)
    return sr

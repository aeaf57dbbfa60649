"""
Suspend images as XAPI keeps them: a VDI of type ``suspend`` ("Suspend
image") on the suspend SR, referenced by VM.suspend_VDI while the VM is
Suspended.

The backend sees the image only as a stream (a pipe's file descriptor,
txxenops never knowing about storage); here the other end of the pipe is
pumped into or out of the VDI's raw view through txstorage's staged
writer and readers, one piece at a time (constant memory), on threads:
the pump on a thread of its own, the backend call on the xenops pool.  A
suspend commits the image before the VM is marked Suspended; a failed one
destroys the VDI it made.
"""

import os
import threading

from twisted.internet import defer
from twisted.logger import Logger

from txstorage import transfer
from txstorage.errors import StorageError
from txxapi.errors import XenAPIError
from txxapi.values import NULL_REF

log = Logger()

IMAGE_NAME = "Suspend image"
# XAPI's sizing: static_max with 20% and 5% headroom, plus 100 MiB.
EXTRA_BYTES = 100 << 20
PIECE = 4 << 20
# sm_config keys XAPI gives a suspend VDI: the VM it is for, and the
# allocation a thin SR should make at once (the whole image).
VM_HINT = "vmhint"
INITIAL_ALLOCATION = "initial_allocation"


def image_size(vm):
    """The virtual size of the suspend VDI of VM record ``vm``."""
    return int(vm["memory_static_max"] * 1.2 * 1.05) + EXTRA_BYTES


def choose_sr(ctx, vm_ref, host):
    """XAPI's choice: the VM's suspend_SR, else the pool's
    suspend_image_SR, else the host's suspend_image_sr, the first that
    exists and has a PBD on ``host``; VM_NO_SUSPEND_SR if none does."""
    db = ctx.db
    vm = db.fields("VM", vm_ref)
    pool = db.fields("pool", ctx.server.pool_ref)
    candidates = (vm["suspend_SR"], pool["suspend_image_SR"],
                  db.fields("host", host)["suspend_image_sr"])
    for sr in candidates:
        if sr != NULL_REF and db.exists("SR", sr) and any(
                db.fields("PBD", p)["host"] == host
                for p in db.where("PBD", SR=sr)):
            return sr
    raise XenAPIError("VM_NO_SUSPEND_SR", vm_ref)


@defer.inlineCallbacks
def create(ctx, vm_ref, host):
    """A new, empty suspend VDI for the VM (a Deferred of its ref)."""
    sr = choose_sr(ctx, vm_ref, host)
    vm = ctx.db.fields("VM", vm_ref)
    size = image_size(vm)
    try:
        vdi = yield ctx.server.forwarder.storage.create_vdi(
            ctx, sr, size, IMAGE_NAME, IMAGE_NAME, vdi_type="suspend",
            sm_config={VM_HINT: vm["uuid"], INITIAL_ALLOCATION: str(size)})
    except XenAPIError as e:
        # XAPI turns the SM's "insufficient space" into this; a file SR
        # says SR_FULL for the same thing.
        if e.code in ("SR_BACKEND_FAILURE_44", "SR_FULL"):
            raise XenAPIError("SR_SUSPEND_SPACE_INSUFFICIENT", sr)
        raise
    return vdi


def destroy(ctx, vdi):
    """Destroy a suspend VDI (a Deferred); one already gone is fine."""
    if not ctx.db.exists("VDI", vdi):
        return defer.succeed(None)
    return ctx.server.forwarder.storage.destroy_vdi(ctx, vdi)


def destroy_quietly(ctx, vdi):
    """destroy, for clean-up: a failure is logged, not raised."""
    d = defer.maybeDeferred(destroy, ctx, vdi)
    d.addErrback(lambda f: log.warn("destroying suspend VDI {vdi}: {error}",
                                    vdi=vdi, error=f.getErrorMessage()))
    return d


def orphans(db):
    """Suspend VDIs made for a VM (vmhint) that no VM refers to: what a
    suspend, checkpoint or copy cut off by the process's end left."""
    used = {db.fields("VM", vm)["suspend_VDI"] for vm in db.refs("VM")}
    return [vdi for vdi in db.where("VDI", type="suspend")
            if vdi not in used and db.fields("VDI", vdi)["managed"]
            and VM_HINT in db.fields("VDI", vdi)["sm_config"]]


@defer.inlineCallbacks
def discard_orphans(ctx):
    """At start: destroy the orphans (failures are logged)."""
    for vdi in orphans(ctx.db):
        log.info("destroying suspend VDI {vdi}: no VM refers to it",
                 vdi=vdi)
        yield destroy_quietly(ctx, vdi)


@defer.inlineCallbacks
def attached(ctx, vdi, writable, use):
    """``use(attach_info)`` (a Deferred) with the VDI attached for it."""
    storage = ctx.server.storage
    key = "suspend/" + vdi
    info = yield storage.attach(vdi, writable, key)
    try:
        result = yield use(info)
    finally:
        yield storage.detach(vdi, key)
    return result


# --- the blocking halves: run on the xenops pool -----------------------------

class _Pump(threading.Thread):
    """Runs ``fn`` on a thread of its own and keeps what it raised."""

    def __init__(self, fn, *args):
        threading.Thread.__init__(self, name="suspend-image", daemon=True)
        self._fn, self._args = fn, args
        self.error = None

    def run(self):
        try:
            self._fn(*self._args)
        except BaseException as e:
            self.error = e


def _into_vdi(fd, writer):
    """Copy the stream on ``fd`` into the writer from offset 0, in
    pieces of PIECE bytes; closes ``fd`` (so the backend's writes fail
    at once if this does)."""
    buf = bytearray(PIECE)
    view = memoryview(buf)
    offset = 0
    try:
        while True:
            filled = 0
            while filled < PIECE:
                n = os.readv(fd, [view[filled:]])
                if not n:
                    break
                filled += n
            if filled:
                writer.pwrite(offset, view[:filled])
                offset += filled
            if filled < PIECE:
                return offset
    finally:
        os.close(fd)


def _out_of_vdi(reader, fd, size):
    """Feed the VDI's data to ``fd`` until the reader (the backend) has
    what it wanted and closes its end, or the VDI ends; closes ``fd``."""
    try:
        for offset in range(0, size, PIECE):
            view = memoryview(reader.pread(offset, min(PIECE, size - offset)))
            while view:
                view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def _image_error(e):
    if isinstance(e, StorageError):
        return XenAPIError("VDI_IO_ERROR", "Device I/O errors", str(e))
    return e


def storage_errors(failure):
    """Errback: a storage failure under a suspend or resume (opening the
    VDI's data) as XAPI reports I/O errors."""
    if failure.check(StorageError):
        raise _image_error(failure.value)
    return failure


def save(backend, uuid, attach_info, timeout):
    """Blocking: suspend the VM's domain into the attached VDI and commit
    the image.  On failure the VDI's content is left as it was."""
    writer = transfer.open_raw_writer(attach_info)
    try:
        r, w = os.pipe()
        pump = _Pump(_into_vdi, r, writer)
        pump.start()
        try:
            backend.suspend(uuid, w, timeout)
        except BaseException:
            os.close(w)
            pump.join()
            # The pump's failure is the cause of the backend's, if any.
            if pump.error is not None:
                raise _image_error(pump.error)
            raise
        os.close(w)
        pump.join()
        if pump.error is not None:
            raise _image_error(pump.error)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def restore(backend, spec, attach_info, paused):
    """Blocking: resume the VM from the image in the attached VDI."""
    reader = transfer.open_raw_reader(attach_info)
    try:
        r, w = os.pipe()
        pump = _Pump(_out_of_vdi, reader, w, reader.size)
        pump.start()
        try:
            return backend.resume(spec, r, paused)
        except BaseException:
            os.close(r)
            r = None
            pump.join()
            if pump.error is not None:
                raise _image_error(pump.error)
            raise
        finally:
            if r is not None:
                os.close(r)
            pump.join()
    finally:
        reader.close()

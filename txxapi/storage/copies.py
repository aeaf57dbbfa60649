"""
VDI copies (VDI.copy, and the disks of VM.copy): the data goes through the
staged writer on the storage pool, whole or as the blocks that differ from
a base, with task progress and cancellation.
"""

import threading
import time

from twisted.internet import defer
from twisted.logger import Logger

from txstorage import transfer, vhd
from txstorage.errors import StorageError
from txxapi.errors import XenAPIError
from txxapi.values import new_uuid

log = Logger()

# The piece size of copies.
COPY_PIECE = 4 << 20
PROGRESS_INTERVAL = 1.0


class Copies:
    """VDI.copy's data movement."""

    def assert_can_copy(self, vdi, sr, into_vdi):
        """What VDI.copy refuses before it is marked."""
        db = self.db
        db.fields("VDI", vdi)
        self.assert_managed(vdi)
        if not db.exists("VDI", into_vdi):
            db.fields("SR", sr)

    def copy_vdi(self, ctx, vdi, sr, base_vdi, into_vdi, calls):
        """VDI.copy: ``vdi``'s data into ``into_vdi``, or into a new VDI in
        ``sr``; with ``base_vdi``, only the blocks that differ from it (the
        target already holds the base's data).  A Deferred of the target's
        ref; a VDI created here is destroyed again if the copy fails.
        ``calls`` creates and destroys that VDI, marked as the API's calls
        are (the forwarding layer's storage calls)."""
        db = self.db
        src = db.fields("VDI", vdi)
        into = into_vdi if db.exists("VDI", into_vdi) else None
        base = base_vdi if db.exists("VDI", base_vdi) else None

        @defer.inlineCallbacks
        def body():
            created = None
            try:
                if into is None:
                    created = yield calls.create_vdi(
                        ctx, sr, src["virtual_size"], src["name_label"],
                        src["name_description"], src["type"],
                        src["sharable"], False, src["other_config"],
                        src["xenstore_data"], {}, src["tags"])
                    db.update("VDI", created,
                              {"allow_caching": src["allow_caching"]})
                dst = into or created
                d = db.fields("VDI", dst)
                if d["read_only"]:
                    raise XenAPIError("VDI_READONLY", dst)
                if d["virtual_size"] < src["virtual_size"]:
                    raise XenAPIError("VDI_TOO_SMALL", dst,
                                      str(src["virtual_size"]))
                yield self._copy_data(ctx, vdi, dst, base)
                yield self.refresh_vdi(dst)
                yield self._refresh_sizes(db.fields("VDI", dst)["SR"])
                return dst
            except Exception:
                if created is not None and db.exists("VDI", created):
                    log.info("copy failed: destroying the VDI it made")
                    try:
                        yield calls.destroy_vdi(ctx, created)
                    except Exception as e:
                        log.warn("cleaning up {vdi}: {error}", vdi=created,
                                 error=e)
                raise
        return body()

    @defer.inlineCallbacks
    def _copy_data(self, ctx, src, dst, base):
        key = "copy/" + new_uuid()
        uses = [(src, False), (dst, True)] + ([(base, False)] if base else [])
        self.assert_free(dst, True)
        infos = []
        cancelled = threading.Event()
        if ctx.task is not None:
            self.tasks.set_canceller(ctx.task, cancelled.set)
        try:
            for vdi, writable in uses:
                infos.append((yield self.attach(vdi, writable, key)))
            progress = self._progress_reporter(ctx)
            yield self.run(_copy_blocking, infos[0], infos[1],
                           infos[2] if base else None, progress, cancelled)
        except _Cancelled:
            raise XenAPIError("TASK_CANCELLED", ctx.task or "")
        except StorageError as e:
            raise XenAPIError("VDI_IO_ERROR", "Device I/O errors", str(e))
        finally:
            if ctx.task is not None:
                self.tasks.clear_canceller(ctx.task)
            for vdi, _ in uses:
                try:
                    yield self.detach(vdi, key)
                except Exception as e:
                    log.warn("releasing {vdi}: {error}", vdi=vdi, error=e)

    def _progress_reporter(self, ctx):
        """A thread-safe callable(fraction) that sets the task's progress
        at most every PROGRESS_INTERVAL seconds."""
        if ctx.task is None:
            return lambda fraction: None
        last = [0.0]
        reactor = self.clock

        def report(fraction):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                reactor.callFromThread(self.tasks.set_progress,
                                       ctx.task, min(fraction, 0.99))
        return report



class _Cancelled(Exception):
    pass


def _copy_blocking(src, dst, base, progress, cancelled):
    """Copy src's data into dst (AttachInfos) through the staged writer;
    with base, only the blocks where src differs from base."""
    reader = transfer.open_raw_reader(src)
    base_reader = transfer.open_raw_reader(base) if base else None
    try:
        with transfer.open_raw_writer(dst) as writer:
            if base is None:
                extents = transfer.allocated_extents(src, reader.entries)
                pos = 0
                for start, length in extents + [(reader.size, 0)]:
                    if start > pos:
                        writer.write_zeroes(pos, start - pos)
                    end = min(start + length, reader.size)
                    for off in range(start, end, COPY_PIECE):
                        if cancelled.is_set():
                            raise _Cancelled()
                        writer.pwrite(off, reader.pread(
                            off, min(COPY_PIECE, end - off)))
                        progress(off / max(1, reader.size))
                    pos = max(pos, end)
            else:
                size = vhd.DEFAULT_BLOCK_SIZE
                blocks = transfer.candidate_blocks(
                    src, base, size, reader.entries, base_reader.entries)
                pairs = zip(blocks, reader.iter_blocks(blocks, size),
                            base_reader.iter_blocks(blocks, size))
                for n, (idx, mine, theirs) in enumerate(pairs):
                    if cancelled.is_set():
                        raise _Cancelled()
                    if mine != theirs[:len(mine)]:
                        writer.pwrite(idx * size, mine)
                    progress(n / max(1, len(blocks)))
    finally:
        reader.close()
        if base_reader is not None:
            base_reader.close()

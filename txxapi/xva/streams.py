"""
The two directions of an XVA, as the HTTP data paths drive them.

ExportStream (GET /export): next_batch()/close() as a VDI download's
session, so the push producer of /export_raw_vdi sends it.  ova.xml is
built on the reactor from the database; each disk is an ExportSession of
the storage component whose stream is that disk's chunk members, read
on the storage pool; compression runs there too.

ImportStream (PUT /import): feed()/commit()/abort() as an upload's
session, so the flow-controlled upload of /import_raw_vdi feeds it.  The
bytes are decompressed, cut into tar members, checksummed and written on
the storage pool; when ova.xml is in, the objects are made on the
reactor (txxapi.xva.restore) and each disk opens an ImportSession that
stages its data until commit.  Any failure (a bad checksum, a damaged or
short archive, a full SR, a client gone) aborts the sessions and undoes
the objects: no VM, no VDI is left.
"""

import time

from twisted.internet import defer
from twisted.logger import Logger

from txxapi.errors import XenAPIError
from txxapi.wire.xmlrpc import decode_value
from txxapi.wire.errors import MalformedRequest
from txxapi.xva import chunks, codecs, ova, tar
from txxapi.xva.restore import Restore

log = Logger()

# Largest tar member accepted (ova.xml of a large metadata export; chunks
# are 1 MiB).
MAX_MEMBER = 64 << 20


def disks_to_stream(db, walk, vm, preserve_power_state):
    """(export id, VDI, size) of the disks an export streams, in the
    order XAPI streams them (by export id, as text)."""
    vdis = []
    for vbd in db.where("VBD", VM=vm):
        f = db.fields("VBD", vbd)
        if f["type"] != "CD" and not f["empty"]:
            vdis.append(f["VDI"])
    f = db.fields("VM", vm)
    if f["power_state"] == "Suspended" and preserve_power_state:
        vdis.insert(0, f["suspend_VDI"])
    out = []
    for vdi in vdis:
        if vdi not in walk.ids or not db.exists("VDI", vdi):
            continue
        sr = db.fields("VDI", vdi)["SR"]
        if db.fields("SR", sr)["content_type"] == "iso":
            continue
        out.append((walk.ids[vdi][1], vdi,
                    db.fields("VDI", vdi)["virtual_size"]))
    return sorted(set(out))


def metadata_tar(doc):
    return tar.member(ova.FILENAME, doc, int(time.time())) + \
        tar.END_OF_ARCHIVE


class ExportStream:
    """The bytes of a full export, a batch at a time."""

    def __init__(self, storage, head, disks, algorithm):
        self.storage = storage
        self._head = head
        self._disks = disks           # [(export id, VDI, size)]
        self._sessions = []
        self._next = 0
        self._compressor = codecs.compressor(algorithm)
        self._compressing = algorithm is not None
        self._ended = False
        self.released = defer.Deferred()
        self.size = sum(size for _, _, size in disks)

    @defer.inlineCallbacks
    def open(self):
        """Claim every disk for reading (VDI_IN_USE if one is written)."""
        try:
            for xid, vdi, size in self._disks:
                session = yield self.storage.open_export(
                    vdi, "raw", stream=_members_of(xid, size))
                self._sessions.append(session)
        except Exception:
            yield self.close()
            raise
        return self

    @defer.inlineCallbacks
    def next_batch(self):
        pieces = []
        if self._head is not None:
            pieces, self._head = [self._head], None
        while not pieces and self._next < len(self._sessions):
            session = self._sessions[self._next]
            pieces = yield session.next_batch()
            if not pieces:
                yield session.close()
                self._next += 1
        if not pieces and not self._ended:
            self._ended = True
            pieces = [tar.END_OF_ARCHIVE]
            if self._compressing:
                pieces = yield self.storage.run(self._compress, pieces,
                                                True)
            return pieces
        if pieces and self._compressing:
            pieces = yield self.storage.run(self._compress, pieces, False)
        return pieces

    def _compress(self, pieces, last):
        out = self._compressor.compress(b"".join(pieces))
        if last:
            out += self._compressor.flush()
        return [out] if out else [b""]

    @defer.inlineCallbacks
    def close(self):
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            try:
                yield session.close()
            except Exception as e:
                log.warn("closing an export: {error}", error=e)
        if not self.released.called:
            self.released.callback(None)

    abort = close


def _members_of(xid, size):
    return lambda info: chunks.members(info, xid, size)


class ImportStream:
    """An XVA being uploaded; ``metadata``: only ova.xml is read (PUT
    /import_metadata), the VDIs are found, not made; ``dry_run`` (with
    ``metadata``): the objects are checked, none made."""

    def __init__(self, ctx, sr, restore=False, force=False, metadata=False,
                 vdi_map=None, live=False, dry_run=False):
        self.ctx = ctx
        self.storage = ctx.server.storage
        self.sr = sr
        self.restore_flag = restore
        self.force = force
        self.metadata = metadata
        self.vdi_map = vdi_map
        self.live = live
        self.dry_run = dry_run
        self._decoder = codecs.Decoder()
        self._tar = tar.TarReader(MAX_MEMBER)
        self._state = "ova"           # -> "disks" -> "table" -> "done"
        self.header = None
        self.restore = None
        self._sinks = []              # [(DiskSink, ImportSession)]
        self._current = 0
        self._busy = None
        self._aborted = False
        self._closed = False

    # --- the storage pool's side ---------------------------------------------

    def _parse(self, pieces, final):
        """Decode and cut what came; returns the header when ova.xml is
        complete (the reactor makes the objects before going on)."""
        try:
            for piece in pieces:
                for plain in self._decoder.decode(piece):
                    self._take(plain)
            if final:
                for plain in self._decoder.finish():
                    self._take(plain)
            self._drain()
            return self._state == "objects"
        except tar.TarError as e:
            raise XenAPIError("IMPORT_ERROR", "Invalid XVA file: %s" % e)
        except codecs.DecodeError as e:
            raise XenAPIError("IMPORT_ERROR", "Invalid XVA file: %s" % e)

    def _take(self, plain):
        if self._state == "done":
            return      # what follows the last member is not ours
        self._tar.feed(plain)
        self._drain()

    def _drain(self):
        """Take the members buffered, until the reactor must act (the
        objects of ova.xml are to be made) or more bytes are needed."""
        while self._state not in ("done", "objects"):
            got = self._tar.next()
            if got is None:
                return
            name, data = got
            if data is None:
                if self._state == "ova":
                    raise XenAPIError("IMPORT_ERROR_PREMATURE_EOF")
                return      # end of archive: commit() judges it
            if self._state == "ova":
                if name != ova.FILENAME:
                    raise XenAPIError("IMPORT_ERROR_UNEXPECTED_FILE",
                                      ova.FILENAME, name)
                self.header = ova.parse(data)
                self._state = "objects"
            elif self._state == "disks":
                self._disk_member(name, data)
            else:
                self._checksum_table(data)

    def _disk_member(self, name, data):
        sink, session = self._sinks[self._current]
        writes = sink.take(name, data)
        if writes:
            session.write_blocking(writes)
        if sink.complete:
            self._current += 1
            self._after_disks()

    def _after_disks(self):
        if self._current < len(self._sinks):
            return
        # Exports before export_vsn 2 end with a table of the checksums.
        self._state = "table" if self.header.export_vsn < 2 else "done"

    def _checksum_table(self, data):
        try:
            table = decode_value(data)
        except MalformedRequest as e:
            raise XenAPIError("IMPORT_ERROR", "checksum table: %s" % e)
        if not isinstance(table, dict):
            raise XenAPIError("IMPORT_ERROR", "checksum table: not a map")
        for sink, _ in self._sinks:
            for name, computed in sink.computed.items():
                given = str(table.get(name, ""))
                if given.lower() != computed.lower() and not self.force:
                    raise XenAPIError("IMPORT_ERROR_SOME_CHECKSUMS_FAILED")
        self._state = "done"

    # --- the reactor's side ---------------------------------------------------

    def _track(self, d):
        self._busy = d

        def idle(result):
            if self._busy is d:
                self._busy = None
            return result
        return d.addBoth(idle)

    def _step(self, pieces, final=False):
        if self._aborted:
            return defer.fail(XenAPIError("TASK_CANCELLED", self.ctx.task))
        d = self.storage.run(self._parse, pieces, final)

        def parsed(needs_objects):
            if not needs_objects:
                return None
            return self._make_objects().addCallback(
                lambda _: self._step([], final))
        return d.addCallback(parsed)

    def feed(self, pieces):
        return self._track(self._step(pieces))

    @defer.inlineCallbacks
    def _make_objects(self):
        ctx = self.ctx
        ova.assert_compatible(ctx.db, ctx.server.host_ref, self.header)
        self.restore = Restore(ctx, self.header, self.sr, self.restore_flag,
                               self.force, self.vdi_map, self.live,
                               self.dry_run)
        yield self.restore.create()
        if ctx.task is not None and ctx.db.exists("task", ctx.task):
            other = dict(ctx.db.fields("task", ctx.task)["other_config"])
            other["object_creation"] = "complete"
            ctx.db.update("task", ctx.task, {"other_config": other})
        if self.metadata:
            self._state = "done"
            return
        for xid, vdi, size in sorted(self.restore.disks):
            if self._aborted:
                raise XenAPIError("TASK_CANCELLED", ctx.task)
            session = yield self.storage.open_import(vdi, "raw")
            self._sinks.append((chunks.DiskSink(xid, size, self.force),
                                session))
            if self._aborted:
                break
        self._state = "disks"
        # A disk of no bytes has no chunks at all.
        while self._current < len(self._sinks) and \
                self._sinks[self._current][0].complete:
            self._current += 1
        self._after_disks()

    def commit(self):
        """The body is all in: the import must be complete.  A Deferred
        of the VMs made."""
        d = self._track(self._step([], final=True))
        d.addCallback(lambda _: self._commit())
        d.addErrback(self._undo_then)
        return d

    @defer.inlineCallbacks
    def _commit(self):
        if self._state != "done":
            raise XenAPIError("IMPORT_ERROR_PREMATURE_EOF")
        self.ctx.check_cancelled()
        sinks, self._sinks = self._sinks, []
        try:
            while sinks:
                _, session = sinks[0]
                yield session.commit()
                sinks.pop(0)
        except Exception:
            self._sinks = sinks
            raise
        self._closed = True
        return self.restore.finish()

    def _undo_then(self, failure):
        return self._cleanup().addCallback(lambda _: failure)

    def abort(self):
        """Stop and undo everything (the client went away, a failure)."""
        self._aborted = True
        busy = self._busy
        if busy is None:
            return self._cleanup()
        waiter = defer.Deferred()

        def then(result):
            waiter.callback(None)
            return result
        busy.addBoth(then)
        return waiter.addCallback(lambda _: self._cleanup())

    @defer.inlineCallbacks
    def _cleanup(self):
        if self._closed:
            return
        self._closed = True
        sinks, self._sinks = self._sinks, []
        for _, session in sinks:
            try:
                yield session.abort()
            except Exception as e:
                log.warn("aborting an import's disk: {error}", error=e)
        if self.restore is not None:
            yield self.restore.undo()

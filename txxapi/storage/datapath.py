"""
HTTP data paths into and out of VDIs (PUT /import_raw_vdi, GET
/export_raw_vdi): a claim on the VDI for the transfer's life, the format's
parser or writer, and blocking I/O on the storage thread pool.  Started
through Storage.open_import / open_export.
"""

import contextlib
import os
import threading

from twisted.internet import defer
from twisted.logger import Logger

from txstorage import qcow2, transfer, vhd
from txstorage.errors import StorageError
from txxapi.errors import XenAPIError
from txxapi.storage.common import data_path_users
from txxapi.values import new_uuid

log = Logger()

# Bytes an export reads per trip to the thread pool, and the piece size
# of raw exports.
EXPORT_BATCH = 4 << 20
RAW_PIECE = 1 << 20


def _locked(method):
    """Run a transfer's blocking step holding the transfer's lock."""
    def run(self, *args):
        with self._lock:
            return method(self, *args)
    run.__name__ = method.__name__
    return run


class _DataPath:
    """What imports and exports share: the claim on the VDI, registered
    where the operation rules see it."""

    writable = False
    # Users whose use does not stop this one (a paused guest's disk,
    # read while it moves to another pool).
    beside = ()

    def __init__(self, storage, vdi):
        self.storage = storage
        self.vdi = vdi
        self.key = "%s/%s" % (type(self).__name__, new_uuid())
        self.info = None
        self._closed = False
        # An abort may come (the client went away) while a read or write
        # is under way on another thread: they take turns.
        self._lock = threading.Lock()

    def _claim(self):
        st = self.storage
        st.assert_free(self.vdi, self.writable, self.beside)
        st.transfers.add(self)
        # Uploads mark the changed-block log as they commit.
        d = st.attach(self.vdi, self.writable, self.key, tracked=True)

        def claimed(info):
            self.info = info
            return info
        d.addCallback(claimed)
        d.addErrback(self._unclaim)
        return d

    def open(self):
        """Claim the VDI, then run the subclass's blocking start with its
        AttachInfo: a Deferred of self."""
        d = self._claim()
        d.addCallback(lambda info: self.storage.run(self._open_blocking,
                                                    info))
        d.addErrback(self._unclaim)
        d.addErrback(_io_error)
        return d.addCallback(lambda _: self)

    def _unclaim(self, result=None):
        """Let the VDIs go; passes ``result`` on (usable as an errback)."""
        self.storage.transfers.discard(self)
        d = self.storage.detach(self.vdi, self.key)
        d.addErrback(lambda f: log.warn("releasing {vdi}: {error}",
                                        vdi=self.vdi,
                                        error=f.getErrorMessage()))
        return d.addCallback(lambda _: result)

    def _wind_up(self, blocking, result=None):
        """Run the blocking end of the transfer (its failure is only
        logged), then let the VDIs go; passes ``result`` on."""
        d = self.storage.run(blocking)
        d.addErrback(lambda f: log.warn("ending a transfer of {vdi}: "
                                        "{error}", vdi=self.vdi,
                                        error=f.getErrorMessage()))
        return d.addBoth(lambda _: self._unclaim(result))


def _io_error(failure):
    """Failures of the data itself (a corrupt or short stream, a write
    beyond the end) as XAPI reports a failed vhd-tool."""
    if failure.check(vhd.VHDError, qcow2.QCOW2Error, StorageError):
        raise XenAPIError("VDI_IO_ERROR", "Device I/O errors",
                          str(failure.value))
    return failure


class ImportSession(_DataPath):
    """An upload into a VDI: the bytes go through the format's parser into
    a writer that stages them beside the VDI until commit(), so a failed
    upload leaves the VDI as it was.  feed/commit/abort return Deferreds
    and must not overlap."""

    writable = True

    def __init__(self, storage, vdi, fmt, chunked, expected_size):
        _DataPath.__init__(self, storage, vdi)
        self.format = fmt
        self.chunked = chunked
        self.expected_size = expected_size
        self._writer = None
        self._parser = None


    # blocking side

    @_locked
    def _open_blocking(self, info):
        self._writer = transfer.open_raw_writer(info)
        if self.format == "vhd":
            self._parser = vhd.VHDStreamReader()
        elif self.format == "qcow2":
            # Clusters that arrive before the table naming them wait
            # beside the VDI, not in memory.
            self._parser = qcow2.QCOW2StreamReader(
                spool_dir=os.path.dirname(info.path))
        elif self.chunked:
            self._parser = transfer.ChunkedReader()

    def _write(self, writes):
        size = self._writer.size
        for offset, data in writes:
            if offset + len(data) > size:
                # A disk rounded up to a CHS geometry may be larger than
                # the VDI: only data beyond its end is an error.
                keep = max(0, size - offset)
                if not vhd.is_zero(memoryview(data)[keep:]):
                    raise StorageError.named(
                        "VDISize", "data at byte %d, beyond the VDI's end "
                        "(%d bytes)" % (max(offset, size), size))
                data = memoryview(data)[:keep]
                if not data:
                    continue
            self._writer.pwrite(offset, data)

    @_locked
    def write_blocking(self, writes):
        """(offset, data) writes, from a thread parsing a container this
        session does not know (an XVA's disk chunks)."""
        self._write(writes)

    @_locked
    def _feed_blocking(self, pieces):
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if self._parser is None:
            self._writer.write(data)
        else:
            self._write(self._parser.feed(data))

    @_locked
    def _commit_blocking(self):
        if self._parser is not None:
            self._write(self._parser.finish())
        elif self.expected_size is not None and \
                self._writer.bytes_written != self.expected_size:
            raise StorageError.named(
                "VDIUnavailable", "truncated upload: %d of %d bytes"
                % (self._writer.bytes_written, self.expected_size))
        self._writer.commit()

    @_locked
    def _abort_blocking(self):
        if self._writer is not None:
            self._writer.abort()

    # reactor side

    def feed(self, pieces):
        """Write the next pieces of the body (a list of bytes)."""
        return self.storage.run(self._feed_blocking, pieces).addErrback(
            _io_error)

    def commit(self):
        """Fold the upload into the VDI and bring its record up to date:
        a Deferred of the VDI's ref."""
        if self._closed:
            return defer.fail(XenAPIError("INTERNAL_ERROR",
                                          "import already finished"))
        self._closed = True
        st = self.storage
        d = st.run(self._commit_blocking)
        d.addErrback(self._failed)
        d.addCallback(self._unclaim)
        d.addCallback(lambda _: st.refresh_vdi(self.vdi))
        d.addCallback(lambda _: st._refresh_sizes(
            st.db.fields("VDI", self.vdi)["SR"]))
        return d.addCallback(lambda _: self.vdi)

    def _failed(self, failure):
        return self._wind_up(self._abort_blocking, failure).addErrback(
            _io_error)

    def abort(self):
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        return self._wind_up(self._abort_blocking)


class ExportSession(_DataPath):
    """A download of a VDI: next_batch() hands out the stream a few MiB at
    a time, read on the storage pool.  ``stream``, if given, makes the
    stream from the VDI's AttachInfo instead of the format's writer (an
    XVA's chunks of the disk)."""

    def __init__(self, storage, vdi, fmt, base, stream=None):
        _DataPath.__init__(self, storage, vdi)
        self.format = fmt
        self.base = base
        self.stream = stream
        self.size = storage.db.fields("VDI", vdi)["virtual_size"]
        self._iter = None
        self.done = False

    @defer.inlineCallbacks
    def open(self):
        info = yield self._claim()
        base_info = None
        try:
            if self.base is not None:
                self.storage.assert_free(self.base, False)
                base_info = yield self.storage.attach(self.base, False,
                                                      self.key)
            if self.stream is not None:
                self._iter = self.stream(info)
            elif self.format == "vhd":
                self._iter = transfer.export_vhd(info, base=base_info)
            elif self.format == "qcow2":
                self._iter = transfer.export_qcow2(info, base=base_info)
            else:
                self._iter = transfer.export_raw(info, chunk_size=RAW_PIECE)
        except Exception:
            yield self._unclaim()
            raise
        return self

    @_locked
    def _next_blocking(self, limit):
        out, n = [], 0
        while n < limit:
            try:
                piece = next(self._iter)
            except StopIteration:
                self.done = True
                break
            out.append(piece)
            n += len(piece)
        return out

    def next_batch(self, limit=EXPORT_BATCH):
        """A Deferred of the next pieces of the stream ([] at its end)."""
        if self.done:
            return defer.succeed([])
        return self.storage.run(self._next_blocking, limit).addErrback(
            _io_error)

    @_locked
    def _close_blocking(self):
        if self._iter is not None:
            self._iter.close()

    def _unclaim(self, result=None):
        d = _DataPath._unclaim(self)
        if self.base is not None:
            base = self.base
            d.addCallback(lambda _: self.storage.detach(base, self.key))
            d.addErrback(lambda f: log.warn("releasing {vdi}: {error}",
                                            vdi=base,
                                            error=f.getErrorMessage()))
        return d.addCallback(lambda _: result)

    def close(self):
        """End the download (finished or not) and release the VDIs."""
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        return self._wind_up(self._close_blocking)

    abort = close


class ReadSession(_DataPath):
    """Random reads of a VDI's raw view for as long as the session is
    open (the NBD server's exports): a read-only claim, reads on the
    storage pool.  Reads overlap when the reader allows it (files read
    with pread), else they take turns; closing waits for those under
    way."""

    def __init__(self, storage, vdi):
        _DataPath.__init__(self, storage, vdi)
        self.size = storage.db.fields("VDI", vdi)["virtual_size"]
        self._reader = None
        self._reads = 0                     # reads under way
        self._idle = threading.Condition(self._lock)
        self._turns = threading.Lock()      # for readers one at a time

    @_locked
    def _open_blocking(self, info):
        self._reader = transfer.open_raw_reader(info)
        self.size = self._reader.size

    @contextlib.contextmanager
    def _reading(self):
        """The reader, held open (and to itself if it must be) while
        in use."""
        with self._lock:
            reader = self._reader
            if reader is None:
                raise StorageError.named("SMGeneral", "the reader is closed")
            self._reads += 1
        try:
            if reader.concurrent:
                yield reader
            else:
                with self._turns:
                    yield reader
        finally:
            with self._lock:
                self._reads -= 1
                if not self._reads:
                    self._idle.notify_all()

    def _pread_blocking(self, offset, length):
        with self._reading() as reader:
            return reader.pread(offset, length)

    def _pread_many_blocking(self, requests):
        out = []
        with self._reading() as reader:
            for offset, length in requests:
                try:
                    out.append(reader.pread(offset, length))
                except Exception as e:
                    out.append(e)
        return out

    def pread(self, offset, length):
        """A Deferred of ``length`` bytes at ``offset``."""
        return self.storage.run(self._pread_blocking, offset,
                                length).addErrback(_io_error)

    def pread_many(self, requests):
        """A Deferred of the data of each (offset, length) request, read
        in one trip to the pool; a request that failed has its
        exception in its place."""
        return self.storage.run(self._pread_many_blocking,
                                requests).addErrback(_io_error)

    def _close_blocking(self):
        with self._lock:
            while self._reads:
                self._idle.wait()
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def close(self):
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        return self._wind_up(self._close_blocking)


class DataPaths:
    """The HTTP data paths a storage component opens."""

    def assert_free(self, vdi, writable, beside=()):
        """VDI_IN_USE if the VDI's data cannot be used this way now: a
        writer needs it to itself, a reader needs nobody writing (but the
        users ``beside``)."""
        users = [u for u in data_path_users(self.db, vdi)
                 if u[1] not in beside]
        if (writable and users) or any(rw for rw, _ in users):
            raise XenAPIError("VDI_IN_USE", vdi)

    def open_import(self, vdi, fmt, chunked=False, expected_size=None):
        """Start an upload into ``vdi`` (fmt "raw", "vhd" or "qcow2";
        chunked: the vhd-tool record framing): a Deferred of an ImportSession."""
        return defer.maybeDeferred(
            ImportSession(self, vdi, fmt, chunked, expected_size).open)

    def open_export(self, vdi, fmt, base=None, stream=None, beside=()):
        """Start a download of ``vdi`` as "raw", "vhd" or "qcow2" (against
        ``base`` for a differential image), or as ``stream(attach_info)`` makes it: a
        Deferred of an ExportSession.  ``beside``: users (VBDs) whose
        writes are held meanwhile, which do not stop it."""
        session = ExportSession(self, vdi, fmt, base, stream)
        session.beside = tuple(beside)
        return defer.maybeDeferred(session.open)


    def open_reader(self, vdi):
        """Hold ``vdi`` for reading at random: a Deferred of a
        ReadSession."""
        return defer.maybeDeferred(ReadSession(self, vdi).open)

"""
HTTP data paths into and out of VDIs (PUT /import_raw_vdi, GET
/export_raw_vdi): a claim on the VDI for the transfer's life, the format's
parser or writer, and blocking I/O on the storage thread pool.  Started
through Storage.open_import / open_export.
"""

import threading

from twisted.internet import defer
from twisted.logger import Logger

from txstorage import transfer, vhd
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
        st.assert_free(self.vdi, self.writable)
        st.transfers.add(self)
        d = st.attach(self.vdi, self.writable, self.key)

        def claimed(info):
            self.info = info
            return info
        d.addCallback(claimed)
        d.addErrback(self._unclaim)
        return d

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
    if failure.check(vhd.VHDError, StorageError):
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

    def open(self):
        d = self._claim()
        d.addCallback(lambda info: self.storage.run(self._open_blocking,
                                                    info))
        d.addErrback(self._unclaim)
        d.addErrback(_io_error)
        return d.addCallback(lambda _: self)

    # blocking side

    @_locked
    def _open_blocking(self, info):
        self._writer = transfer.open_raw_writer(info)
        if self.format == "vhd":
            self._parser = vhd.VHDStreamReader()
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


class DataPaths:
    """The HTTP data paths a storage component opens."""

    def assert_free(self, vdi, writable):
        """VDI_IN_USE if the VDI's data cannot be used this way now: a
        writer needs it to itself, a reader needs nobody writing."""
        users = data_path_users(self.db, vdi)
        if (writable and users) or any(rw for rw, _ in users):
            raise XenAPIError("VDI_IN_USE", vdi)

    def open_import(self, vdi, fmt, chunked=False, expected_size=None):
        """Start an upload into ``vdi`` (fmt "raw" or "vhd"; chunked: the
        vhd-tool record framing): a Deferred of an ImportSession."""
        return defer.maybeDeferred(
            ImportSession(self, vdi, fmt, chunked, expected_size).open)

    def open_export(self, vdi, fmt, base=None, stream=None):
        """Start a download of ``vdi`` as "raw" or "vhd" (against ``base``
        for a differential VHD), or as ``stream(attach_info)`` makes it: a
        Deferred of an ExportSession."""
        return defer.maybeDeferred(
            ExportSession(self, vdi, fmt, base, stream).open)


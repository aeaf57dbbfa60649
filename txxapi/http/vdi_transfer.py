"""
PUT /import_raw_vdi and GET /export_raw_vdi: a VDI's data in and out over
HTTP and HTTPS, with XAPI's order of checks, status codes and task
bookkeeping, streamed in bounded memory with flow control both ways.

Uploads: the site's request class hands each piece of the body to an
Upload as it arrives instead of buffering the body.  The Upload gathers
pieces into large writes run on the storage pool, one at a time; while
one is in flight and another is gathered, the client's connection is
paused (transport.pauseProducing), so memory stays at about two writes.

Downloads: a push producer on the channel.  Batches of the stream are read
on the storage pool, one ahead of the one being sent; the transport's
pause stops the reading until its buffer drains.

A VDI whose SR is plugged on another host and not here is served there:
the request is answered 302 (txxapi.redirect).  Like XAPI, both answer
200 with the task before any data moves and close the connection at the
end (no Content-Length); a failure after that point is on the task, and
the connection ends with XAPI's 500 page.  An upload that asked for it
(Expect: 100-continue) gets a 100 just before that 200.
"""

import collections

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txxapi.api.context import Context
from txxapi.backpressure import PausableReading
from txxapi.errors import XenAPIError
from txxapi.http import responses
from txxapi.http.auth import Params, Refused, authenticate, version_of
from txxapi.redirect import owners

log = Logger()

# Bytes gathered into one write on the storage pool.
WRITE_CHUNK = 4 << 20
# Bytes of a download read ahead of what the transport has taken.
READ_AHEAD = 4 << 20
PROGRESS_INTERVAL = 1.0
# Seconds a closed connection may wait for the client's side of the TLS
# close before it is cut.
CLOSE_GRACE = 30.0
# Largest VDI exported as VHD (XAPI's max_vhd_size).
MAX_VHD_SIZE = 2040 << 30
FORMATS = ("raw", "vhd", "qcow2")
CONTENT_TYPES = {"raw": "application/octet-stream",
                 "vhd": "application/vhd",
                 "qcow2": "application/x-qemu-disk"}


def _error_of(failure):
    if isinstance(failure, Failure):
        if failure.check(XenAPIError):
            return failure.value
        log.failure("VDI transfer", failure)
        return XenAPIError("INTERNAL_ERROR", failure.getErrorMessage())
    return failure


class Transfer:
    """What uploads and downloads share: parameters, the caller, the task
    and how a request ends."""

    realm = action = label = None

    def __init__(self, server, request):
        self.server = server
        self.request = request
        self.transport = request.channel.transport
        self.version = version_of(request)
        self.params = Params(request)
        self.caller = None
        self.task = None
        self.session = None
        self.headers_sent = False
        self.done = False
        self._last_progress = 0.0

    @property
    def db(self):
        return self.server.db

    def _authenticate(self):
        return authenticate(self.server, self.request, self.params,
                            self.realm, self.action, task_label=self.label)

    def _resolve_vdi(self, value):
        if self.db.exists("VDI", value):
            return value
        return self.db.by_uuid("VDI", value)

    def _begin_task(self):
        named = self.params.get("task_id", cookie_first=True) or \
            self.caller.task
        if named is not None:
            # The client's task: this request completes it.
            self.db.fields("task", named)
            self.task = named
        else:
            self.task = self.server.tasks.create(self.caller.session,
                                                 self.label)
        self.server.tasks.set_progress(self.task, 0.0)

    def _progress(self, fraction):
        now = self.server.reactor.seconds()
        if self.task is not None and \
                now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self.server.tasks.set_progress(self.task, min(fraction, 0.99))

    def _context(self):
        return Context(self.server, self.caller.session, task=self.task)

    def _send_head(self, extra):
        self.headers_sent = True
        self.transport.write(responses.ok_streaming(self.task, extra))

    def _end(self):
        """Close the connection and let go of what the request held."""
        if self.task is not None:
            self.server.tasks.clear_canceller(self.task)
        if self.caller is not None:
            self.caller.close()
        self._close_connection()

    def _close_connection(self):
        channel = self.request.channel
        if channel is None:
            return      # already gone
        transport = self.transport
        # A TLS close needs the client's close_notify: read again.
        transport.resumeProducing()
        channel.loseConnection()

        def cut():
            if getattr(transport, "connected", False):
                transport.abortConnection()
        self.server.reactor.callLater(CLOSE_GRACE, cut)

    def _succeed(self, result=""):
        """The data is through: the task succeeds, the connection ends."""
        self.done = True
        self.server.tasks.succeed(self.task, result)
        self._end()

    def _fail(self, failure, respond=True):
        """End the request with an error: a refusal's own response, or the
        error on the task and XAPI's 500 page.  The task fails once the
        VDI is let go, so a client that sees it failed can use the VDI."""
        if self.done:
            return
        self.done = True
        error = None
        if isinstance(failure, Failure) and failure.check(Refused):
            self.transport.write(failure.value.response)
        else:
            error = _error_of(failure)
            if respond:
                self.transport.write(responses.internal_error(
                    self.version, str(error)))
        session, self.session = self.session, None
        d = session.abort() if session is not None else defer.succeed(None)
        d.addErrback(lambda f: log.warn("aborting a transfer: {error}",
                                        error=f.getErrorMessage()))

        def ended(_):
            if error is not None and self.task is not None and \
                    self.db.exists("task", self.task):
                self.server.tasks.fail(self.task, error)
            self._end()
        d.addCallback(ended)

    def _cancel(self):
        self._fail(XenAPIError("TASK_CANCELLED", self.task))


class Upload(Transfer, PausableReading):
    """PUT /import_raw_vdi, fed by the request as the body arrives."""

    realm = "VDI.import"
    action = "put_import_raw_vdi"
    label = "Importing raw VDI"

    def __init__(self, server, request, length, expect_continue=False):
        Transfer.__init__(self, server, request)
        self.length = length
        self.expect_continue = expect_continue
        self.received = 0
        self._pending = []
        self._pending_size = 0
        self._writing = False
        self._complete = False
        # Nothing is read until the request is known to be acceptable.
        self._pause_reading()
        d = self._prepare()
        d.addErrback(self._fail)

    def data(self, data):
        """A piece of the body (from XapiRequest.handleContentChunk)."""
        if self.done:
            return
        self._pending.append(data)
        self._pending_size += len(data)
        self.received += len(data)
        self._pump()

    def body_complete(self):
        """The body has all arrived (from XapiRequest.requestReceived)."""
        self._complete = True
        self._pump()

    def connection_lost(self):
        if not self.done:
            self._fail(XenAPIError(
                "VDI_IO_ERROR", "Device I/O errors",
                "the connection closed after %d bytes of the upload"
                % self.received), respond=False)

    def _pump(self):
        if self.done:
            return
        if self.session is None or self._writing:
            if self._pending_size >= WRITE_CHUNK:
                self._pause_reading()
            return
        if self._pending_size >= WRITE_CHUNK or \
                (self._complete and self._pending):
            pieces, self._pending = self._pending, []
            self._pending_size = 0
            self._writing = True
            if self.length:
                self._progress(self.received / self.length)
            # Joined on the storage thread, not here.
            d = self.session.feed(pieces)
            d.addCallbacks(self._written, self._fail)
            if not self._complete:
                # Gather the next write while this one runs.
                self._resume_reading()
        elif self._complete:
            self._finish()
        else:
            self._resume_reading()

    def _written(self, _):
        self._writing = False
        self._pump()

    # --- the request --------------------------------------------------------

    @defer.inlineCallbacks
    def _prepare(self):
        params = self.params
        self.caller = yield self._authenticate()
        vdi = params.get("vdi")
        if vdi is not None:
            vdi = self._resolve_vdi(vdi)
        sr = self._target_sr(vdi)
        owners.to_sr(self.server, self.request, sr)
        self.server.storage.assert_plugged(sr)
        self._begin_task()
        fmt = (params.get("format") or "raw").lower()
        chunked = "chunked" in params
        if fmt not in FORMATS:
            raise self._refusal("Unknown format " + fmt)
        if fmt != "raw" and chunked:
            raise self._refusal("Cannot handle chunked VHD")
        if vdi is None:
            if fmt != "raw" or self.length is None:
                raise self._refusal(
                    "Importing a %s directly into an SR not yet supported"
                    % fmt.upper() if fmt != "raw" else
                    "Not enough info supplied to import",
                    responses.bad_request("1.0"))
            vdi = yield self.server.forwarder.storage.create_vdi(
                self._context(), sr, self.length, "Imported VDI")
        self.vdi = vdi
        empty = self.length == 0 and fmt == "raw" and not chunked
        if empty:
            # Nothing to write: Xen Orchestra probes the URL so before the
            # real upload, which follows at once.  The VDI is not taken
            # (that upload would find it in use), only checked free.
            self.server.storage.assert_free(vdi, True)
        if self.expect_continue:
            # XAPI sends no 100, and curl then holds the body back for a
            # second or two; an interim 100 before the 200 lets it go at
            # once, and clients that did not ask never see one.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._send_head(["content-type: application/octet-stream"])
        if empty:
            self._succeed(vdi)
            return
        expected = self.length if fmt == "raw" and not chunked else None
        session = yield self.server.storage.open_import(
            vdi, fmt, chunked, expected)
        if self.done:
            yield session.abort()
            return
        self.session = session
        self.server.tasks.set_canceller(self.task, self._cancel)
        self._pump()

    def _target_sr(self, vdi):
        db, params = self.db, self.params
        if vdi is not None:
            return db.fields("VDI", vdi)["SR"]
        sr = params.get("sr_id")
        if sr is not None:
            db.fields("SR", sr)
            return sr
        uuid = params.get("sr_uuid")
        if uuid is not None:
            return db.by_uuid("SR", uuid)
        error = XenAPIError("VDI_MISSING")
        named = params.get("task_id", cookie_first=True)
        if named and db.exists("task", named):
            self.server.tasks.fail(named, error)
        raise Refused(responses.bad_request())

    def _refusal(self, message, response=None):
        """Fail the task with INTERNAL_ERROR and answer 404 (or the given
        response), as XAPI's import handler does."""
        self.server.tasks.fail(self.task, XenAPIError("INTERNAL_ERROR",
                                                      message))
        return Refused(response or responses.not_found())

    def _finish(self):
        # The data is in: the import can no longer be cancelled, and the
        # client going away now changes nothing.
        self.server.tasks.clear_canceller(self.task)
        self.done = True
        session, self.session = self.session, None
        d = session.commit()
        d.addCallbacks(self._succeed, self._committed_failure)

    def _committed_failure(self, failure):
        self.done = False
        self._fail(failure)


@implementer(IPushProducer)
class Download(Transfer):
    """GET /export_raw_vdi: a push producer on the request's channel."""

    realm = "VDI.export_raw"
    action = "get_export_raw_vdi"
    label = "Exporting raw VDI"

    def __init__(self, server, request):
        Transfer.__init__(self, server, request)
        self.sent = 0
        self._paused = False
        self._reading = False
        # Pieces read and not yet written, and whether the stream ended.
        self._ready = collections.deque()
        self._ready_bytes = 0
        self._eof = False
        self._registered = False
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        d = self._prepare()
        d.addErrback(self._fail)

    @defer.inlineCallbacks
    def _prepare(self):
        params = self.params
        self.caller = yield self._authenticate()
        vdi = params.get("vdi")
        if vdi is None:
            raise XenAPIError("INTERNAL_ERROR", "Missing vdi query parameter")
        vdi = self._resolve_vdi(vdi)
        sr = self.db.fields("VDI", vdi)["SR"]
        owners.to_sr(self.server, self.request, sr)
        self.server.storage.assert_plugged(sr)
        self._begin_task()
        fmt = (params.get("format") or "raw").lower()
        if fmt not in FORMATS:
            self.server.tasks.fail(self.task, XenAPIError(
                "INTERNAL_ERROR", "Unknown format " + fmt))
            raise Refused(responses.not_found())
        uuid = self.db.fields("VDI", vdi)["uuid"]
        self._send_head([
            "content-type:" + CONTENT_TYPES[fmt],
            'content-disposition: attachment; filename="%s.%s"'
            % (uuid, fmt)])
        size = self.db.fields("VDI", vdi)["virtual_size"]
        if fmt == "vhd" and size > MAX_VHD_SIZE:
            raise XenAPIError("VDI_TOO_LARGE", vdi, str(MAX_VHD_SIZE))
        base = params.get("base")
        if base is not None:
            base = self._resolve_vdi(base)
        session = yield self.server.storage.open_export(
            vdi, fmt, base if fmt != "raw" else None)
        if self.done:
            yield session.close()
            return
        self.session = session
        self.size = size
        self.server.tasks.set_canceller(self.task, self._cancel)
        self.request.channel.registerProducer(self, True)
        self._registered = True
        self._read()

    def _read(self):
        # Another batch only while at most READ_AHEAD bytes wait unwritten,
        # so a download holds about two batches at most.
        if self.done or self._reading or self._eof or \
                self._ready_bytes > READ_AHEAD:
            return
        self._reading = True
        d = self.session.next_batch()
        d.addCallbacks(self._got, self._fail)

    def _got(self, pieces):
        self._reading = False
        if self.done:
            return
        if not pieces:
            self._eof = True
        self._ready.extend(pieces)
        self._ready_bytes += sum(len(p) for p in pieces)
        if not self._paused:
            self._send()

    def _send(self):
        # A piece per write while the transport takes them: it pauses us
        # once its buffer fills, and the next piece goes out on resume.
        # Over TLS a write is encrypted at once, so a whole batch in one
        # write would leave the socket idle while the rest of the batch
        # is encrypted; a piece at a time keeps both busy.
        ready = self._ready
        while ready and not self._paused and not self.done:
            piece = ready.popleft()
            self._ready_bytes -= len(piece)
            self.transport.write(piece)
            self.sent += len(piece)
        if self.done:
            return
        self._progress(self.sent / max(1, self.size))
        if self._eof and not ready:
            self._finish()
        else:
            self._read()

    def _finish(self):
        self.done = True
        session, self.session = self.session, None
        self._unregister()
        d = session.close()
        d.addBoth(lambda _: self._succeed())

    def _unregister(self):
        if self._registered:
            self._registered = False
            channel = self.request.channel
            if channel is not None:
                channel.unregisterProducer()

    def _end(self):
        self._unregister()
        Transfer._end(self)

    # --- IPushProducer ------------------------------------------------------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        if (self._ready or self._eof) and not self.done:
            self._send()

    def stopProducing(self):
        if not self.done:
            self._fail(XenAPIError(
                "VDI_IO_ERROR", "Device I/O errors",
                "the client closed the connection after %d bytes"
                % self.sent), respond=False)

"""
VM.import(url, sr, full_restore, force): the host fetches an XVA with an
HTTP(S) GET and imports it as PUT /import does, the body fed to the same
ImportStream as it arrives: one feed at a time, the connection left
unread meanwhile, so memory stays flat whatever the archive's size.

As XAPI: redirects are followed (five at most), any other status than
200 is IMPORT_ERROR with the status line, a body cut short is
IMPORT_ERROR_PREMATURE_EOF, and a failure undoes everything the import
made (unless ``force``).  A URL that cannot be used or a server that
cannot be reached is IMPORT_ERROR too, with the reason (XAPI lets these
escape as INTERNAL_ERROR).  The server's certificate is checked against
the system's CAs only when the pool has TLS verification on, as XAPI's
``Stunnel_client.world``.

The import can be cancelled until the data is all in (task.cancel), a
synchronous call's too: it runs under a task of its own, as XAPI gives
every call one.  A server that sends nothing for the read timeout
(``import_read_timeout`` of the server, --import-read-timeout) while the
import waits for it ends the import with IMPORT_ERROR.  Either way
nothing the import made remains.
"""

import functools
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer, protocol, ssl
from twisted.logger import Logger
from twisted.web import client as web_client
from twisted.web.http import PotentialDataLoss, RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.xva import streams

log = Logger()

MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 30
# Bytes that may wait for the import before the body is paused.
FEED_SIZE = 4 << 20
USER_AGENT = b"xapi/25.0"
READ_TIMEOUT = 300.0
SCHEMES = ("http", "https")


@implementer(IPolicyForHTTPS)
class _Policy:
    def __init__(self, verify):
        self._verify = verify
        self._checked = web_client.BrowserLikePolicyForHTTPS()

    def creatorForNetloc(self, hostname, port):
        if self._verify:
            return self._checked.creatorForNetloc(hostname, port)
        return ssl.CertificateOptions(verify=False)


class _Feeder(protocol.Protocol):
    """The response's body into the import, one feed at a time: what
    arrives during a feed is fed next, and the body is paused while
    FEED_SIZE bytes wait."""

    def __init__(self, stream, ctx, length, timeout=READ_TIMEOUT):
        self.stream = stream
        self.ctx = ctx
        self.length = length
        self.timeout = timeout
        self._timer = None
        self.received = 0
        self.finished = defer.Deferred()
        self._pieces = []
        self._size = 0
        self._feeding = False
        self._paused = False
        self._ended = False         # the whole body came
        self._done = False          # finished has fired

    def connectionMade(self):
        self._wait()

    def _wait(self):
        """(Re)start the read timeout."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self._done and self.timeout > 0:
            self._timer = self.ctx.server.reactor.callLater(
                self.timeout, self._silent)

    def _silent(self):
        self._timer = None
        if self._feeding or self._paused:
            # The import is the slow one: the server is not to blame.
            return self._wait()
        log.info("VM.import: nothing from the server for {t} s",
                 t=self.timeout)
        self.fail(_silent(self.timeout))

    def dataReceived(self, data):
        if self._done:
            return
        self._wait()
        self._pieces.append(data)
        self._size += len(data)
        if not self._feeding:
            self._feed()
        elif self._size >= FEED_SIZE and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _feed(self):
        if not self._pieces:
            if self._ended:
                self._finish()
            return
        pieces, self._pieces = self._pieces, []
        self.received += self._size
        self._size = 0
        try:
            self.ctx.check_cancelled()
        except XenAPIError as e:
            return self.fail(e)
        if self.length and self.ctx.task is not None:
            self.ctx.server.tasks.set_progress(
                self.ctx.task, min(self.received / self.length, 0.99))
        self._feeding = True
        self.stream.feed(pieces).addCallbacks(self._fed, self.fail)

    def _fed(self, _):
        self._feeding = False
        if self._done:
            return
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        self._feed()

    def fail(self, failure):
        if not self._done:
            self._done = True
            self._stop_waiting()
            if not self._ended:
                self.transport.stopProducing()
            self.finished.errback(failure)

    def connectionLost(self, reason):
        self._ended = True
        # ResponseDone: all of a known length or a chunked body; a body
        # with neither ends with the connection (PotentialDataLoss).
        if not reason.check(web_client.ResponseDone, PotentialDataLoss):
            if not self._done:
                log.info("VM.import: the body ended early: {e}",
                         e=reason.getErrorMessage())
                self.fail(XenAPIError("IMPORT_ERROR_PREMATURE_EOF"))
        elif not self._feeding:
            self._feed()

    def _finish(self):
        if not self._done:
            self._done = True
            self._stop_waiting()
            self.finished.callback(None)

    def _stop_waiting(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _Discard(protocol.Protocol):
    """The body of a response not imported: the connection dropped."""

    def connectionMade(self):
        self.transport.stopProducing()


def _check_url(url):
    parts = urlsplit(url)
    if not parts.scheme:
        raise XenAPIError("IMPORT_ERROR", "Failed to parse URI: %s" % url)
    if parts.scheme.lower() not in SCHEMES:
        raise XenAPIError("IMPORT_ERROR",
                          "Unsupported URI scheme: %s" % parts.scheme)
    try:
        parts.port
    except ValueError:
        raise XenAPIError("IMPORT_ERROR", "Failed to parse host and port "
                          "from URI: %s" % url)
    if not parts.hostname:
        raise XenAPIError("IMPORT_ERROR", "Failed to parse host and port "
                          "from URI: %s" % url)
    return url


def _agent(ctx):
    db = ctx.db
    pools = db.refs("pool")
    verify = bool(pools) and db.fields("pool", pools[0])[
        "tls_verification_enabled"]
    connections = web_client.HTTPConnectionPool(ctx.server.reactor,
                                                persistent=False)
    return web_client.Agent(ctx.server.reactor, _Policy(verify),
                            connectTimeout=CONNECT_TIMEOUT,
                            pool=connections)


def _status_line(code, phrase):
    phrase = phrase.decode("latin-1") if phrase else \
        RESPONSES.get(code, b"").decode("latin-1")
    return ("%d %s" % (code, phrase)).strip()


def _silent(timeout):
    return XenAPIError("IMPORT_ERROR",
                       "The server sent nothing for %g s" % timeout)


@defer.inlineCallbacks
def _get(ctx, url):
    """The 200 response to a GET of ``url`` after redirects; a server
    that does not answer within the read timeout is given up."""
    agent = _agent(ctx)
    timeout = ctx.server.import_read_timeout
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(url)
        request = agent.request(b"GET", url.encode("utf-8"),
                                Headers({b"user-agent": [USER_AGENT]}))
        timer = ctx.server.reactor.callLater(timeout, request.cancel) \
            if timeout > 0 else None
        try:
            response = yield request
        except (defer.CancelledError, web_client.ResponseNeverReceived) as e:
            # The timer's cancel, the client's, or a connection lost.
            if timer is not None and not timer.active():
                raise _silent(timeout)
            if isinstance(e, defer.CancelledError):
                raise
            raise XenAPIError("IMPORT_ERROR_PREMATURE_EOF")
        except Exception as e:
            raise XenAPIError("IMPORT_ERROR", "Cannot fetch %s: %s"
                              % (urlsplit(url).netloc, _reason(e)))
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        if response.code == 200:
            return response
        response.deliverBody(_Discard())
        if 300 <= response.code < 400:
            location = response.headers.getRawHeaders(b"location")
            if not location:
                raise XenAPIError("IMPORT_ERROR",
                                  "Redirect with no new location")
            url = urljoin(url, location[0].decode("latin-1"))
            continue
        raise XenAPIError("IMPORT_ERROR",
                          _status_line(response.code, response.phrase))
    raise XenAPIError("IMPORT_ERROR", "Maximum redirect limit reached")


def _reason(e):
    """A connection failure in a few words (Twisted's own wording)."""
    text = str(e).strip()
    return text or type(e).__name__


def _import_sr(ctx, sr):
    db = ctx.db
    db.fields("SR", sr)
    ctx.server.storage.assert_plugged(sr)
    if db.fields("SR", sr)["content_type"] == "iso":
        raise XenAPIError("SR_OPERATION_NOT_SUPPORTED", sr)
    return sr


@implements("VM.import")
def import_from_url(ctx, url, sr, full_restore, force):
    sr = _import_sr(ctx, sr)
    run = functools.partial(_import, ctx, url, sr, full_restore, force)
    if ctx.task is None:
        return ctx.server.tasks.under_own_task(ctx, "VM.import", run)
    return run()


@defer.inlineCallbacks
def _import(ctx, url, sr, full_restore, force):
    tasks = ctx.server.tasks
    cancelled = XenAPIError("TASK_CANCELLED", ctx.task)
    # An Async import can be cancelled while it fetches (a server that
    # stalls included), until the data is all in.
    get = _get(ctx, url)
    asked = []

    def cancel():
        asked.append(True)
        get.cancel()
    tasks.set_canceller(ctx.task, cancel)
    try:
        response = yield get
    except Exception:
        # Twisted's client reports a cancelled request as never answered.
        if asked:
            raise cancelled
        raise
    stream = streams.ImportStream(ctx, sr, full_restore, force)
    length = response.length if isinstance(response.length, int) else None
    feeder = _Feeder(stream, ctx, length, ctx.server.import_read_timeout)
    if ctx.task is not None:
        tasks.set_progress(ctx.task, 0.0)
    tasks.set_canceller(ctx.task, lambda: feeder.fail(cancelled))
    response.deliverBody(feeder)
    try:
        yield feeder.finished
        tasks.clear_canceller(ctx.task)
        vms = yield stream.commit()
    except Exception:
        tasks.clear_canceller(ctx.task)
        yield stream.abort()
        raise
    return vms

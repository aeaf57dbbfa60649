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
"""

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

    def __init__(self, stream, ctx, length):
        self.stream = stream
        self.ctx = ctx
        self.length = length
        self.received = 0
        self.finished = defer.Deferred()
        self._pieces = []
        self._size = 0
        self._feeding = False
        self._paused = False
        self._ended = False         # the whole body came
        self._done = False          # finished has fired

    def dataReceived(self, data):
        if self._done:
            return
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
            self.finished.callback(None)


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


@defer.inlineCallbacks
def _get(ctx, url):
    """The 200 response to a GET of ``url`` after redirects."""
    agent = _agent(ctx)
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(url)
        try:
            response = yield agent.request(
                b"GET", url.encode("utf-8"),
                Headers({b"user-agent": [USER_AGENT]}))
        except defer.CancelledError:
            raise
        except web_client.ResponseNeverReceived:
            raise XenAPIError("IMPORT_ERROR_PREMATURE_EOF")
        except Exception as e:
            raise XenAPIError("IMPORT_ERROR", "Cannot fetch %s: %s"
                              % (urlsplit(url).netloc, _reason(e)))
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
@defer.inlineCallbacks
def import_from_url(ctx, url, sr, full_restore, force):
    sr = _import_sr(ctx, sr)
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
    feeder = _Feeder(stream, ctx, length)
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

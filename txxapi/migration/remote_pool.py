"""
Another pool, as the map its host.migrate_receive answered names it
(``dest``: host, session_id, and the SM, xenops and master URLs): XenAPI
calls to its master, and the two uploads a move to it makes, to the
destination host's own address (the xenops URL's), over HTTPS:

* a disk: PUT /import_raw_vdi?vdi=<its new VDI>&format=vhd, the local
  VDI's VHD stream (or only its blocks that differ from a base the
  remote VDI holds already) read from the storage pool a batch at a time
  as the connection takes it (chunked: the stream's length is not known
  first);
* the VM's metadata: PUT /import_metadata?restore=true&live=true with
  the tar of its ova.xml, which XAPI's storage motion sends as well
  (restore=false for a copy: a new VM there); the task's result names
  the VMs it made.

Either ends with the connection; its outcome is a task made there first
and named in the request (task_id), so that a refusal there that cuts
the connection is known by its own error.  A peer that cannot be reached is
CANNOT_CONTACT_HOST [its address]; its own errors come back as they are.
The peer's certificate is not verified, as in the pool's own calls.
"""

import io
from urllib.parse import urlencode, urlsplit

from twisted.internet import defer
from twisted.internet import task as task_module
from twisted.web import client as web_client
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from txxapi.errors import XenAPIError
from txxapi.pool.client import PeerClient, PeerUnreachable, peer_agent, \
    peer_url
from txxapi.wire.xmlrpc import MalformedRequest, decode_value

DEST_KEYS = ("host", "session_id", "SM", "xenops", "master")
# Seconds an upload whose connection was cut waits for its task there.
TASK_WAIT = 10.0
TASK_POLL = 0.1
# Seconds a call to the other pool's master waits for its answer: its
# storage calls (VDI.create there) may take minutes on a busy SR.
CALL_TIMEOUT = 300.0


def _address(dest, key):
    try:
        address = urlsplit(dest[key]).hostname
    except ValueError:
        address = None
    if not address:
        raise XenAPIError("INVALID_VALUE", "dest", dest[key])
    return address


def assert_dest(dest):
    """INVALID_VALUE unless ``dest`` is a whole migrate_receive map."""
    for key in DEST_KEYS:
        if not isinstance(dest.get(key), str):
            raise XenAPIError("INVALID_VALUE", "dest",
                              "no %s in the destination" % key)
    for key in ("master", "xenops"):
        _address(dest, key)


class RemotePool:
    def __init__(self, reactor, dest):
        assert_dest(dest)
        self.reactor = reactor
        self.host = dest["host"]
        self.session = dest["session_id"]
        self.master_address = _address(dest, "master")
        # The destination host: where the disks and the VM arrive.
        self.address = _address(dest, "xenops")
        self._master = PeerClient(reactor, self.master_address)

    def _unreachable(self, address, e):
        raise XenAPIError("CANNOT_CONTACT_HOST", address) from e

    @defer.inlineCallbacks
    def call(self, method, *args):
        """``method`` of the remote pool's master in our session there."""
        try:
            result = yield self._master.call(method, self.session, *args,
                                             timeout=CALL_TIMEOUT)
        except PeerUnreachable as e:
            self._unreachable(self.master_address, e)
        return result

    def upload_disk(self, storage, vdi, remote_vdi, base=None, beside=()):
        """``vdi``'s data into the remote pool's ``remote_vdi`` (which
        holds ``base``'s already: only the blocks that differ from it)."""
        d = storage.open_export(vdi, "vhd", base, beside=beside)

        def send(session):
            body = _ExportBody(session)
            done = self._put("/import_raw_vdi", {"vdi": remote_vdi,
                                                 "format": "vhd"}, body)
            return done.addBoth(lambda result: session.close().addCallback(
                lambda _: result))
        return d.addCallback(send)

    def import_metadata(self, document, restore=True):
        """The VM of the metadata tar ``document`` made there (restored:
        its uuid kept; live: linked to the disks and networks it names):
        the refs there of the VMs made, the import task's result."""
        d = self._put("/import_metadata", {"restore": _flag(restore),
                                           "live": "true"},
                      web_client.FileBodyProducer(io.BytesIO(document)))
        return d.addCallback(_refs)

    @defer.inlineCallbacks
    def _put(self, path, query, body):
        """The upload, completing a task made there first: its outcome
        is known even if the peer closes the connection early."""
        task = yield self.call("task.create", "VM.migrate_send " + path, "")
        query = dict(query, session_id=self.session, task_id=task)
        url = peer_url(self.address, path + "?" + urlencode(sorted(
            query.items())))
        cut = None
        try:
            response = yield peer_agent(self.reactor).request(
                b"PUT", url, Headers({b"content-type":
                                      [b"application/octet-stream"]}), body)
            yield _drained(response)
        except web_client.RequestGenerationFailed as e:
            # Our side of the body failed (reading the disk): its error.
            yield self._forget(task)
            raise e.reasons[0].value
        except Exception as e:
            cut = e
        try:
            status = yield self._ended(task, TASK_WAIT if cut else 0)
            error, result = [], ""
            if status == "failure":
                error = yield self.call("task.get_error_info", task)
            elif status == "success":
                result = yield self.call("task.get_result", task)
        finally:
            yield self._forget(task)
        if status == "success" and cut is None:
            return result
        if error:
            raise XenAPIError(*error)
        if cut is not None:
            self._unreachable(self.address, cut)
        raise XenAPIError("INTERNAL_ERROR", "%s: the task there is %s"
                          % (path, status))

    @defer.inlineCallbacks
    def _ended(self, task, wait):
        """The task's status, once it is no longer pending (or after
        ``wait`` seconds)."""
        waited = 0.0
        while True:
            status = yield self.call("task.get_status", task)
            if status != "pending" or waited >= wait:
                return status
            yield task_module.deferLater(self.reactor, TASK_POLL,
                                         lambda: None)
            waited += TASK_POLL

    @defer.inlineCallbacks
    def _forget(self, task):
        try:
            yield self.call("task.destroy", task)
        except XenAPIError:
            pass


def _flag(value):
    return "true" if value else "false"


def _refs(result):
    """A task result holding a set of refs (an XML-RPC value)."""
    try:
        refs = decode_value(result)
    except MalformedRequest:
        refs = None
    if not isinstance(refs, list):
        raise XenAPIError("INTERNAL_ERROR", "import_metadata: the task's "
                          "result is %r" % (result,))
    return refs


def _drained(response):
    """The answer read to its end (the peer closes the connection)."""
    d = web_client.readBody(response)
    d.addErrback(lambda f: f.trap(web_client.PartialDownloadError))
    return d


@implementer(IBodyProducer)
class _ExportBody:
    """An export session's stream as a request body, read a batch at a
    time as the connection takes it."""

    length = UNKNOWN_LENGTH

    def __init__(self, session):
        self.session = session
        self._consumer = None
        self._finished = None
        self._paused = self._reading = self._stopped = False

    def startProducing(self, consumer):
        self._consumer = consumer
        self._finished = defer.Deferred()
        self._next()
        return self._finished

    def _next(self):
        if self._paused or self._reading or self._stopped:
            return
        self._reading = True
        self.session.next_batch().addCallbacks(self._got, self._failed)

    def _got(self, pieces):
        self._reading = False
        if self._stopped:
            return
        if not pieces:
            self._stopped = True
            self._finished.callback(None)
            return
        for piece in pieces:
            self._consumer.write(piece)
        self._next()

    def _failed(self, failure):
        self._reading = False
        if not self._stopped:
            self._stopped = True
            self._finished.errback(failure)

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._next()

    def stopProducing(self):
        self._stopped = True

"""
The NBD server's protocol: fixed newstyle negotiation (NBD_OPT_GO, INFO,
EXPORT_NAME, STARTTLS, LIST, ABORT), then simple replies to reads of one
VDI, read-only.

The export name is XAPI's, ``/<vdi uuid>?session_id=<session ref>``: the
session must be live and allowed to export the VDI's data.  When the
networks' purposes ask for TLS, nothing but STARTTLS and ABORT is
answered before the TLS handshake (NBD_REP_ERR_TLS_REQD), as xapi-nbd
requires.

Reads run on the storage pool, several at once per connection (clients
such as nbdcopy keep dozens of requests in flight), a few requests per
trip to the pool, and each reply goes out as its batch completes: simple replies may overtake each other, the
handle says which request they answer.  Memory stays bounded: at most
the service's ``requests_in_flight`` reads (and READ_BYTES_IN_FLIGHT
bytes) run at once, at most MAX_QUEUED requests wait behind them before
the connection stops being read, and no read starts while the
transport holds SEND_BUFFER bytes unsent.
"""

import struct
from collections import deque
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from txstorage import qemu
from txxapi.backpressure import PausableReading
from txxapi.datamodel.permissions import HTTP_PREFIX
from txxapi.errors import XenAPIError
from txxapi.nbd.info import tls_policy

log = Logger()

# The protocol's numbers the storage's own NBD client knows too.
NBDMAGIC = struct.pack(">Q", qemu.NBD_MAGIC)
IHAVEOPT = qemu.NBD_OPTS_MAGIC
REQUEST_MAGIC = qemu.NBD_REQUEST_MAGIC
SIMPLE_REPLY_MAGIC = qemu.NBD_REPLY_MAGIC
FLAG_FIXED_NEWSTYLE = qemu.NBD_FLAG_FIXED_NEWSTYLE
FLAG_NO_ZEROES = qemu.NBD_FLAG_NO_ZEROES
OPT_EXPORT_NAME = qemu.NBD_OPT_EXPORT_NAME
CMD_READ, CMD_WRITE = qemu.NBD_CMD_READ, qemu.NBD_CMD_WRITE
CMD_DISC, CMD_FLUSH = qemu.NBD_CMD_DISC, qemu.NBD_CMD_FLUSH

OPTION_REPLY_MAGIC = 0x3e889045565a9
OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 2, 3, 5, 6, 7

REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_TLS_REQD = (1 << 31) + 5
REP_ERR_UNKNOWN = (1 << 31) + 6

INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3

# Transmission flags: has flags, read-only, flush, multiple connections.
TRANSMISSION_FLAGS = 1 | 2 | 4 | 256

CMD_CACHE = 5
EPERM, EIO, EINVAL, ENOTSUP = 1, 5, 22, 95

MAX_OPTION = 64 << 10
MAX_REQUEST = 32 << 20
# Requests read ahead of those under way before the connection stops
# being read.
MAX_QUEUED = 16
# Reads a connection has under way at once, by default, and the bytes
# they may ask for together (one larger request still runs, alone).
REQUESTS_IN_FLIGHT = 16
READ_BYTES_IN_FLIGHT = 16 << 20
# Reads taken to the storage pool together: fewer trips, still several
# batches under way at once.
BATCH_REQUESTS = 4
BATCH_BYTES = 1 << 20
# Replies the transport may hold unsent before no more reads start.
SEND_BUFFER = 4 << 20
# Seconds a client has to finish the negotiation.
HANDSHAKE_TIMEOUT = 60.0
# What an export's reads look like: any byte, 4 KiB best, 32 MiB at most.
BLOCK_SIZES = (1, 4096, MAX_REQUEST)
# The permission an NBD export needs: that of /export_raw_vdi.
PERMISSION = HTTP_PREFIX + "get_export_raw_vdi"

_OPTION = struct.Struct(">QII")
_OPTION_REPLY = struct.Struct(">QIII")
_REQUEST = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")


class Refusal(Exception):
    """An export the client may not have: an option error reply."""

    def __init__(self, reply, message):
        Exception.__init__(self, message)
        self.reply = reply


@implementer(IPushProducer)
class NBDServerProtocol(protocol.Protocol, PausableReading):

    def __init__(self, service):
        self.service = service
        self.server = service.server
        self._buf = bytearray()
        self._phase = "flags"
        self._tls = None        # True: TLS required; False: plain
        self._tls_on = False
        self._no_zeroes = False
        self._busy = False      # an option under way
        self._reads = 0         # reads under way
        self._read_bytes = 0    # the bytes they asked for
        self._depth = service.requests_in_flight
        self._disconnecting = False     # NBD_CMD_DISC came
        self._advancing = self._again = False
        self._discard = 0       # bytes of a refused write still to skip
        self._reader = None
        self._requests = deque()
        self._paused = False    # the transport is full
        self._reading_paused = False
        self._timeout = None
        self._closing = False

    # -- connection ----------------------------------------------------------

    def connectionMade(self):
        self.service.remember(self)
        self._tls = tls_policy(self.server.db)
        if self._tls is None:
            # XAPI's server serves nobody until a network has exactly one
            # of the NBD purposes.
            log.info("NBD connection refused: no network has purpose "
                     "nbd or insecure_nbd (or both are set)")
            self.transport.loseConnection()
            return
        self._timeout = self.server.reactor.callLater(
            HANDSHAKE_TIMEOUT, self._handshake_timed_out)
        self.transport.write(NBDMAGIC + struct.pack(
            ">QH", IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))

    def _handshake_timed_out(self):
        self._timeout = None
        self.transport.abortConnection()

    def connectionLost(self, reason=None):
        self._closing = True
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        self.service.forget(self)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close().addErrback(
                lambda f: log.warn("closing an NBD export: {e}",
                                   e=f.getErrorMessage()))

    def _close(self):
        self._closing = True
        if self._phase == "transmission":
            # A producer paused when the last reply leaves would be asked
            # for more instead of the connection being closed.
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def dataReceived(self, data):
        if self._closing:
            return
        self._buf += data
        self._next()

    def _step(self):
        while not self._busy and not self._closing:
            if self._phase == "flags":
                if not self._flags():
                    return
            elif self._phase == "options":
                if not self._option():
                    return
            else:
                if not self._request():
                    return

    # -- negotiation ---------------------------------------------------------

    def _flags(self):
        if len(self._buf) < 4:
            return False
        (flags,) = struct.unpack_from(">I", self._buf)
        del self._buf[:4]
        if not flags & FLAG_FIXED_NEWSTYLE:
            self._close()
            return False
        self._no_zeroes = bool(flags & FLAG_NO_ZEROES)
        self._phase = "options"
        return True

    def _reply(self, option, reply, data=b""):
        self.transport.write(_OPTION_REPLY.pack(
            OPTION_REPLY_MAGIC, option, reply, len(data)) + data)

    def _option(self):
        if len(self._buf) < _OPTION.size:
            return False
        magic, option, length = _OPTION.unpack_from(self._buf)
        if magic != IHAVEOPT or length > MAX_OPTION:
            self._close()
            return False
        if len(self._buf) < _OPTION.size + length:
            return False
        data = bytes(self._buf[_OPTION.size:_OPTION.size + length])
        del self._buf[:_OPTION.size + length]
        if option == OPT_ABORT:
            self._reply(option, REP_ACK)
            self._close()
        elif option == OPT_STARTTLS:
            self._starttls(data)
        elif self._tls and not self._tls_on:
            if option == OPT_EXPORT_NAME:
                self._close()   # no way to say why
            else:
                self._reply(option, REP_ERR_TLS_REQD,
                            b"TLS is required on this server")
        elif option == OPT_LIST:
            # Exports need a session in their name: none to list.
            self._reply(option, REP_ACK)
        elif option in (OPT_INFO, OPT_GO):
            self._info_or_go(option, data)
        elif option == OPT_EXPORT_NAME:
            self._export_name(data)
        else:
            self._reply(option, REP_ERR_UNSUP)
        return True

    def _starttls(self, data):
        if data:
            self._reply(OPT_STARTTLS, REP_ERR_INVALID)
        elif not self._tls:
            self._reply(OPT_STARTTLS, REP_ERR_POLICY,
                        b"TLS is not offered on this server")
        elif self._tls_on:
            self._reply(OPT_STARTTLS, REP_ERR_INVALID,
                        b"TLS is already on")
        else:
            self._reply(OPT_STARTTLS, REP_ACK)
            self._tls_on = True
            self.transport.startTLS(self.service.tls_context())

    def _info_or_go(self, option, data):
        if len(data) < 6:
            self._reply(option, REP_ERR_INVALID)
            return
        (n,) = struct.unpack_from(">I", data)
        if len(data) < 4 + n + 2:
            self._reply(option, REP_ERR_INVALID)
            return
        name = data[4:4 + n]
        (count,) = struct.unpack_from(">H", data, 4 + n)
        if len(data) != 4 + n + 2 + 2 * count:
            self._reply(option, REP_ERR_INVALID)
            return
        wanted = struct.unpack_from(">%dH" % count, data, 4 + n + 2)
        self._busy = True
        d = self._open(name, attach=option == OPT_GO)

        def opened(size):
            self._busy = False
            if self._closing:
                return
            info = struct.pack(">HQH", INFO_EXPORT, size,
                               TRANSMISSION_FLAGS)
            self._reply(option, REP_INFO, info)
            if INFO_BLOCK_SIZE in wanted:
                self._reply(option, REP_INFO, struct.pack(
                    ">HIII", INFO_BLOCK_SIZE, *BLOCK_SIZES))
            self._reply(option, REP_ACK)
            if option == OPT_GO:
                self._transmission()
            self._step()

        def refused(failure):
            self._busy = False
            failure.trap(Refusal)
            if not self._closing:
                self._reply(option, failure.value.reply,
                            str(failure.value).encode("utf-8"))
                self._step()
        d.addCallbacks(opened, refused)
        d.addErrback(self._crashed)

    def _export_name(self, name):
        self._busy = True
        d = self._open(name, attach=True)

        def opened(size):
            self._busy = False
            if self._closing:
                return
            tail = b"" if self._no_zeroes else bytes(124)
            self.transport.write(struct.pack(">QH", size,
                                             TRANSMISSION_FLAGS) + tail)
            self._transmission()
            self._step()

        def refused(failure):
            failure.trap(Refusal)
            self._close()
        d.addCallbacks(opened, refused)
        d.addErrback(self._crashed)

    def _crashed(self, failure):
        log.failure("NBD connection", failure)
        self._close()

    def _open(self, name, attach):
        """A Deferred of the export's size (attaching it for GO and
        EXPORT_NAME), or a Refusal."""
        try:
            vdi = self._authorise(name)
        except Refusal as refusal:
            return defer.fail(refusal)
        db = self.server.db
        if not attach:
            return defer.succeed(db.fields("VDI", vdi)["virtual_size"])
        try:
            self.server.storage.assert_free(vdi, False)
        except XenAPIError as e:
            return defer.fail(Refusal(REP_ERR_POLICY, " ".join(e.args)))
        d = self.server.storage.open_reader(vdi)

        def opened(reader):
            if self._closing:
                reader.close()
                raise Refusal(REP_ERR_POLICY, "the client went away")
            self._reader = reader
            return reader.size

        def failed(failure):
            failure.trap(XenAPIError)
            raise Refusal(REP_ERR_POLICY, " ".join(
                str(a) for a in failure.value.args))
        return d.addCallbacks(opened, failed)

    def _authorise(self, name):
        """The VDI the export name names, if its session may read it."""
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(REP_ERR_INVALID, "export name is not UTF-8")
        parts = urlsplit(text)
        uuid = parts.path.lstrip("/")
        session = parse_qs(parts.query).get("session_id", [None])[0]
        if session is None:
            raise Refusal(REP_ERR_POLICY, "no session_id in the export name")
        server = self.server
        try:
            server.sessions.check(session)
        except XenAPIError:
            raise Refusal(REP_ERR_POLICY, "SESSION_INVALID")
        if not server.sessions.permissions.allows(session, PERMISSION):
            raise Refusal(REP_ERR_POLICY,
                          "RBAC_PERMISSION_DENIED " + PERMISSION)
        try:
            vdi = server.db.by_uuid("VDI", uuid)
        except XenAPIError:
            raise Refusal(REP_ERR_UNKNOWN, "no VDI with UUID " + uuid)
        if server.db.fields("VDI", vdi)["type"] == "cbt_metadata":
            raise Refusal(REP_ERR_POLICY, "VDI_INCOMPATIBLE_TYPE")
        return vdi

    # -- transmission --------------------------------------------------------

    def _transmission(self):
        self._phase = "transmission"
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        self.transport.registerProducer(self, True)
        if self._depth > 1:
            # The transport pauses its producer past bufferSize (64 KiB by
            # default, less than one reply) and resumes it only once
            # empty: reads could then never overlap the sending.
            self.transport.bufferSize = SEND_BUFFER

    def _request(self):
        """Take the next request off the connection, if whole."""
        if self._disconnecting:
            del self._buf[:]
            return False
        if self._discard:
            n = min(self._discard, len(self._buf))
            del self._buf[:n]
            self._discard -= n
            if self._discard:
                return False
        if len(self._requests) >= MAX_QUEUED:
            self._pause_reading()
            return False
        if len(self._buf) < _REQUEST.size:
            return False
        magic, _flags, cmd, handle, offset, length = \
            _REQUEST.unpack_from(self._buf)
        if magic != REQUEST_MAGIC:
            self._close()
            return False
        del self._buf[:_REQUEST.size]
        if cmd == CMD_WRITE:
            # Its payload follows: skipped, the write refused.
            if length > MAX_REQUEST:
                self._close()
                return False
            self._discard = length
        self._requests.append((cmd, handle, offset, length))
        self._serve()
        return True

    def _serve(self):
        """Start queued requests while the limits allow: reads in batches
        of a few, each batch one trip to the storage pool."""
        batch, size = [], 0
        while self._requests and not (self._paused or self._closing or
                                      self._disconnecting):
            cmd, handle, offset, length = self._requests[0]
            if cmd == CMD_READ and length and length <= MAX_REQUEST and \
                    offset + length <= self._reader.size:
                reads = self._reads + len(batch)
                if reads and (reads >= self._depth or self._read_bytes +
                              size + length > READ_BYTES_IN_FLIGHT):
                    break
                self._requests.popleft()
                batch.append((handle, offset, length))
                size += length
                if len(batch) >= BATCH_REQUESTS or size >= BATCH_BYTES:
                    self._read(batch, size)
                    batch, size = [], 0
                continue
            if batch:
                self._read(batch, size)
                batch, size = [], 0
            self._requests.popleft()
            if cmd == CMD_DISC:
                # The reads under way are answered first.
                self._disconnecting = True
                self._requests.clear()
            elif cmd == CMD_READ:
                self._simple(handle, 0 if length == 0 else EINVAL)
            elif cmd in (CMD_FLUSH, CMD_CACHE):
                self._simple(handle, 0)
            elif cmd == CMD_WRITE:
                self._simple(handle, EPERM)
            else:
                self._simple(handle, ENOTSUP)
        if batch:
            self._read(batch, size)
        if self._disconnecting and not self._reads and not self._closing:
            self._close()
        if self._reading_paused and len(self._requests) < MAX_QUEUED // 2:
            self._resume_reading()

    def _simple(self, handle, error, data=b""):
        self.transport.write(_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle))
        if data:
            self.transport.write(data)

    def _read(self, batch, size):
        """Read a batch of (handle, offset, length); each reply goes out
        when the batch is done."""
        self._reads += len(batch)
        self._read_bytes += size
        d = self._reader.pread_many([(o, n) for _, o, n in batch])

        def done(results):
            for (handle, offset, length), data in zip(batch, results):
                if isinstance(data, Exception):
                    log.warn("NBD read of {n} bytes at {at}: {e}", n=length,
                             at=offset, e=data)
                    data = None
                if self._closing:
                    return
                if data is None:
                    self._simple(handle, EIO)
                else:
                    self._simple(handle, 0, data)

        def failed(failure):
            done([failure.value] * len(batch))

        def answered(_):
            self._reads -= len(batch)
            self._read_bytes -= size
            if not self._closing:
                self._next()
        d.addCallbacks(done, failed)
        d.addCallback(answered)
        d.addErrback(self._crashed)

    def _next(self):
        # A read that completes at once (storage run inline) must not
        # recurse through the next ones: the outer call loops instead.
        if self._advancing:
            self._again = True
            return
        self._advancing = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._serve()
                self._step()
        finally:
            self._advancing = False

    # -- IPushProducer (the transport's buffer) ------------------------------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._next()

    def stopProducing(self):
        self._closing = True


class NBDFactory(protocol.Factory):

    def __init__(self, service):
        self.service = service

    def buildProtocol(self, addr):
        if len(self.service.connections) >= self.service.connection_limit:
            log.warn("NBD connection from {addr} refused: at the limit",
                     addr=addr)
            return None
        return NBDServerProtocol(self.service)

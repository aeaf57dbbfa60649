"""
Durable, group-committed redo log for the in-memory pool database.

Every change record the database emits is appended here before the API call
that caused it is answered.  A single writer thread owns the file: it takes
everything queued since its last pass, writes it with one write() and makes
it durable with one fdatasync(), so N concurrent API calls share one disk
flush.  Readiness is reported back to the reactor, which fires the waiting
Deferreds in generation order.

Change records are tuples ``(generation, op, table, ref, fields)`` with op in
add/mod/del/touch.  "touch" records are logged like the others (they are
tiny, and logging them keeps the generation counter exact across a restart);
a caller that prefers to drop them can simply not append them.

On disk
-------
The directory holds segments ``redo-<first generation, 20 digits>.log``
(other files are ignored, so the snapshot may share the directory).  A
segment is a sequence of frames::

    length (u32, big endian) | crc32 of payload (u32, big endian) | payload

The payload is JSON.  A payload starting with ``[`` is plain JSON; one
starting with ``T`` is "tagged": single-key objects whose key begins with
NUL carry the types JSON cannot express (see ``_TAG_*``).

Crash rules: only the tail of the last segment can be torn (segments are
fsync'd before the next one is created).  Readers stop at the first bad frame
of the last segment; opening for append cuts it off.  A bad frame anywhere
else, or a well-formed frame out of generation order, raises RedoLogCorrupt.
"""

import heapq
import json
import math
import os
import queue
import re
import struct
import threading
import zlib

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from txxapi.values import DateTime, Int32

try:
    import orjson
except ImportError:  # pragma: no cover - exercised via the stdlib functions
    orjson = None

__all__ = [
    "RedoLog",
    "RedoLogError",
    "RedoLogCorrupt",
    "encode_record",
    "decode_payload",
    "encode_payload",
    "replay",
    "segment_name",
    "list_segments",
    "log_bytes",
]

log = Logger()

OPS = frozenset(("add", "mod", "del", "touch"))

_HEADER = struct.Struct(">II")
HEADER_SIZE = _HEADER.size
_SEGMENT_RE = re.compile(r"^redo-(\d{20})\.log$")

# Tags for values plain JSON cannot carry exactly.
_TAG_DATETIME = "\0d"   # DateTime -> its text
_TAG_INT32 = "\0i"      # Int32 -> the number
_TAG_FLOAT = "\0f"      # nan / inf / -inf -> "nan", "inf", "-inf"
_TAG_BIGINT = "\0n"     # int outside [-2**63, 2**64) -> decimal text
_TAG_BADSTR = "\0u"     # str with lone surrogates -> hex of its utf-8
_TAG_MAP = "\0m"        # dict with keys that aren't plain str -> [[k, v]]

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1  # orjson accepts unsigned 64-bit as well
_GEN_MAX = (1 << 63) - 1
# Segments hold everything the database holds, secrets included.
FILE_MODE = 0o600
DIR_MODE = 0o700


class RedoLogError(Exception):
    """The log cannot be used (I/O failure, closed, in use elsewhere)."""


class RedoLogCorrupt(RedoLogError):
    """The log holds damage that a crash cannot explain."""


# ---------------------------------------------------------------------------
# Codec


def _plain_str(s):
    """True if s survives a UTF-8 JSON round trip unchanged."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _to_tagged(v):
    """Turn a value into plain JSON data, tagging what JSON would lose."""
    t = type(v)
    if t is str:
        if _plain_str(v):
            return v
        return {_TAG_BADSTR: v.encode("utf-8", "surrogatepass").hex()}
    if t is bool or v is None:
        return v
    if t is int:
        if _INT_MIN <= v <= _INT_MAX:
            return v
        return {_TAG_BIGINT: str(v)}
    if t is float:
        if math.isfinite(v):
            return v
        return {_TAG_FLOAT: repr(v)}
    if t is dict:
        return _dict_to_tagged(v)
    if t is list or t is tuple:
        return [_to_tagged(x) for x in v]
    if t is DateTime:
        return {_TAG_DATETIME: str(v)}
    if t is Int32:
        return {_TAG_INT32: int(v)}
    # Subclasses we don't know degrade to their base type.
    if isinstance(v, str):
        return _to_tagged(str(v))
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return _to_tagged(int(v))
    if isinstance(v, float):
        return _to_tagged(float(v))
    if isinstance(v, dict):
        return _dict_to_tagged(v)
    if isinstance(v, (list, tuple)):
        return [_to_tagged(x) for x in v]
    raise TypeError("cannot log value of type %s" % (t.__name__,))


def _dict_to_tagged(d):
    for k in d:
        if type(k) is not str or k[:1] == "\0" or not _plain_str(k):
            return {_TAG_MAP: [[_to_tagged(k), _to_tagged(x)]
                               for k, x in d.items()]}
    return {k: _to_tagged(x) for k, x in d.items()}


def _untag_float(text):
    return float(text)


_UNTAG = {
    _TAG_DATETIME: DateTime,
    _TAG_INT32: Int32,
    _TAG_FLOAT: _untag_float,
    _TAG_BIGINT: int,
    _TAG_BADSTR: lambda h: bytes.fromhex(h).decode("utf-8", "surrogatepass"),
    _TAG_MAP: lambda pairs: {_from_tagged(k): _from_tagged(x)
                             for k, x in pairs},
}


_CONTAINERS = (dict, list)


def _from_tagged(v):
    t = type(v)
    if t is dict:
        if len(v) == 1:
            for k, x in v.items():
                if k[:1] == "\0":
                    return _UNTAG[k](x)
        # Only containers can hold tags: leave scalars alone (speed).
        return {k: _from_tagged(x) if type(x) in _CONTAINERS else x
                for k, x in v.items()}
    if t is list:
        return [_from_tagged(x) if type(x) in _CONTAINERS else x for x in v]
    return v


def _record_body(record):
    gen, op, table, ref, fields = record
    if fields is None:
        # A trailing null would push every "del" off the fast path.
        return (gen, op, table, ref)
    return (gen, op, table, ref, fields)


def encode_payload_stdlib(record):
    """Payload for one record using only the standard library."""
    text = json.dumps(_to_tagged(_record_body(record)),
                      separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return b"T" + text.encode("utf-8")


if orjson is not None:
    _OPT = orjson.OPT_PASSTHROUGH_SUBCLASS
    _TAG_MARK = b'{"\\u0000'

    def encode_payload_orjson(record):
        """Payload for one record; orjson does the walking.

        Fast path: orjson serialises the record natively and calls back only
        for DateTime/Int32 (subclasses are passed through), which become tag
        objects.  Anything else unusual (non-str keys, huge ints, lone
        surrogates, None/NaN - orjson writes NaN as null) makes us fall back
        to the Python walker, which is exact but slower.
        """
        body = _record_body(record)
        tags = 0

        def default(o):
            nonlocal tags
            t = type(o)
            if t is DateTime:
                tags += 1
                return {_TAG_DATETIME: str(o)}
            if t is Int32:
                tags += 1
                return {_TAG_INT32: int(o)}
            raise TypeError

        try:
            out = orjson.dumps(body, default=default, option=_OPT)
        except TypeError:
            return b"T" + orjson.dumps(_to_tagged(body))
        if b"null" in out:
            # Could be a NaN/inf turned into null: redo it exactly.
            return b"T" + orjson.dumps(_to_tagged(body))
        if not tags:
            return out
        # Each tag object starts with '{"\u0000'; so does any real dict whose
        # first key starts with NUL.  If the counts differ such a dict exists
        # and must be escaped by the walker.
        if out.count(_TAG_MARK) != tags:
            return b"T" + orjson.dumps(_to_tagged(body))
        return b"T" + out

    def _loads(data):
        return orjson.loads(data)

    encode_payload = encode_payload_orjson
else:  # pragma: no cover
    encode_payload_orjson = None
    encode_payload = encode_payload_stdlib

    def _loads(data):
        return json.loads(data)


def _decode_body(body):
    if len(body) == 5:
        return (body[0], body[1], body[2], body[3], body[4])
    if len(body) == 4:
        return (body[0], body[1], body[2], body[3], None)
    raise ValueError("bad record arity %d" % len(body))


def decode_payload(payload, loads=None):
    """Record tuple from a payload (bytes).  ``loads`` picks the JSON
    parser (default: orjson if present, else json.loads)."""
    loads = loads or _loads
    payload = bytes(payload)
    if payload[:1] == b"T":
        return _decode_body(_from_tagged(loads(payload[1:])))
    return _decode_body(loads(payload))


def frame(payload):
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_record(record):
    """Complete frame (header + payload) for one change record."""
    return frame(encode_payload(record))


def _peek_generation(payload):
    """Generation of a payload without decoding the whole record."""
    start = 2 if payload[:1] == b"T" else 1
    end = payload.index(b",", start)
    return int(payload[start:end])


# ---------------------------------------------------------------------------
# Segments and reading


def segment_name(first_generation):
    return "redo-%020d.log" % first_generation


def list_segments(directory):
    """Sorted [(first_generation, file name)] of the log's segments."""
    found = []
    for name in os.listdir(directory):
        m = _SEGMENT_RE.match(name)
        if m:
            found.append((int(m.group(1)), name))
    found.sort()
    return found


def log_bytes(directory):
    """Total size of the log's segments (0 if there is no log yet)."""
    if not os.path.isdir(directory):
        return 0
    return sum(os.path.getsize(os.path.join(directory, name))
               for _first, name in list_segments(directory))


def _make_private(directory, segments):
    """Segments written by older versions were world-readable."""
    for _first, name in segments:
        path = os.path.join(directory, name)
        if os.stat(path).st_mode & 0o777 != FILE_MODE:
            os.chmod(path, FILE_MODE)


def _frames(path, tolerate_tail):
    """Yield (payload, end offset) for every good frame of a segment.

    A bad frame ends the iteration if ``tolerate_tail`` (the caller uses the
    last end offset as the good length), else raises RedoLogCorrupt.
    """
    with open(path, "rb", buffering=1 << 20) as f:
        offset = 0
        while True:
            head = f.read(HEADER_SIZE)
            if not head:
                return
            problem = None
            if len(head) < HEADER_SIZE:
                problem = "short header"
            else:
                length, crc = _HEADER.unpack(head)
                if length == 0:
                    # Also what a zero-filled tail looks like.
                    problem = "zero length"
                else:
                    payload = f.read(length)
                    if len(payload) < length:
                        problem = "short payload"
                    elif zlib.crc32(payload) != crc:
                        problem = "checksum mismatch"
            if problem is not None:
                if tolerate_tail:
                    return
                raise RedoLogCorrupt("%s at offset %d of %s"
                                     % (problem, offset,
                                        os.path.basename(path)))
            offset += HEADER_SIZE + length
            yield payload, offset


def _segment_frames(directory, segments, index):
    """Like _frames, plus generation checks against the segment name and
    the next segment's name.  Yields (generation, payload, end offset)."""
    first, name = segments[index]
    last_segment = index == len(segments) - 1
    limit = None if last_segment else segments[index + 1][0]
    prev = None
    path = os.path.join(directory, name)
    for payload, end in _frames(path, tolerate_tail=last_segment):
        try:
            gen = _peek_generation(payload)
        except ValueError:
            raise RedoLogCorrupt("unreadable record in %s" % name) from None
        if prev is None and gen != first:
            raise RedoLogCorrupt("%s starts with generation %d"
                                 % (name, gen))
        if prev is not None and gen <= prev:
            raise RedoLogCorrupt("generation %d after %d in %s"
                                 % (gen, prev, name))
        if limit is not None and gen >= limit:
            raise RedoLogCorrupt("generation %d in %s overlaps the next "
                                 "segment" % (gen, name))
        prev = gen
        yield gen, payload, end


def replay(directory, after_generation=-1):
    """Iterate over logged records with generation > after_generation, in
    order.  Read-only: a torn tail of the last segment is skipped, not cut.
    Raises RedoLogCorrupt for damage a crash cannot explain."""
    segments = list_segments(directory)
    for i in range(len(segments)):
        if (i + 1 < len(segments)
                and segments[i + 1][0] <= after_generation + 1):
            continue  # every record here is <= after_generation
        for gen, payload, _end in _segment_frames(directory, segments, i):
            if gen <= after_generation:
                continue
            try:
                yield decode_payload(payload)
            except (ValueError, TypeError, KeyError) as e:
                raise RedoLogCorrupt("undecodable record %d: %s"
                                     % (gen, e)) from None


# ---------------------------------------------------------------------------
# Writer


def _fsync_data(fd):
    # fdatasync still flushes the size change of an append.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover
        os.fsync(fd)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# Control entries on the writer queue (records are (generation, frame)).
_ROTATE = "rotate"
_DROP = "drop"
_CLOSE = "close"


class RedoLog:
    """Append-only, group-committed redo log over one directory.

    Thread rules: every public method must be called on the reactor thread.
    Deferreds fire on the reactor thread (via ``reactor.callFromThread``).
    The writer is one private daemon thread; ``stats`` is updated by it and
    may be read anywhere (values are advisory while it runs).
    """

    def __init__(self, directory, reactor=None, group_commit=True):
        if reactor is None:
            from twisted.internet import reactor
        self.directory = directory
        self.group_commit = group_commit
        self._reactor = reactor
        self.stats = {"fsyncs": 0, "dir_fsyncs": 0, "writes": 0,
                      "records": 0, "bytes": 0}

        if not os.path.isdir(directory):
            os.makedirs(directory, mode=DIR_MODE)
            _fsync_dir(os.path.dirname(os.path.abspath(directory)))
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            import fcntl
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._dir_fd)
            raise RedoLogError("redo log directory is in use by another "
                               "process") from None
        except ImportError:  # pragma: no cover
            pass

        try:
            last_gen, self._fd, self._fd_start = self._recover()
        except BaseException:
            os.close(self._dir_fd)
            raise
        # Writer-thread state.  _closed_last: last generation of segments
        # closed by rotate (lets drop_through delete a closed segment that
        # has no successor yet).
        self._fd_last = last_gen
        self._closed_last = {}

        # Reactor-thread state; -1 means "no generation".
        self._last_on_disk = last_gen
        self._durable = last_gen
        self._last_appended = last_gen
        self._floor = last_gen
        self._waiters = []
        self._seq = 0
        self._failure = None
        self._closing = None
        self._closed = False
        self._close_waiters = []
        self._drops = set()

        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run,
                                        name="redolog-writer", daemon=True)
        self._thread.start()

    # -- opening ----------------------------------------------------------

    def _recover(self):
        """Check the last segment, cut a torn tail, reopen it for append.
        Returns (last generation or -1, fd or None, its first generation)."""
        segments = list_segments(self.directory)
        _make_private(self.directory, segments)
        while segments:
            first, name = segments[-1]
            path = os.path.join(self.directory, name)
            good, last = 0, -1
            for gen, _payload, end in _segment_frames(
                    self.directory, segments, len(segments) - 1):
                good, last = end, gen
            size = os.path.getsize(path)
            if good < size:
                log.warn("redo log: discarding {n} bytes of torn tail at "
                         "offset {off} of {name}", n=size - good, off=good,
                         name=name)
            if good == 0:
                # Empty after the cut: remove it so the next record starts a
                # segment named after itself.
                os.unlink(path)
                os.fsync(self._dir_fd)
                segments.pop()
                continue
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            if good < size:
                os.ftruncate(fd, good)
                os.fsync(fd)
            return last, fd, first
        # No segments: the last generation is unknown to the log.
        return -1, None, None

    # -- reactor-thread API ----------------------------------------------

    @property
    def last_generation(self):
        """Last generation found on disk when the log was opened, or None."""
        return None if self._last_on_disk < 0 else self._last_on_disk

    @property
    def durable_generation(self):
        """Highest generation known (on the reactor) to be on disk."""
        return None if self._durable < 0 else self._durable

    def append(self, record):
        """Queue one change record.  Returns the size of its frame (what
        the log grows by); raises ValueError for a malformed or
        out-of-order record, TypeError for an unloggable value,
        RedoLogError once the log has failed or is closing."""
        if self._failure is not None:
            raise RedoLogError("redo log has failed") from self._failure.value
        if self._closing is not None:
            raise RedoLogError("redo log is closed")
        gen = record[0]
        if type(gen) is not int:
            if not isinstance(gen, int) or isinstance(gen, bool):
                raise ValueError("generation must be an int")
            gen = int(gen)
            record = (gen,) + tuple(record[1:])
        if gen > _GEN_MAX:
            raise ValueError("generation out of range")
        if gen <= self._floor:
            raise ValueError("generation %d not above %d" % (gen, self._floor))
        if record[1] not in OPS:
            raise ValueError("unknown op %r" % (record[1],))
        data = encode_record(record)
        self._floor = self._last_appended = gen
        self._queue.put((gen, data))
        return len(data)

    def is_durable(self, generation):
        """Whether every record appended so far with generation <=
        ``generation`` is on disk (what wait_durable would answer at once,
        without a Deferred)."""
        return min(generation, self._last_appended) <= self._durable

    def wait_durable(self, generation):
        """Deferred firing (with ``generation``) once every record appended
        so far with generation <= ``generation`` is on disk.  Fires at once
        if that's already so.  Errbacks with RedoLogError if the writer
        fails first."""
        target = min(generation, self._last_appended)
        if target <= self._durable:
            return defer.succeed(generation)
        if self._failure is not None:
            return defer.fail(RedoLogError("redo log has failed"))
        d = defer.Deferred()
        self._seq += 1
        heapq.heappush(self._waiters, (target, self._seq, d, generation))
        return d

    def rotate(self, generation=None):
        """End the current segment after everything appended so far; the
        next record starts a new one.  ``generation`` (default: the last
        appended) is the boundary the caller's snapshot covers; later
        appends must be above it.  Returns the boundary.  The switch happens
        on the writer thread, in order with appends."""
        if self._closing is not None:
            raise RedoLogError("redo log is closed")
        boundary = self._last_appended if generation is None else generation
        if boundary < self._last_appended:
            raise ValueError("rotate(%d) below last appended %d"
                             % (boundary, self._last_appended))
        self._floor = max(self._floor, boundary)
        self._queue.put((None, _ROTATE, None))
        return None if boundary < 0 else boundary

    def drop_through(self, generation):
        """Delete segments whose records are all <= ``generation`` (call it
        once a snapshot covering ``generation`` is safely on disk).  Runs on
        the writer thread after everything queued before it; the Deferred
        fires with the list of deleted file names.  The segment being
        written to is never deleted: rotate() first."""
        if self._closing is not None:
            return defer.fail(RedoLogError("redo log is closed"))
        if self._failure is not None:
            return defer.fail(RedoLogError("redo log has failed"))
        d = defer.Deferred()
        self._drops.add(d)
        self._queue.put((None, _DROP, (generation, d)))
        return d

    def close(self):
        """Write and fsync everything queued, close the file and stop the
        writer.  Returns a Deferred that fires (with the durable generation,
        or None) after pending wait_durable Deferreds have fired, or
        errbacks with RedoLogError if the writer had failed; suitable as a
        service's stopService result.  May be called more than once."""
        d = defer.Deferred()
        if self._closed:
            self._fire_close(d)
            return d
        self._close_waiters.append(d)
        if self._closing is None:
            self._closing = True
            if self._failure is None:
                self._queue.put((None, _CLOSE, None))
            else:
                self._finish_close()
        return d

    def _fire_close(self, d):
        if self._failure is not None:
            d.errback(RedoLogError("redo log has failed: %s"
                                   % (self._failure.getErrorMessage(),)))
        else:
            d.callback(self.durable_generation)

    # -- reactor-side callbacks from the writer ---------------------------

    def _on_durable(self, generation):
        if generation > self._durable:
            self._durable = generation
        ready = []
        while self._waiters and self._waiters[0][0] <= self._durable:
            ready.append(heapq.heappop(self._waiters))
        for _target, _seq, d, requested in ready:
            if not d.called:  # may have been cancelled
                d.callback(requested)

    def _drop_done(self, d, result):
        if d in self._drops:
            self._drops.discard(d)
            if not d.called:  # may have been cancelled
                d.callback(result)  # a Failure result errbacks

    def _on_failure(self, failure):
        if self._failure is None:
            self._failure = failure
            log.failure("redo log writer failed; no further writes will be "
                        "acknowledged", failure)
        waiters, self._waiters = self._waiters, []
        for _target, _seq, d, _requested in sorted(waiters):
            if not d.called:
                d.errback(RedoLogError("redo log has failed: %s"
                                       % (failure.getErrorMessage(),)))
        drops, self._drops = self._drops, set()
        for d in drops:
            if not d.called:
                d.errback(RedoLogError("redo log has failed"))
        if self._closing is not None:
            self._finish_close()

    def _finish_close(self):
        if self._closed:
            return
        self._closed = True
        try:
            os.close(self._dir_fd)  # also releases the directory lock
        except OSError:
            pass
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            self._fire_close(d)

    # -- writer thread ----------------------------------------------------

    def _run(self):
        call = self._reactor.callFromThread
        try:
            while True:
                items = [self._queue.get()]
                try:
                    while True:
                        items.append(self._queue.get_nowait())
                except queue.Empty:
                    pass
                if self._process(items):
                    break
        except BaseException:
            failure = Failure()
            try:
                self._close_fd()
            except OSError:
                pass
            call(self._on_failure, failure)
            return
        call(self._finish_close)

    def _process(self, items):
        """Handle one batch; True once a close request has been done."""
        pending = []
        pending_gen = -1
        for item in items:
            gen = item[0]
            if gen is not None:
                if self._fd is None:
                    self._open_segment(gen)
                pending.append(item[1])
                pending_gen = gen
                if not self.group_commit:
                    self._flush(pending, pending_gen)
                    pending = []
                continue
            if pending:
                self._flush(pending, pending_gen)
                pending = []
            kind, arg = item[1], item[2]
            if kind == _ROTATE:
                self._close_fd()
            elif kind == _DROP:
                self._drop(*arg)
            elif kind == _CLOSE:
                self._close_fd()
                return True
        if pending:
            self._flush(pending, pending_gen)
        return False

    def _flush(self, frames, generation):
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        _write_all(self._fd, data)
        _fsync_data(self._fd)
        self._fd_last = generation
        stats = self.stats
        stats["writes"] += 1
        stats["fsyncs"] += 1
        stats["records"] += len(frames)
        stats["bytes"] += len(data)
        self._reactor.callFromThread(self._on_durable, generation)

    def _open_segment(self, generation):
        path = os.path.join(self.directory, segment_name(generation))
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        self._fd_start = generation
        self._fd_last = -1
        os.fsync(self._dir_fd)
        self.stats["dir_fsyncs"] += 1

    def _close_fd(self):
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self._fd_last >= 0:
            self._closed_last[self._fd_start] = self._fd_last
        # Everything written was already fdatasync'd by _flush.
        os.close(fd)

    def _drop(self, generation, d):
        removed = []
        try:
            segments = list_segments(self.directory)
            for i, (first, name) in enumerate(segments):
                if self._fd is not None and first == self._fd_start:
                    break
                if i + 1 < len(segments):
                    last = segments[i + 1][0] - 1
                else:
                    last = self._closed_last.get(first)
                if last is None or last > generation:
                    break
                os.unlink(os.path.join(self.directory, name))
                self._closed_last.pop(first, None)
                removed.append(name)
            if removed:
                os.fsync(self._dir_fd)
                self.stats["dir_fsyncs"] += 1
        except OSError:
            self._reactor.callFromThread(self._drop_done, d, Failure())
            return
        self._reactor.callFromThread(self._drop_done, d, removed)

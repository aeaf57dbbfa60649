"""
The redo log's writer: RedoLog appends records on the reactor thread and
one thread of its own writes them, many to a write() and fdatasync(), and
tells the reactor which generations are durable.
"""

import heapq
import os
import queue
import threading

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from txxapi.db.redolog.codec import OPS
from txxapi.db.redolog.segments import DIR_MODE, FILE_MODE, RedoLogError, \
    encode_record, list_segments, recover, segment_name

log = Logger()

_GEN_MAX = (1 << 63) - 1


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
            last_gen, self._fd, self._fd_start = recover(
                directory, self._dir_fd)
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

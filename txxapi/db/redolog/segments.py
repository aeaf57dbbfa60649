"""
The redo log on disk.

The directory holds segments ``redo-<first generation, 20 digits>.log``
(other files are ignored, so the snapshot may share the directory).  A
segment is a sequence of frames::

    length (u32, big endian) | crc32 of payload (u32, big endian) | payload

with payloads as txxapi.db.redolog.codec makes them.

Crash rules: only the tail of the last segment can be torn (segments are
fsync'd before the next one is created).  Readers stop at the first bad frame
of the last segment; opening for append cuts it off.  A bad frame anywhere
else, or a well-formed frame out of generation order, raises RedoLogCorrupt.
"""

import os
import re
import struct
import zlib

from twisted.logger import Logger

from txxapi.db.redolog.codec import decode_payload, encode_payload, \
    peek_generation

log = Logger()

_HEADER = struct.Struct(">II")
HEADER_SIZE = _HEADER.size
_SEGMENT_RE = re.compile(r"^redo-(\d{20})\.log$")
# Segments hold everything the database holds, secrets included.
FILE_MODE = 0o600
DIR_MODE = 0o700


class RedoLogError(Exception):
    """The log cannot be used (I/O failure, closed, in use elsewhere)."""


class RedoLogCorrupt(RedoLogError):
    """The log holds damage that a crash cannot explain."""


def frame(payload):
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_record(record):
    """Complete frame (header + payload) for one change record."""
    return frame(encode_payload(record))


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
            gen = peek_generation(payload)
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


def recover(directory, dir_fd):
    """Check the last segment, cut a torn tail, reopen it for append
    (``dir_fd``: the directory, open, to make removals durable).  Returns
    (last generation or -1, fd or None, its first generation)."""
    segments = list_segments(directory)
    _make_private(directory, segments)
    while segments:
        first, name = segments[-1]
        path = os.path.join(directory, name)
        good, last = 0, -1
        for gen, _payload, end in _segment_frames(
                directory, segments, len(segments) - 1):
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
            os.fsync(dir_fd)
            segments.pop()
            continue
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if good < size:
            os.ftruncate(fd, good)
            os.fsync(fd)
        return last, fd, first
    # No segments: the last generation is unknown to the log.
    return -1, None, None

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

The parts: ``codec`` turns a record into a payload and back, ``segments``
is the on-disk format (frames in segment files, reading, replay and the
recovery of a torn tail), ``writer`` the RedoLog that appends.
"""

from txxapi.db.redolog.codec import (decode_payload, encode_payload,
                                     encode_payload_orjson,
                                     encode_payload_stdlib)
from txxapi.db.redolog.segments import (FILE_MODE, RedoLogCorrupt,
                                        RedoLogError, encode_record,
                                        list_segments, log_bytes, replay,
                                        segment_name)
from txxapi.db.redolog.writer import RedoLog

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
    # what benchmarks and tests reach for besides
    "encode_payload_orjson",
    "encode_payload_stdlib",
    "FILE_MODE",
]

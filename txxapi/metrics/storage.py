"""
The RRDs on disk, so that a restart keeps their history: one file,
``<data-dir>/metrics/rrds``, replaced atomically.  Each RRD is one
zlib-compressed record: a JSON head (owner, sources, the state of every
archive) and the rows as raw single-precision floats, about 3 KiB per
source with the default archives before compression, much less after
(unknown rows compress to nothing).  After them, the rows of the 5 s
archives as /rrd_updates prints them (formats.row_text), so that a
client asking right after a start finds them printed: printing them
again is seconds at 1,000 VMs.

``encode`` runs under the store's lock and only copies bytes and
references out; joining, compressing and writing happen after it, on a
thread (``save``).  A file
that cannot be read is set aside and the RRDs start afresh, as after a
host's disk lost them.
"""

import json
import logging
import os
import struct
import zlib
from array import array

from txxapi.files import atomic_file
from txxapi.metrics.rrd import RRD, Archive, DataSource
from txxapi.metrics.store import Owner

log = logging.getLogger(__name__)

MAGIC = b"TXXAPI-RRDS 1\n"
FILE = "rrds"
_LEN = struct.Struct(">I")


def path_in(data_dir):
    return os.path.join(data_dir, "metrics", FILE)


# Between a printed archive's rows, and between printed archives.
_ROW_END, _ARCHIVE_END = "\x00", "\x01"


def encode(owner):
    """One owner's RRD as (head bytes, ring bytes, printed rows), taken
    under the store's lock."""
    rrd = owner.rrd
    printed = [i for i, a in enumerate(rrd.archives) if a.pdp_per_row == 1]
    head = {
        "kind": owner.kind, "uuid": owner.uuid, "domid": owner.domid,
        "step": rrd.step, "last_updated": rrd.last_updated,
        "sources": [[ds.name, ds.type, ds.min, ds.max, ds.heartbeat,
                     ds.inverse, ds.last, ds.value, ds.unknown_sec]
                    for ds in rrd.sources],
        "archives": [[a.cf, a.rows, a.pdp_per_row, a.xff, a.current,
                      a.cdp_value, a.cdp_unknown] for a in rrd.archives],
        "printed": printed,
    }
    rings = b"".join(ring.tobytes() for a in rrd.archives for ring in a.rings)
    return json.dumps(head).encode(), rings, \
        [list(rrd.archives[i].memo) for i in printed]


def _printed_bytes(memos):
    """The printed rows (None: not printed) as bytes."""
    return _ARCHIVE_END.join(
        _ROW_END.join(text or "" for text in memo)
        for memo in memos).encode()


def decode(record):
    n = _LEN.unpack_from(record)[0]
    head = json.loads(record[4:4 + n])
    rings = memoryview(record)[4 + n:]
    sources = []
    for name, type_, lo, hi, heartbeat, inverse, last, value, unknown in \
            head["sources"]:
        ds = DataSource(name, type_, lo, hi, heartbeat, inverse)
        ds.last, ds.value, ds.unknown_sec = last, value, unknown
        sources.append(ds)
    rrd = RRD(head["step"], sources)
    rrd.last_updated = head["last_updated"]
    offset = 0
    for cf, rows, pdps, xff, current, cdp_value, cdp_unknown in \
            head["archives"]:
        a = Archive(cf, rows, pdps, xff, sources)
        a.current, a.cdp_value, a.cdp_unknown = current, cdp_value, \
            cdp_unknown
        for i in range(len(sources)):
            ring = array("f")
            ring.frombytes(rings[offset:offset + 4 * rows])
            if len(ring) != rows:
                raise ValueError("truncated rows")
            a.rings[i] = ring
            offset += 4 * rows
        rrd.archives.append(a)
    _take_printed(rrd, head.get("printed", ()), rings[offset:])
    return Owner(head["kind"], head["uuid"], rrd, domid=head["domid"])


def pack(encoded):
    """The encoded RRDs (from ``encode``) as one document: the file's
    form, and the body RRDs travel in between the pool's hosts."""
    parts = [MAGIC]
    for head, rings, memos in encoded:
        record = zlib.compress(_LEN.pack(len(head)) + head + rings +
                               _printed_bytes(memos), 1)
        parts += [_LEN.pack(len(record)), record]
    return b"".join(parts)


def unpack(data):
    """The owners of a ``pack`` document; ValueError if it is not one."""
    try:
        if not data.startswith(MAGIC):
            raise ValueError("not an RRD document")
        owners, pos = [], len(MAGIC)
        while pos < len(data):
            n = _LEN.unpack_from(data, pos)[0]
            owners.append(decode(zlib.decompress(data[pos + 4:pos + 4 + n])))
            pos += 4 + n
        return owners
    except (KeyError, TypeError, IndexError, UnicodeDecodeError,
            struct.error, zlib.error) as e:
        raise ValueError(str(e) or type(e).__name__)


def _take_printed(rrd, printed, data):
    """The printed rows read back into their archives' memo (files
    written before they were saved have none)."""
    if not printed or not data:
        return
    memos = bytes(data).decode().split(_ARCHIVE_END)
    if len(memos) != len(printed):
        raise ValueError("printed rows of %d archives, not %d"
                         % (len(memos), len(printed)))
    for i, memo in zip(printed, memos):
        archive = rrd.archives[i]
        texts = memo.split(_ROW_END)
        if len(texts) != archive.rows:
            raise ValueError("%d printed rows, not %d" % (len(texts),
                                                          archive.rows))
        archive.memo = [t or None for t in texts]


def save(path, encoded):
    """Write the encoded RRDs (from ``encode``), replacing the file."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with atomic_file(path, "wb") as f:
        f.write(pack(encoded))


def load(path):
    """The owners saved in ``path`` ([] if there is none)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    try:
        return unpack(data)
    except ValueError as e:
        log.warning("RRDs in %s unreadable (%s): starting afresh", path, e)
        os.replace(path, path + ".unreadable")
        return []

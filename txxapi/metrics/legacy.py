"""
The file this server kept its RRDs in before they were archived in
xcp-rrdd's form (storage): ``<data-dir>/metrics/rrds``, one
zlib-compressed record per RRD (a JSON head: owner, sources, the state
of every archive; the rows as raw single-precision floats; maybe the
printed 5 s rows after them).  Only read, so that an upgrade converts
it and loses nothing.
"""

import json
import os
import struct
import zlib
from array import array

from txxapi.metrics.rrd import RRD, Archive, DataSource

MAGIC = b"TXXAPI-RRDS 1\n"
_LEN = struct.Struct(">I")


def path_in(data_dir):
    return os.path.join(data_dir, "metrics", "rrds")


def _decode(record):
    """(kind, uuid, domid, RRD) of one record."""
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
    # (The printed rows after the rings are printed again.)
    return head["kind"], head["uuid"], head["domid"], rrd


def read(data):
    """[(kind, uuid, domid, RRD)] of the file's bytes; ValueError if they
    are not such a file."""
    try:
        if not data.startswith(MAGIC):
            raise ValueError("not an RRD file")
        out, pos = [], len(MAGIC)
        while pos < len(data):
            n = _LEN.unpack_from(data, pos)[0]
            out.append(_decode(zlib.decompress(data[pos + 4:pos + 4 + n])))
            pos += 4 + n
        return out
    except (KeyError, TypeError, IndexError, UnicodeDecodeError,
            struct.error, zlib.error) as e:
        raise ValueError(str(e) or type(e).__name__)

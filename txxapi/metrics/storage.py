"""
The RRDs on disk as xcp-rrdd archives them: one file per owner (host,
VM or SR), ``<data-dir>/blobs/rrds/<uuid>.gz``, the gzip-compressed XML
document of the whole RRD in its internal form (the /host_rrd dump with
each source's last update time), each replaced atomically.  A file
xcp-rrdd wrote reads here, and ours read with its tools.  The same
document, uncompressed, is the body RRDs travel in between the pool's
hosts (transfer).

What the XML does not carry starts unknown once read back, as in
xcp-rrdd: the last reading of each source (a DERIVE source's first rate
after it is unknown) and the domain an RRD was fed by.  The 5 s rows
come back printed as the file prints them, so that /rrd_updates right
after a start prints nothing again.

Saving runs on a metrics thread, an owner at a time (the store's lock
held only to copy one RRD), and rewrites only the files of RRDs updated
since; the files of RRDs no longer kept are removed.  A file that cannot
be read is set aside (``.unreadable``) and its RRD starts afresh.  The
file the RRDs were kept in before (legacy) is converted as it is found.
"""

import gzip
import logging
import os
import re
import xml.etree.ElementTree as ET
import zlib
from array import array

from txxapi.files import atomic_file, fsync_directory
from txxapi.metrics import formats, legacy
from txxapi.metrics.rrd import CFS, NAN, RRD, TYPES, Archive, \
    DataSource

log = logging.getLogger(__name__)

SUFFIX = ".gz"
# Fast, as the compressed files are small next to the work of printing.
LEVEL = 1


def directory_in(data_dir):
    return os.path.join(data_dir, "blobs", "rrds")


# --- the XML document ----------------------------------------------------------

def to_xml(rrd):
    """The document of an RRD (no other thread updating it: a copy)."""
    return formats.rrd_xml(rrd, internal=True).encode("utf-8")


_BETWEEN_TAGS = re.compile(r">\s+<")
_ROW_START, _ROW_END = "<row><v>", "</v></row>"


def _cut_databases(text):
    """(the document with each archive's database left empty, the
    databases' texts)."""
    parts, databases, pos = [], [], 0
    while True:
        start = text.find("<database", pos)
        if start < 0:
            break
        head_end = text.find(">", start)
        if head_end < 0:
            break
        if text[head_end - 1] == "/":
            databases.append("")
            end = head_end + 1
        else:
            close = text.find("</database>", head_end)
            if close < 0:
                raise ValueError("a database without its end")
            databases.append(text[head_end + 1:close])
            end = close + len("</database>")
        parts += [text[pos:start], "<database/>"]
        pos = end
    parts.append(text[pos:])
    return "".join(parts), databases


def _values(database, columns):
    """The values of a database, row after row, oldest first, one a
    line, and how many rows."""
    text = database.strip()
    if not text:
        return "", 0
    if _BETWEEN_TAGS.search(text):
        text = _BETWEEN_TAGS.sub("><", text)
    if not (text.startswith(_ROW_START) and text.endswith(_ROW_END)):
        raise ValueError("a database that is not rows of values")
    body = text[len(_ROW_START):-len(_ROW_END)]
    rows = body.count(_ROW_END + _ROW_START) + 1
    values = body.replace(_ROW_END + _ROW_START, "\n").replace(
        "</v><v>", "\n")
    if values.count("\n") + 1 != rows * columns:
        raise ValueError("%d rows that are not of %d values"
                         % (rows, columns))
    return values, rows


def _text(element, name, default=None):
    child = element.find(name)
    if child is None:
        if default is None:
            raise ValueError("no <%s>" % name)
        return default
    return (child.text or "").strip()


def _source(element, last_update):
    type_ = _text(element, "type")
    if type_ not in TYPES:
        raise ValueError("a source of type %r" % type_)
    # Bounds below zero read as zero, as xcp-rrdd reads them (CA-408126).
    ds = DataSource(_text(element, "name"), type_,
                    max(0.0, float(_text(element, "min"))),
                    float(_text(element, "max")),
                    float(_text(element, "minimal_heartbeat")))
    ds.value = float(_text(element, "value"))
    ds.unknown_sec = float(_text(element, "unknown_sec"))
    return ds, float(_text(element, "last_updated", str(last_update)))


def _archive(element, database, sources):
    cf = _text(element, "cf")
    if cf not in CFS:
        raise ValueError("an archive of %r" % cf)
    params = element.find("params")
    if params is None:
        raise ValueError("no <params>")
    cdps = element.findall("cdp_prep/ds")
    if len(cdps) != len(sources):
        raise ValueError("%d prepared rows for %d sources"
                         % (len(cdps), len(sources)))
    text, rows = _values(database, len(sources))
    a = Archive(cf, rows or 1, int(_text(element, "pdp_per_row")),
                float(_text(params, "xff")), sources)
    a.cdp_value = [float(_text(c, "value")) for c in cdps]
    a.cdp_unknown = [int(_text(c, "unknown_datapoints")) for c in cdps]
    if not sources:
        return a
    values = array("f", map(float, text.split("\n")))
    # Values outside the bounds read as unknown (Fring.make); rows are
    # bounded as they are made, so only a negative value (with every
    # lower bound zero or more) needs looking for.
    bounded = text.startswith("-") or "\n-" in text
    n = len(sources)
    for i, ds in enumerate(sources):
        ring = values[i::n]
        if bounded:
            for j, v in enumerate(ring):
                if v < ds.min or v > ds.max:
                    ring[j] = NAN
        a.rings[i] = ring
    if a.pdp_per_row == 1:
        a.memo = text.split("\n") if n == 1 else _lines(text, n)
    return a


def _lines(text, n):
    """The text of values one a line, joined ``n`` lines at a time."""
    lines = text.split("\n")
    return ["\n".join(lines[i:i + n]) for i in range(0, len(lines), n)]


def from_xml(data):
    """The RRD of a document (bytes); ValueError if it is none."""
    try:
        text = data.decode("utf-8")
        skeleton, databases = _cut_databases(text)
        root = ET.fromstring(skeleton)
        if root.tag != "rrd":
            raise ValueError("not an RRD document")
        last_update = float(_text(root, "lastupdate"))
        read = [_source(e, last_update) for e in root.findall("ds")]
        sources = [ds for ds, _ in read]
        rrd = RRD(int(_text(root, "step")), sources)
        rrd.last_updated = read[0][1] if read else last_update
        archives = root.findall("rra")
        if len(archives) != len(databases):
            raise ValueError("archives without their rows")
        for element, database in zip(archives, databases):
            rrd.archives.append(_archive(element, database, sources))
        # A source named twice keeps its first rows (as from_xml purges).
        for i in range(len(sources) - 1, -1, -1):
            if sources[i].name in [ds.name for ds in sources[:i]]:
                del sources[i]
                for a in rrd.archives:
                    a.remove_source(i)
        rrd._reindex()
        return rrd
    except (ET.ParseError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(str(e) or type(e).__name__)


def from_gzip(data):
    try:
        return from_xml(gzip.decompress(data))
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(str(e) or type(e).__name__)


# --- the directory ---------------------------------------------------------------

class Archives:
    """The archive files of one host, and what each holds now."""

    def __init__(self, data_dir):
        self.directory = directory_in(data_dir)
        self.legacy = legacy.path_in(data_dir)
        # uuid -> (last update, source names) of the RRD its file holds.
        self.written = {}

    def _path(self, uuid):
        return os.path.join(self.directory, uuid + SUFFIX)

    @staticmethod
    def state(rrd):
        return rrd.last_updated, tuple(ds.name for ds in rrd.sources)

    def write(self, uuid, rrd, sync_directory=True):
        """One RRD's file replaced (a copy no one updates meanwhile)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        data = gzip.compress(to_xml(rrd), LEVEL)
        with atomic_file(self._path(uuid), "wb", perms=0o644,
                         sync_directory=sync_directory) as f:
            f.write(data)
        self.written[uuid] = self.state(rrd)

    def save(self, owners, copy):
        """Every RRD of ``owners`` (uuids) whose file is behind, through
        ``copy(uuid, written)`` (a copy of its RRD, None if the file holds
        it or there is none now); the files of the others removed."""
        changed = False
        for uuid in owners:
            rrd = copy(uuid, self.written.get(uuid))
            if rrd is not None:
                # Each file is on disk as it is replaced; the directory's
                # entries once at the end.
                self.write(uuid, rrd, sync_directory=False)
                changed = True
        for uuid in set(self.written) - set(owners):
            del self.written[uuid]
            try:
                os.unlink(self._path(uuid))
                changed = True
            except FileNotFoundError:
                pass
        if changed:
            fsync_directory(self.directory)

    def load(self, kind_of):
        """[(kind, uuid, domid, RRD)] of the files here, ``kind_of(uuid)``
        naming each owner (None: an object that no longer exists, whose
        file goes at the next save).  The legacy file is read, its RRDs
        written here, then removed."""
        found = {}
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            names = []
        for name in names:
            if name.startswith(".") or not name.endswith(SUFFIX):
                continue
            uuid = name[:-len(SUFFIX)]
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as f:
                    rrd = from_gzip(f.read())
            except ValueError as e:
                log.warning("RRD archive %s unreadable (%s): starting it "
                            "afresh", path, e)
                os.replace(path, path + ".unreadable")
                continue
            self.written[uuid] = self.state(rrd)
            kind = kind_of(uuid)
            if kind is not None:
                found[uuid] = (kind, uuid, None, rrd)
        for kind, uuid, domid, rrd in self._legacy():
            if uuid not in found:
                self.write(uuid, rrd)
                found[uuid] = (kind, uuid, domid, rrd)
        if os.path.exists(self.legacy):
            os.unlink(self.legacy)
        return list(found.values())

    def _legacy(self):
        try:
            with open(self.legacy, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        try:
            return legacy.read(data)
        except ValueError as e:
            log.warning("RRDs in %s unreadable (%s): starting afresh",
                        self.legacy, e)
            os.replace(self.legacy, self.legacy + ".unreadable")
            return []

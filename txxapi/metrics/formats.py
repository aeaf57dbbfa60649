"""
RRDs on the wire, in XAPI's forms: the rrdtool-like dump of a whole RRD
(/host_rrd, /vm_rrd, /sr_rrd) and the ``xport`` document of
/rrd_updates, each as XML or as JSON.

Numbers are printed as xapi-rrd prints them (``%0.15g``, ``NaN``,
``Infinity``, ``0.0`` for zero); in the JSON forms every number is a
string, as Yojson is handed them upstream.  An archive remembers the
strings of the rows it has rendered until a row is overwritten, so a
client polling /rrd_updates pays for the new rows only.
"""

import re
from itertools import chain
from xml.sax.saxutils import escape

from txxapi.metrics.rrd import NoArchive

XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def f_to_s(x):
    if x != x:
        return "NaN"
    if x == 0:
        return "0.0"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return "%0.15g" % x


_ZERO = re.compile(r"^-?0$", re.M)


def row_text(archive, age, keep=True):
    """The printed values of one row of an archive, all its sources, one
    a line, as f_to_s prints them.  A row has thousands of values at
    1,000 VMs: it is printed by one format of the whole row with the few
    special values put right after, and kept as one string (no object
    per value for the collector to walk)."""
    slot = archive.slot(age)
    text = archive.memo[slot]
    if text is None:
        values = tuple([ring[slot] for ring in archive.rings])
        text = ("%0.15g\n" * len(values) % values)[:-1]
        if "n" in text:
            text = text.replace("nan", "NaN").replace("inf", "Infinity")
        if "0" in text:
            text = _ZERO.sub("0.0", text)
        if keep:
            archive.memo[slot] = text
    return text


def blank(archive):
    """An archive just made, every row unknown: each printed, as one
    shared text."""
    text = "\n".join(["NaN"] * len(archive.rings))
    archive.memo = [text] * archive.rows


def _joined(texts, separator):
    """Rows' texts (some empty) as one run of values between
    ``separator``s."""
    return "\n".join([t for t in texts if t]).replace("\n", separator)


# --- /rrd_updates ---------------------------------------------------------

class Xport:
    """A delta of several RRDs over their matching archives (xapi-rrd's
    Rrd_updates.t, rows newest first)."""

    def __init__(self, start, step, end, legend, archives, times):
        self.start = start
        self.step = step
        self.end = end
        self.legend = legend
        self.archives = archives    # in column order
        self.times = times          # newest first; row i is age i

    def rows(self, separator):
        """Each row's time and its printed values between
        ``separator``s."""
        for age, t in enumerate(self.times):
            yield t, _joined([row_text(a, age) for a in self.archives],
                             separator)


def export(prefixed, start, interval, cf):
    """The Xport of [(prefix, rrd)] (prefix like 'vm:<uuid>:') from
    ``start`` (negative: before the last update) for rows of at least
    ``interval`` seconds of ``cf`` (None: every CF present), as
    Rrd_updates.create_multi makes it.  NoArchive when nothing answers."""
    if not prefixed:
        raise NoArchive()
    first = prefixed[0][1]
    step, last_updated = first.step, first.last_updated
    pdp_interval = interval // step
    prefixed = [(p, r) for p, r in prefixed if r.step == step]
    if start < 0:
        start = min(start + int(r.last_updated) for _, r in prefixed)
    chosen = [r.best_archives(pdp_interval, cf, start) for _, r in prefixed]
    shape = next((a[0] for a in chosen if a), None)
    if shape is None:
        raise NoArchive()
    legend, columns = [], []
    for (prefix, rrd), archives in zip(prefixed, chosen):
        names = [prefix + ds.name for ds in rrd.sources]
        for a in archives:
            if a.pdp_per_row == shape.pdp_per_row and a.rows == shape.rows:
                legend += ["%s:%s" % (a.cf, n) for n in names]
                columns.append(a)
    row_step = step * shape.pdp_per_row
    last_cdp = row_step * (int(last_updated) // row_step)
    first_cdp = row_step * (start // row_step) + row_step
    times = []
    for age in range(shape.rows):
        t = last_cdp - age * row_step
        if t < start:
            break
        times.append(t)
    return Xport(first_cdp, row_step, last_cdp, legend, columns, times)


def xport_xml(x):
    parts = [XML_DECL, "<xport><meta><start>%d</start><step>%d</step>"
             "<end>%d</end><rows>%d</rows><columns>%d</columns><legend>"
             % (x.start, x.step, x.end, len(x.times), len(x.legend))]
    parts += ["<entry>%s</entry>" % escape(e) for e in x.legend]
    parts.append("</legend></meta><data>")
    for t, values in x.rows("</v><v>"):
        if values:
            parts.append("<row><t>%d</t><v>%s</v></row>" % (t, values))
        else:
            parts.append("<row><t>%d</t></row>" % t)
    parts.append("</data></xport>")
    return "".join(parts)


def _json_string(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def xport_json(x):
    # Numbers in meta and t, values as strings (Rrd_updates.json_of_t).
    parts = ['{"meta":{"start":%d,"step":%d,"end":%d,"rows":%d,'
             '"columns":%d,"legend":[%s]},"data":['
             % (x.start, x.step, x.end, len(x.times), len(x.legend),
                ",".join(_json_string(e) for e in x.legend))]
    rows = []
    for t, values in x.rows('","'):
        rows.append('{"t":%d,"values":["%s"]}' % (t, values)
                    if values else '{"t":%d,"values":[]}' % t)
    parts.append(",".join(rows))
    parts.append("]}")
    return "".join(parts)


# --- whole RRDs --------------------------------------------------------------

def _database(archive):
    """Every row of an archive, oldest first, as the dump prints them,
    printed by one format of all their values (none kept)."""
    cur = archive.current + 1
    columns = [ring[cur:] + ring[:cur] for ring in archive.rings]
    row = "<row><v>" + "</v><v>".join(["%0.15g"] * len(columns)) + \
        "</v></row>"
    text = (row * archive.rows) % tuple(chain.from_iterable(zip(*columns)))
    if "n" in text:
        text = text.replace("nan", "NaN").replace("inf", "Infinity")
    return text.replace("<v>-0</v>", "<v>0</v>").replace("<v>0</v>",
                                                         "<v>0.0</v>")


def _last_ds(v):
    if v is None:
        return "0.0"
    if isinstance(v, int):
        return "%d" % v
    return f_to_s(v)


def rrd_xml(rrd, internal=False):
    """The dump of /host_rrd and friends (Rrd.xml_to_output): oldest row
    first.  ``internal``: the form xcp-rrdd archives and sends between
    hosts, each source's last update time too."""
    out = [XML_DECL, "<rrd><version>0003</version><step>%d</step>"
           "<lastupdate>%d</lastupdate>" % (rrd.step, int(rrd.last_updated))]
    updated = "<last_updated>%s</last_updated>" % f_to_s(rrd.last_updated) \
        if internal else ""
    for ds in rrd.sources:
        out.append(
            "<ds><name>%s</name><type>%s</type><minimal_heartbeat>%s"
            "</minimal_heartbeat><min>%s</min><max>%s</max><last_ds>%s"
            "</last_ds><value>%s</value><unknown_sec>%d</unknown_sec>%s"
            "</ds>"
            % (escape(ds.name), ds.type, f_to_s(ds.heartbeat),
               f_to_s(ds.min), f_to_s(ds.max), _last_ds(ds.last),
               f_to_s(ds.value), int(ds.unknown_sec), updated))
    for a in rrd.archives:
        out.append("<rra><cf>%s</cf><pdp_per_row>%d</pdp_per_row><params>"
                   "<xff>%s</xff></params><cdp_prep>"
                   % (a.cf, a.pdp_per_row, f_to_s(a.xff)))
        for value, unknown in zip(a.cdp_value, a.cdp_unknown):
            out.append("<ds><primary_value>0.0</primary_value>"
                       "<secondary_value>0.0</secondary_value><value>%s"
                       "</value><unknown_datapoints>%d</unknown_datapoints>"
                       "</ds>" % (f_to_s(value), unknown))
        out.append("</cdp_prep><database>")
        if not a.rings:
            pass
        elif internal and a.pdp_per_row > 1:
            # An archive's coarser rows are not kept printed for it.
            out.append(_database(a))
        else:
            for age in range(a.rows - 1, -1, -1):
                out.append("<row><v>%s</v></row>" % row_text(
                    a, age).replace("\n", "</v><v>"))
        out.append("</database></rra>")
    out.append("</rrd>")
    return "".join(out)


def rrd_json(rrd):
    """The same as JSON (Rrd.Json.rrd): every number a string."""
    def q(s):
        return _json_string(s)

    out = ['{"version":"0003","step":"%d","lastupdate":%s,"ds":['
           % (rrd.step, q(f_to_s(rrd.last_updated)))]
    out.append(",".join(
        '{"name":%s,"type":"%s","minimal_heartbeat":"%s","min":"%s",'
        '"max":"%s","last_ds":"%s","value":"%s","unknown_sec":"%s",'
        '"last_updated":"%s"}'
        % (q(ds.name), ds.type, f_to_s(ds.heartbeat), f_to_s(ds.min),
           f_to_s(ds.max), _last_ds(ds.last), f_to_s(ds.value),
           f_to_s(ds.unknown_sec), f_to_s(rrd.last_updated))
        for ds in rrd.sources))
    out.append('],"rra":[')
    archives = []
    for a in rrd.archives:
        cdps = ",".join(
            '{"primary_value":"0.0","secondary_value":"0.0","value":"%s",'
            '"unknown_datapoints":"%d"}' % (f_to_s(v), u)
            for v, u in zip(a.cdp_value, a.cdp_unknown))
        rows = ",".join(
            '["%s"]' % row_text(a, age).replace("\n", '","')
            for age in range(a.rows - 1, -1, -1)) if a.rings else ""
        archives.append(
            '{"cf":"%s","pdp_per_row":"%d","params":{"xff":"%s"},'
            '"cdp_prep":{"ds":[%s]},"database":[%s]}'
            % (a.cf, a.pdp_per_row, f_to_s(a.xff), cdps, rows))
    out.append(",".join(archives))
    out.append("]}")
    return "".join(out)

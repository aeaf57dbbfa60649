"""
Round-robin databases as xcp-rrdd keeps them (xapi-rrd's rrd.ml): data
sources whose readings become primary data points (PDPs) once per step,
consolidated into archives (RRAs) of AVERAGE, MIN or MAX rows.

The arithmetic follows xcp-rrdd's, quirks included, so that the archives
a client reads hold the numbers XAPI's would: a DERIVE reading is spread
over the steps it straddles, a step with more unknown PDPs than the xff
allows is NaN, a value outside a source's [min, max] is stored as NaN,
rows are single-precision floats.  All sources of an RRD are updated
together (a missing reading is an unknown one), so each archive keeps one
ring position for all its sources.
"""

import math
from array import array

GAUGE, ABSOLUTE, DERIVE = "GAUGE", "ABSOLUTE", "DERIVE"
TYPES = (GAUGE, ABSOLUTE, DERIVE)
AVERAGE, MIN, MAX, LAST = "AVERAGE", "MIN", "MAX", "LAST"
CFS = (AVERAGE, MIN, MAX, LAST)
NAN = math.nan
INF = math.inf
HEARTBEAT = 300.0
STEP = 5
# (rows, steps per row): 10 minutes of 5 s, 2 hours of minutes, a week of
# hours, a year of days.
TIMESCALES = ((120, 1), (120, 12), (168, 720), (366, 17280))


class UnknownSource(Exception):
    """No data source of that name (rrd.ml's Invalid_data_source)."""


class NoArchive(Exception):
    """No archive answers the query (rrd.ml's No_RRA_Available)."""


def archive_specs(min_max):
    """(cf, rows, pdp_per_row, xff) of a new RRD's archives: AVERAGE at
    every timescale, and MIN and MAX beside it on the coarser ones when
    ``min_max`` (xcp-rrdd's create_rras)."""
    specs = []
    for rows, pdps in TIMESCALES:
        if pdps > 1 and min_max:
            specs += [(cf, rows, pdps, 1.0) for cf in (AVERAGE, MIN, MAX)]
        else:
            specs.append((AVERAGE, rows, pdps, 0.5))
    return specs


class DataSource:
    """One source's definition and the state of its current PDP."""

    __slots__ = ("name", "type", "min", "max", "heartbeat", "inverse",
                 "last", "value", "unknown_sec")

    def __init__(self, name, type=GAUGE, min=-INF, max=INF,
                 heartbeat=HEARTBEAT, inverse=False):
        if type not in TYPES:
            raise ValueError("unknown data source type %r" % type)
        self.name = name
        self.type = type
        self.min = float(min)
        self.max = float(max)
        self.heartbeat = float(heartbeat)
        self.inverse = inverse   # the PDP is 1 - rate (idle time to usage)
        self.last = None         # the last reading, None when unknown
        self.value = 0.0         # the PDP being accumulated
        self.unknown_sec = 0.0

    def copy(self):
        ds = DataSource.__new__(DataSource)
        for name in DataSource.__slots__:
            setattr(ds, name, getattr(self, name))
        return ds


def cf_initial(cf, ds):
    """Where a CDP starts (clamped into the source's range, CA-329043)."""
    start = {AVERAGE: 0.0, MIN: INF, MAX: -INF}.get(cf, NAN)
    return min(ds.max, max(ds.min, start))


class Archive:
    """One RRA: a ring of ``rows`` CDPs per source, each of
    ``pdp_per_row`` PDPs, and the CDPs being prepared."""

    __slots__ = ("cf", "rows", "pdp_per_row", "xff", "rings", "cdp_value",
                 "cdp_unknown", "current", "memo")

    def __init__(self, cf, rows, pdp_per_row, xff, sources):
        if cf not in CFS:
            raise ValueError("unknown consolidation function %r" % cf)
        self.cf = cf
        self.rows = rows
        self.pdp_per_row = pdp_per_row
        self.xff = xff
        self.rings = [array("f", [NAN]) * rows for _ in sources]
        self.cdp_value = [cf_initial(cf, ds) for ds in sources]
        self.cdp_unknown = [0] * len(sources)
        self.current = rows - 1
        # Rendered rows (formats.py), kept until the slot is overwritten.
        self.memo = [None] * rows

    def copy(self):
        """A copy with its own rows (the printed ones shared)."""
        a = Archive.__new__(Archive)
        a.cf, a.rows, a.pdp_per_row, a.xff = self.cf, self.rows, \
            self.pdp_per_row, self.xff
        a.rings = [ring[:] for ring in self.rings]
        a.cdp_value = list(self.cdp_value)
        a.cdp_unknown = list(self.cdp_unknown)
        a.current = self.current
        a.memo = list(self.memo)
        return a

    def push(self, values, sources):
        cur = self.current = (self.current + 1) % self.rows
        for ring, v, ds in zip(self.rings, values, sources):
            if v < ds.min or v > ds.max:
                v = NAN
            ring[cur] = v
        self.memo[cur] = None

    def slot(self, age):
        """The ring index of the row ``age`` steps before the newest."""
        return (self.current - age) % self.rows

    def peek(self, index, age):
        return self.rings[index][(self.current - age) % self.rows]

    def accumulate(self, offset, pdps):
        """Fold ``offset`` PDPs of each source's value into its CDP
        (rrd.ml's do_cfs)."""
        cf, per_row = self.cf, self.pdp_per_row
        values, unknown = self.cdp_value, self.cdp_unknown
        for i, pdp in enumerate(pdps):
            if pdp != pdp:
                # An average of fewer known PDPs: renormalise.
                olddiv = per_row - unknown[i]
                newdiv = olddiv - offset
                if newdiv > 0:
                    values[i] = values[i] * olddiv / newdiv
                    unknown[i] += offset
            elif cf == AVERAGE:
                values[i] += pdp * offset / per_row
            elif cf == MIN:
                if pdp < values[i]:
                    values[i] = pdp
            elif cf == MAX:
                if pdp > values[i]:
                    values[i] = pdp
            else:
                values[i] = pdp

    def update(self, step, processed_start, elapsed, pdps, sources):
        """``elapsed`` PDPs after the one starting at ``processed_start``
        (rrd.ml's rra_update)."""
        per_row = self.pdp_per_row
        start_offset = per_row - (processed_start // step) % per_row
        if elapsed < start_offset:
            self.accumulate(elapsed, pdps)
            return
        rows_due = (elapsed - start_offset) // per_row + 1
        self.accumulate(start_offset, pdps)
        limit = int(self.xff * per_row)
        self.push([v if u <= limit else NAN for v, u in
                   zip(self.cdp_value, self.cdp_unknown)], sources)
        # Rows after the first hold the current PDP alone, whatever the CF.
        for _ in range(min(rows_due - 1, self.rows)):
            self.push(pdps, sources)
        self.cdp_value = [cf_initial(self.cf, ds) for ds in sources]
        self.cdp_unknown = [0] * len(sources)
        self.accumulate((elapsed - start_offset) % per_row, pdps)

    def add_source(self, ds, pdp_count):
        self.rings.append(array("f", [NAN]) * self.rows)
        self.cdp_value.append(cf_initial(self.cf, ds))
        self.cdp_unknown.append(pdp_count % self.pdp_per_row)
        self.memo = [None] * self.rows

    def remove_source(self, index):
        del self.rings[index]
        del self.cdp_value[index]
        del self.cdp_unknown[index]
        self.memo = [None] * self.rows


class RRD:
    """Sources and archives, updated at most once per call of ``update``."""

    __slots__ = ("step", "last_updated", "sources", "archives", "_index")

    def __init__(self, step=STEP, sources=(), archives=(), timestamp=None):
        """``archives``: (cf, rows, pdp_per_row, xff) each.  With a
        ``timestamp`` the RRD starts there, as rrd_create does: the rows
        before it are unknown."""
        self.step = int(step)
        self.last_updated = 0.0
        self.sources = list(sources)
        self.archives = [Archive(cf, rows, pdps, xff, self.sources)
                         for cf, rows, pdps, xff in archives]
        self._reindex()
        if timestamp is not None:
            self.update(timestamp, {}, new=True)

    def copy(self):
        """A copy to read while this one is updated (rrd.ml's copy_rrd)."""
        rrd = RRD.__new__(RRD)
        rrd.step, rrd.last_updated = self.step, self.last_updated
        rrd.sources = [ds.copy() for ds in self.sources]
        rrd.archives = [a.copy() for a in self.archives]
        rrd._reindex()
        return rrd

    def _reindex(self):
        self._index = {ds.name: i for i, ds in enumerate(self.sources)}

    def names(self):
        return [ds.name for ds in self.sources]

    def index(self, name):
        try:
            return self._index[name]
        except KeyError:
            raise UnknownSource(name)

    def __contains__(self, name):
        return name in self._index

    # --- updates -----------------------------------------------------------

    def update(self, timestamp, readings, new=False):
        """Take one reading per source at ``timestamp`` (a dict by name;
        a source missing from it reads unknown).  ``new``: the readings
        start a fresh series (a DERIVE reading is taken as the rate)."""
        sources = self.sources
        step = self.step
        interval = timestamp - self.last_updated
        if interval < 0:
            interval = 5.0      # the clock went back
        processed_start = step * (int(self.last_updated) // step)
        occupied_start = step * (int(timestamp) // step)
        occupied_age = timestamp - occupied_start
        elapsed = (occupied_start - processed_start) // step
        if elapsed > 0:
            pre, post = interval - occupied_age, occupied_age
        else:
            pre, post = interval, 0.0
        self.last_updated = timestamp
        rates = []
        for ds in sources:
            rate = self._rate(ds, readings.get(ds.name), interval, new)
            rates.append(rate)
            if rate != rate:
                ds.unknown_sec = pre
            elif ds.type == DERIVE:
                ds.value += pre * rate / interval
            else:
                ds.value = rate
        if elapsed <= 0:
            return
        # A DERIVE source's PDP is what it gathered over the steps that
        # end here, whatever the readings' spacing (a reading just after
        # a step's end, one late).
        span = occupied_start - processed_start
        pdps = [self._pdp(ds, interval, span) for ds in sources]
        for archive in self.archives:
            archive.update(step, processed_start, elapsed, pdps, sources)
        for ds, rate in zip(sources, rates):
            if rate != rate:
                ds.value = 0.0
                ds.unknown_sec = post
            else:
                ds.unknown_sec = 0.0
                ds.value = post * rate / interval if ds.type == DERIVE \
                    else rate

    @staticmethod
    def _rate(ds, reading, interval, new):
        """The rate a reading stands for (rrd.ml's process_ds_value)."""
        if interval > ds.heartbeat:
            return NAN
        raw = NAN if reading is None else float(reading)
        if ds.type == GAUGE or (ds.type == DERIVE and new):
            rate = raw
        elif ds.type == ABSOLUTE:
            rate = raw / interval if interval else NAN
        elif ds.last is None or reading is None:
            rate = NAN
        else:
            rate = raw - ds.last
        ds.last = reading
        return rate

    @staticmethod
    def _pdp(ds, interval, span):
        if interval > ds.heartbeat:
            return NAN
        if ds.type == DERIVE:
            known = span - ds.unknown_sec
            raw = ds.value / known if known > 0 else NAN
        else:
            raw = ds.value
        if ds.inverse:
            raw = 1.0 - raw
        if ds.type == DERIVE and ds.max < raw < ds.max * 1.05:
            return ds.max       # CA-411679: a rate just over its bound
        if raw < ds.min or raw > ds.max:
            return NAN
        return raw

    # --- sources -------------------------------------------------------------

    def add_source(self, ds, timestamp):
        """A new source, unknown so far (rrd_add_ds); a name already here
        is left as it is."""
        if ds.name in self._index:
            return
        pdp_count = int(timestamp) // self.step
        self.sources.append(ds)
        for archive in self.archives:
            archive.add_source(ds, pdp_count)
        self._reindex()

    def remove_source(self, name):
        """Forget a source and all its rows (idempotent)."""
        i = self._index.get(name)
        if i is None:
            return
        del self.sources[i]
        for archive in self.archives:
            archive.remove_source(i)
        self._reindex()

    # --- queries ---------------------------------------------------------------

    def best_archives(self, pdp_interval, cf, start):
        """The archives of ``cf`` (None: any) that answer a query from
        ``start`` with rows of at least ``pdp_interval`` steps: the first
        (finest) one covering ``start`` and those of the same shape, else
        the coarsest span clamped (rrd.ml's find_best_rras)."""
        archives = [a for a in self.archives if cf is None or a.cf == cf]
        if not archives:
            raise NoArchive()
        last_pdp = self.step * (int(self.last_updated) // self.step)

        def covers(t, a):
            oldest = last_pdp - self.step * a.rows * a.pdp_per_row
            return a.pdp_per_row >= pdp_interval and t > oldest

        first = next((a for a in archives if covers(start, a)), None)
        if first is not None:
            return [a for a in archives if a.rows == first.rows and
                    a.pdp_per_row == first.pdp_per_row]
        coarsest = archives[-1]
        start = 1 + last_pdp - self.step * coarsest.rows * \
            coarsest.pdp_per_row
        return [a for a in archives if covers(start, a)]

    def query(self, name, as_of):
        """The newest AVERAGE CDP of a source (query_named_ds)."""
        i = self.index(name)
        archives = self.best_archives(0, AVERAGE, int(as_of))
        if not archives:
            raise NoArchive()
        return archives[0].peek(i, 0)

"""
The data sources of a host, its VMs and its SRs, named, typed and
described as xcp-rrdd and its plugins (rrdp-cpu, -squeezed, -netdev,
-iostat) define them, and the readings a backend sample gives them.

``readings_*`` return (definitions, readings): definitions by name (the
ones not ``default`` are only recorded once enabled) and the raw reading
of each (a counter for DERIVE, an amount since the last sample for
ABSOLUTE, a level for GAUGE; None when unknown).
"""

from txxapi.metrics.rrd import ABSOLUTE, DERIVE, GAUGE, INF, DataSource

FRACTION = "(fraction)"


class Definition:
    __slots__ = ("name", "description", "units", "type", "min", "max",
                 "default", "inverse")

    def __init__(self, name, description, units, type, min=-INF, max=INF,
                 default=True, inverse=False):
        self.name = name
        self.description = description
        self.units = units
        self.type = type
        self.min = float(min)
        self.max = float(max)
        self.default = default
        self.inverse = inverse

    def data_source(self):
        return DataSource(self.name, self.type, self.min, self.max,
                          inverse=self.inverse)


_DEFINED = {}


def define(kind, name, *args, **kw):
    """One Definition per (owner kind, name), made once."""
    key = (kind, name)
    d = _DEFINED.get(key)
    if d is None:
        d = _DEFINED[key] = Definition(name, *args, **kw)
    return d


def _nic(kind, prefix, what, defs, values, counters):
    """The four sources of a NIC: bytes and errors each way."""
    rx, tx, rx_err, tx_err = counters
    for suffix, text, units, default, value in (
            ("_rx", "Bytes per second received on %s", "B/s", True, rx),
            ("_tx", "Bytes per second sent on %s", "B/s", True, tx),
            ("_rx_errors", "Receive errors per second on %s", "err/s",
             False, rx_err),
            ("_tx_errors", "Transmit errors per second on %s", "err/s",
             False, tx_err)):
        name = prefix + suffix
        defs[name] = define(kind, name, text % what, units, DERIVE, min=0,
                            default=default)
        values[name] = value


def readings_host(stats, sr_io):
    """The host's sources from a HostStats; ``sr_io``: SR uuid ->
    (bytes read, bytes written, MiB moved since the last sample) of the
    VBDs on it."""
    defs, values = {}, {}
    for i, idle in enumerate(stats.cpu_idle or ()):
        name = "cpu%d" % i
        defs[name] = define("host", name, "Physical cpu usage for cpu %d" % i,
                            FRACTION, DERIVE, min=0, max=1, inverse=True)
        values[name] = idle
    defs["cpu_avg"] = define("host", "cpu_avg", "Average physical cpu usage",
                             FRACTION, DERIVE, min=0, max=1, inverse=True)
    values["cpu_avg"] = stats.cpu_avg_idle
    defs["loadavg"] = define("host", "loadavg", "Domain0 loadavg", FRACTION,
                             GAUGE)
    values["loadavg"] = stats.loadavg
    defs["memory_total_kib"] = define(
        "host", "memory_total_kib", "Total amount of memory in the host",
        "KiB", GAUGE, min=0)
    values["memory_total_kib"] = stats.memory_total // 1024
    defs["memory_free_kib"] = define(
        "host", "memory_free_kib", "Total amount of free memory", "KiB",
        GAUGE, min=0)
    values["memory_free_kib"] = stats.memory_free // 1024
    aggregate = [0, 0]
    for dev, counters in sorted(stats.pifs.items()):
        _nic("host", "pif_" + dev, "physical interface " + dev, defs, values,
             counters)
        aggregate[0] += counters[0]
        aggregate[1] += counters[1]
    for suffix, text, value in (
            ("rx", "received on", aggregate[0]),
            ("tx", "sent on", aggregate[1])):
        name = "pif_aggr_" + suffix
        defs[name] = define("host", name, "Bytes per second %s all physical "
                            "interfaces" % text, "B/s", DERIVE, min=0)
        values[name] = value
    running = [d for d in stats.domains if d.state == "running"]
    defs["running_vcpus"] = define(
        "host", "running_vcpus", "The total number of running vCPUs per "
        "host", "count", GAUGE, min=0)
    values["running_vcpus"] = sum(len(d.vcpu_times) for d in running)
    defs["running_domains"] = define(
        "host", "running_domains", "The total number of running domains "
        "per host", "count", GAUGE, min=0)
    values["running_domains"] = len(running)
    for sr, (read, written, moved) in sorted(sr_io.items()):
        tag = sr[:8]
        for name, text, units, type_, value in (
                ("read_" + tag, "Reads from device SR, in B/s", "B/s",
                 DERIVE, read),
                ("write_" + tag, "Writes from device SR, in B/s", "B/s",
                 DERIVE, written),
                ("io_throughput_total_" + tag, "All SR I/O, in MiB/s",
                 "MiB/s", ABSOLUTE, moved)):
            defs[name] = define("host", name, text, units, type_, min=0)
            values[name] = value
    return defs, values


def readings_vm(d):
    """A VM's sources from its DomainStats (the control domain's too)."""
    defs, values = {}, {}
    for i, t in enumerate(d.vcpu_times):
        name = "cpu%d" % i
        defs[name] = define("vm", name, "CPU%d usage" % i, FRACTION, DERIVE,
                            min=0, max=1)
        values[name] = t
    if d.vcpu_times:
        defs["cpu_usage"] = define("vm", "cpu_usage", "Domain CPU usage",
                                   FRACTION, DERIVE, min=0, max=1)
        values["cpu_usage"] = sum(d.vcpu_times) / len(d.vcpu_times)
    # A paused domain's memory says nothing useful (CA-34383): unknown.
    if d.state != "paused":
        defs["memory"] = define("vm", "memory", "Memory currently allocated "
                                "to VM", "B", GAUGE, min=0)
        values["memory"] = d.memory_actual
        defs["memory_target"] = define("vm", "memory_target", "Target of VM "
                                       "balloon driver", "B", GAUGE, min=0)
        values["memory_target"] = d.memory_target
        if d.memory_internal_free is not None:
            defs["memory_internal_free"] = define(
                "vm", "memory_internal_free", "Memory used as reported by "
                "the guest agent", "KiB", GAUGE, min=0)
            values["memory_internal_free"] = d.memory_internal_free // 1024
    for dev, (read, written) in sorted(d.vbds.items()):
        for suffix, text, value in (("read", "Reads from", read),
                                    ("write", "Writes from", written)):
            name = "vbd_%s_%s" % (dev, suffix)
            defs[name] = define("vm", name, "%s device %s, in B/s"
                                % (text, dev), "B/s", DERIVE, min=0)
            values[name] = value
    for dev, (rx, tx, rx_err, tx_err) in sorted(d.vifs.items()):
        _nic("vm", "vif_" + dev, "virtual interface number '%s'" % dev,
             defs, values, (rx, tx, rx_err, tx_err))
    return defs, values


def readings_sr(physical_utilisation, physical_size, read, written):
    """An SR's sources: its space (what perfmon's SR alarms read) and the
    traffic of the VBDs on it here."""
    defs = {
        "physical_utilisation": define(
            "sr", "physical_utilisation", "Physical space used by the SR",
            "B", GAUGE, min=0),
        "size": define("sr", "size", "Physical size of the SR", "B", GAUGE,
                       min=0),
        "read": define("sr", "read", "Reads from the SR, in B/s", "B/s",
                       DERIVE, min=0),
        "write": define("sr", "write", "Writes to the SR, in B/s", "B/s",
                        DERIVE, min=0),
    }
    return defs, {"physical_utilisation": physical_utilisation,
                  "size": physical_size, "read": read, "write": written}

"""
perfmon's alarms, evaluated in process at every sample: the variables
configured in ``other_config:perfmon`` of a host, a VM or an SR, e.g.

    <config><variable><name value="cpu_usage"/>
      <alarm_trigger_level value="0.8"/></variable></config>

Each variable consolidates the newest values of the data sources its
``rrd_regex`` matches (``consolidation_fn``: sum, average, max, or one of
perfmon's helpers) and counts down ``alarm_trigger_period`` seconds while
the value is beyond ``alarm_trigger_level`` (above for ``high``, below
for ``low``); then it raises XAPI's ALARM message, with perfmon's body
(``value: <v>\\nconfig:\\n<the variable's XML>``), and keeps quiet for
``alarm_auto_inhibit_period`` seconds.  Defaults are perfmon's, per
class.  A configuration that does not parse is logged and ignored, as
perfmon does.
"""

import logging
import os
import re
import time

from defusedxml import minidom

log = logging.getLogger(__name__)

CLASSES = {"host": "Host", "vm": "VM", "sr": "SR"}
_NOTHING = "_$_DUMMY__"


class ConfigError(Exception):
    pass


def _average(values):
    return sum(values) / float(len(values)) if values else 0.0


def _sr_usage(values):
    if len(values) != 2 or not values[1]:
        return 0.0
    return float(values[0]) / values[1]


def _fs_usage(path):
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    return used / float(used + avail) if used + avail else 0.0


def _mem_usage(_):
    try:
        with open("/proc/meminfo") as f:
            info = {k.strip(): float(v.split()[0]) for k, v in
                    (line.split(":", 1) for line in f)}
        in_use = (info["MemTotal"] - info["MemFree"] - info["Buffers"]
                  - info["Cached"])
        swap = info["SwapTotal"] - info["SwapFree"]
        return (in_use + swap) / info["MemTotal"]
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return 0.0


def _log_fs_usage(_):
    if os.stat("/var/log").st_dev == os.stat("/etc/passwd").st_dev:
        return float("nan")
    return _fs_usage("/var/log")


FUNCTIONS = {
    "sum": sum, "average": _average, "max": max,
    "get_percent_sr_usage": _sr_usage,
    "get_percent_fs_usage": lambda _: _fs_usage("/etc/passwd"),
    "get_percent_log_fs_usage": _log_fs_usage,
    "get_percent_mem_usage": _mem_usage,
}


def default(kind, name, tag):
    """perfmon's default for a tag of a variable (VMMonitor, HOSTMonitor,
    SRMonitor); ConfigError where it has none."""
    common = {"alarm_trigger_period": "60",
              "alarm_auto_inhibit_period": "3600", "alarm_priority": "3"}
    if tag in common:
        return common[tag]
    if tag == "consolidation_fn":
        if kind == "sr":
            return "get_percent_sr_usage" if name == "physical_utilisation" \
                else "sum"
        helpers = {"cpu_usage": "average"}
        if kind == "vm":
            helpers.update(fs_usage="get_percent_fs_usage",
                           log_fs_usage="get_percent_log_fs_usage",
                           mem_usage="get_percent_mem_usage")
        return helpers.get(name, "sum")
    if tag == "rrd_regex":
        regexes = {
            "vm": {"cpu_usage": "cpu[0-9]+",
                   "network_usage": "vif_[0-9]+_[rt]x",
                   "disk_usage": "vbd_(xvd|hd)[a-z]+_(read|write)",
                   "fs_usage": _NOTHING, "log_fs_usage": _NOTHING,
                   "mem_usage": _NOTHING,
                   "memory_internal_free": "memory_internal_free"},
            "host": {"cpu_usage": "cpu[0-9]+",
                     "network_usage": "pif_eth[0-9]+_[rt]x",
                     "memory_free_kib": "memory_free_kib"},
            "sr": {"physical_utilisation": "physical_utilisation|size",
                   "sr_io_throughput_total_per_host": _NOTHING},
        }[kind]
        if kind == "host" and re.match(
                "sr_io_throughput_total_[0-9a-f]{8}$", name):
            return name[3:]
        if name in regexes:
            return regexes[name]
    if tag == "alarm_trigger_level":
        levels = {"vm": {"fs_usage": "0.9", "log_fs_usage": "0.9",
                         "mem_usage": "0.95"},
                  "sr": {"physical_utilisation": "0.8"}}.get(kind, {})
        if name in levels:
            return levels[name]
    if tag == "alarm_trigger_sense":
        low = {"vm": "memory_internal_free", "host": "memory_free_kib"}
        return "low" if low.get(kind) == name else "high"
    raise ConfigError("variable %s: no default for %s - please specify one"
                      % (name, tag))


class Variable:
    def __init__(self, kind, element, now):
        names = element.getElementsByTagName("name")
        if not names:
            raise ConfigError("variable missing 'name' tag")
        self.name = name = names[0].getAttribute("value")
        self.element = element
        self.config = element.toxml()

        def value(tag):
            nodes = element.getElementsByTagName(tag)
            if nodes and nodes[0].hasAttribute("value"):
                return nodes[0].getAttribute("value")
            return default(kind, name, tag)

        try:
            self.regex = re.compile("^%s$" % value("rrd_regex"))
        except re.error:
            raise ConfigError("variable %s: regex does not compile" % name)
        fn = value("consolidation_fn")
        if fn not in FUNCTIONS:
            raise ConfigError("variable %s: consolidation function %s not "
                              "supported" % (name, fn))
        self.consolidate = FUNCTIONS[fn]
        try:
            self.period = int(value("alarm_trigger_period"))
            self.inhibit = int(value("alarm_auto_inhibit_period"))
            self.level = float(value("alarm_trigger_level"))
            self.priority = int(value("alarm_priority"))
        except ValueError as e:
            raise ConfigError("variable %s: %s" % (name, e))
        self.high = value("alarm_trigger_sense") == "high"
        self.countdown = self.period
        self.last_alarm = now - self.inhibit

    def bad(self, v):
        return v > self.level if self.high else v < self.level

    def update(self, v, step, now):
        """Take one value; the alarm's body when one is due, else None."""
        if not self.bad(v):
            self.countdown = self.period
            return None
        self.countdown -= step
        if self.countdown > 0:
            return None
        self.countdown = self.period
        if now - self.last_alarm < self.inhibit:
            return None
        self.last_alarm = now
        return "value: %f\nconfig:\n%s" % (v, self.element.toprettyxml())


def parse(kind, text, now):
    doc = minidom.parseString(text)
    return [Variable(kind, e, now) for e in
            doc.getElementsByTagName("variable")]


class Perfmon:
    """Every configured object's variables, kept across samples (a
    variable whose configuration changes starts again)."""

    def __init__(self, step):
        self.step = step
        self.monitors = {}      # (kind, uuid) -> (config text, variables)

    def configure(self, configs, now):
        """``configs``: (kind, uuid) -> other_config:perfmon text."""
        for key in [k for k in self.monitors if k not in configs]:
            del self.monitors[key]
        for key, text in configs.items():
            old = self.monitors.get(key)
            if old is not None and old[0] == text:
                continue
            try:
                variables = parse(key[0], text, now)
            except Exception as e:
                log.warning("perfmon: %s %s config error: %s", key[0],
                            key[1], e)
                variables = []
            if old is not None:
                kept = {v.config: v for v in old[1]}
                variables = [kept.get(v.config, v) for v in variables]
            self.monitors[key] = (text, variables)

    def evaluate(self, latest, now=None):
        """The alarms due after a sample: (priority, class, uuid, body)
        each.  ``latest``: the store's [(kind, uuid, [(name, value)])]."""
        now = time.time() if now is None else now
        alarms = []
        for kind, uuid, values in latest:
            monitor = self.monitors.get((kind, uuid))
            if not monitor:
                continue
            for var in monitor[1]:
                matched = [v for n, v in values if var.regex.match(n)]
                try:
                    value = var.consolidate(matched)
                except (ValueError, OSError) as e:
                    log.warning("perfmon: %s %s: %s", kind, uuid, e)
                    continue
                body = var.update(value, self.step, now)
                if body is not None:
                    alarms.append((var.priority, CLASSES[kind], uuid, body))
        return alarms

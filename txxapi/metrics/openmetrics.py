"""
GET /metrics: the newest 5 s value of every recorded data source of this
host, in the OpenMetrics text format, for Prometheus and its kin.  A
source becomes a sample of the family ``xapi_<owner>_<source>`` with the
device part of its name moved into a ``device`` label (cpu3, vbd_xvda_read,
vif_0_rx, pif_eth0_tx), and labels naming its owner: ``host`` always,
``vm`` or ``sr`` for theirs.  Every family is a gauge: rrdd has already
turned the counters into rates.
"""

import functools
import math
import re

CONTENT_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"

_DEVICE = [
    (re.compile(r"^cpu(\d+)$"), "cpu"),
    (re.compile(r"^vbd_(.+)_(read|write)$"), r"vbd_\2"),
    (re.compile(r"^vif_(\d+)_(rx|tx)(_errors)?$"), r"vif_\2\3"),
    (re.compile(r"^pif_(?!aggr_)(.+)_(rx|tx)(_errors)?$"), r"pif_\2\3"),
]
_BAD = re.compile(r"[^a-zA-Z0-9_]")


@functools.lru_cache(maxsize=4096)
def family_of(kind, name):
    """(family name, device or None) of a data source (the same few
    names recur on every VM: worked out once)."""
    for pattern, base in _DEVICE:
        m = pattern.match(name)
        if m:
            return "xapi_%s_%s" % (kind, _BAD.sub("_", m.expand(base))), \
                m.group(1)
    return "xapi_%s_%s" % (kind, _BAD.sub("_", name)), None


def _label(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace(
        "\n", "\\n")


def _number(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _help(definition, name, device):
    """A family's help: its first source's description, with the device
    it names made generic."""
    text = definition.description if definition is not None else name
    if device is not None:
        text = re.sub(r"\b%s\b" % re.escape(device), "<device>", text)
    return text


def render(latest, host_uuid):
    """The exposition of the store's ``latest(described=True)``."""
    families = {}       # name -> (help, [sample line])
    host = 'host="%s"' % _label(host_uuid)
    for kind, uuid, values in latest:
        owner = host if kind == "host" else \
            '%s,%s="%s"' % (host, kind, _label(uuid))
        for name, value, definition in values:
            family, device = family_of(kind, name)
            text = owner if device is None else \
                '%s,device="%s"' % (owner, _label(device))
            entry = families.get(family)
            if entry is None:
                entry = families[family] = (_help(definition, name, device),
                                            [])
            entry[1].append("%s{%s} %s" % (family, text, _number(value)))
    out = []
    for family in sorted(families):
        help_, samples = families[family]
        out.append("# TYPE %s gauge" % family)
        out.append("# HELP %s %s" % (family, _label(help_)))
        out.extend(samples)
    out.append("# EOF")
    return "\n".join(out) + "\n"

"""
Where VM.start and VM.resume place a VM in a pool, as XAPI's
choose_host_for_vm does (without workload balancing):

Hosts are tried by categories, in order; within a category, from the
most desirable down, with a random pick biased towards the top (a
uniform draw squared), each candidate checked with the checks of
VM.assert_can_boot_here (memory, live, enabled, SRs, networks...), a
refused one dropped and the next drawn.  Hosts outside a category go on
to the next.  The categories, by the memory a host has once the VM is
counted on it (total - host overhead - every guest's overhead, guests
resident or scheduled there):

1. affinity: the VM's affinity host, if its guests' dynamic_min fit;
2. definite: the guests' static_max fit (value: what is left; the
   master's halved, to spare it);
3. probable: the guests' dynamic_max fit (same valuation);
4. possible: their dynamic_min fit (valued by how little the guests
   would need squeezing).

None fits with the memory checks: tried again without them (the start
on the host chosen then fails with the memory error of that host); none
at all: NO_HOSTS_AVAILABLE, except in a pool of one host, where the
host's own refusal is more telling and is what the start then answers.
"""

import random

from txxapi.errors import XenAPIError
from txxapi.impl.vm import assert_can_boot_here

RATIO_RESOLUTION = 1000


def _summary(db, host, vm, master):
    """What the categories read of a host, the VM counted on it."""
    h = db.fields("host", host)
    total = 0
    if db.exists("host_metrics", h["metrics"]):
        total = db.fields("host_metrics", h["metrics"])["memory_total"]
    guests = set(db.where("VM", resident_on=host)) | \
        set(db.where("VM", scheduled_to_be_resident_on=host)) | {vm}
    records = [db.fields("VM", g) for g in guests]

    def total_of(field):
        return sum(r[field] for r in records)
    return {
        "host": host,
        "master": host == master,
        "available": total - h["memory_overhead"] -
        total_of("memory_overhead"),
        "static_max": total_of("memory_static_max"),
        "dynamic_max": total_of("memory_dynamic_max"),
        "dynamic_min": total_of("memory_dynamic_min"),
    }


def _spare_master(value_of):
    def value(s):
        v = value_of(s)
        return (v - 1) // 2 if s["master"] else v
    return value


definite = _spare_master(lambda s: s["available"] - s["static_max"])
probable = _spare_master(lambda s: s["available"] - s["dynamic_max"])


def possible(s):
    available, low, high = s["available"], s["dynamic_min"], \
        s["dynamic_max"]
    if available >= high:
        return RATIO_RESOLUTION
    if available < low:
        return -1
    return RATIO_RESOLUTION * (available - low) // (high - low)


def affinity_of(host):
    return lambda s: possible(s) if s["host"] == host else -1


def biased_random():
    x = random.random()
    return x * x


def select(summaries, categories, fits, draw=biased_random):
    """The first host that ``fits``, category by category; None."""
    remaining = list(summaries)
    for category in categories:
        valued = sorted(((category(s), i, s) for i, s in
                         enumerate(remaining)), key=lambda t: -t[0])
        inside = [s for v, _, s in valued if v >= 0]
        remaining = [s for v, _, s in valued if v < 0]
        while inside:
            pick = inside.pop(int(len(inside) * draw()))
            if fits(pick["host"]):
                return pick["host"]
        if not remaining:
            return None
    return None


def _fits(ctx, vm, memory):
    def fits(host):
        try:
            assert_can_boot_here(ctx, vm, host, memory=memory)
        except XenAPIError:
            return False
        return True
    return fits


def choose_host(ctx, vm, candidates):
    """The host among ``candidates`` (live hosts) that ``vm`` starts on."""
    db = ctx.db
    hosts = sorted(candidates)
    if len(hosts) == 1:
        return hosts[0]
    master = db.fields("pool", ctx.server.pool_ref)["master"]
    summaries = [_summary(db, h, vm, master) for h in hosts]
    categories = [affinity_of(db.fields("VM", vm)["affinity"]), definite,
                  probable, possible]
    host = select(summaries, categories, _fits(ctx, vm, True))
    if host is None:
        host = select(summaries, categories, _fits(ctx, vm, False))
    if host is None:
        raise XenAPIError("NO_HOSTS_AVAILABLE")
    return host

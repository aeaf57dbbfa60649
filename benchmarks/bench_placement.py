"""
A pool's per-call costs that grow with hosts: VM.start's placement
(forwarding/placement.py: every live host summarised, categories,
candidates checked) and the master's liveness pass (pool/liveness.py:
one look at every host), at 16, 64 and 256 hosts with 1,000 and 4,096
resident VMs, on the in-memory database.  The placement's baseline, in
the same run, is the same algorithm reading each host's guests as XAPI
does (a where-query per host that scans the whole VM table); both must
place the same VM on the same host for the same random draws.

    python3 benchmarks/bench_placement.py [--json]
"""

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from txxapi.datamodel import MODEL  # noqa: E402
from txxapi.db.memory import Database  # noqa: E402
from txxapi.forwarding import placement  # noqa: E402
from txxapi.pool.liveness import Liveness  # noqa: E402

GIB = 1024 ** 3
CASES = ((16, 1000), (64, 1000), (64, 4096), (256, 4096))


class _Server:
    def __init__(self, host_ref, pool_ref):
        self.host_ref, self.pool_ref = host_ref, pool_ref


class _Ctx:
    def __init__(self, db, server):
        self.db, self.server = db, server


class _Identity:
    is_master = True

    def __init__(self, host_ref):
        self.host_ref = host_ref


def _memory(size):
    return {k: size for k in ("memory_static_max", "memory_dynamic_max",
                              "memory_dynamic_min", "memory_static_min")}


def make_pool(n_hosts, n_vms, seed=7):
    """Hosts of 256 GiB, VMs of 1-4 GiB spread round-robin; one halted
    VM to place."""
    rng = random.Random(seed)
    db = Database(MODEL)
    hosts = []
    for i in range(n_hosts):
        metrics = db.create("host_metrics", {"live": True,
                                             "memory_total": 256 * GIB})
        hosts.append(db.create("host", {
            "name_label": "host%03d" % i, "metrics": metrics,
            "enabled": True, "capabilities": ["hvm-3.0-x86_64"]}))
    pool = db.create("pool", {"master": hosts[0]})
    for i in range(n_vms):
        fields = _memory(rng.randint(1, 4) * GIB)
        fields.update(name_label="vm%05d" % i, power_state="Running",
                      resident_on=hosts[i % n_hosts], VCPUs_max=1,
                      VCPUs_at_startup=1)
        db.create("VM", fields)
    fields = _memory(2 * GIB)
    fields.update(name_label="to-place", VCPUs_max=1, VCPUs_at_startup=1)
    vm = db.create("VM", fields)
    return _Ctx(db, _Server(hosts[0], pool)), hosts, vm


def _scanning_summary(db, host, vm, master):
    """The baseline's summary: a host's guests by scanning every VM."""
    guests = {ref for ref, f in db.records("VM")
              if host in (f["resident_on"], f["scheduled_to_be_resident_on"])}
    h = db.fields("host", host)
    total = db.fields("host_metrics", h["metrics"])["memory_total"]
    records = [db.fields("VM", g) for g in guests | {vm}]

    def total_of(field):
        return sum(r[field] for r in records)
    return {"host": host, "master": host == master,
            "available": total - h["memory_overhead"] -
            total_of("memory_overhead"),
            "static_max": total_of("memory_static_max"),
            "dynamic_max": total_of("memory_dynamic_max"),
            "dynamic_min": total_of("memory_dynamic_min")}


def _timed(fn, repeat):
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def _place(ctx, hosts, vm, seed):
    random.seed(seed)
    return placement.choose_host(ctx, vm, set(hosts))


def measure(n_hosts, n_vms, repeat=5):
    ctx, hosts, vm = make_pool(n_hosts, n_vms)
    ours, chosen = _timed(lambda: _place(ctx, hosts, vm, 1), repeat)
    indexed = placement._summary
    placement._summary = _scanning_summary
    try:
        base, base_chosen = _timed(lambda: _place(ctx, hosts, vm, 1), repeat)
    finally:
        placement._summary = indexed
    assert chosen == base_chosen, (chosen, base_chosen)
    liveness = Liveness(None, _Identity(hosts[0]), ctx.db, None)
    liveness.check()
    check, _ = _timed(liveness.check, repeat)
    beat, _ = _timed(lambda: [liveness.heard(h) for h in hosts[1:]], repeat)
    return {"hosts": n_hosts, "vms": n_vms,
            "placement_ms": ours * 1e3, "baseline_placement_ms": base * 1e3,
            "ratio": base / ours,
            "liveness_pass_us": check * 1e6,
            "heartbeat_us": beat * 1e6 / max(1, n_hosts - 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(h, v) for h, v in CASES]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("%6s %6s %14s %14s %7s %16s %13s" % (
        "hosts", "VMs", "placement ms", "baseline ms", "ratio",
        "liveness pass us", "heartbeat us"))
    for r in rows:
        print("%6d %6d %14.2f %14.2f %7.1f %16.1f %13.2f" % (
            r["hosts"], r["vms"], r["placement_ms"],
            r["baseline_placement_ms"], r["ratio"], r["liveness_pass_us"],
            r["heartbeat_us"]))


if __name__ == "__main__":
    main()

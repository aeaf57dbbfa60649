"""
The HA failover planner's time to answer pool.ha_compute_max_host_
failures_to_tolerate (the bisection over n, each step a restart plan and
XAPI's plan_always_possible) at 16 and 64 hosts with 1,000 and 4,096
protected VMs, against a baseline in the same run: a direct port of
XAPI's binpack.ml (association lists, re-sorted bin lists, every
permutation of every combination simulated from scratch).  Both must
give the same answer.  The baseline gets a time budget per case; past
it the ratio is a lower bound.

    python3 benchmarks/bench_ha_planner.py [--budget S] [--json]
"""

import argparse
import itertools
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from txxapi.datamodel import MODEL  # noqa: E402
from txxapi.db.memory import Database  # noqa: E402
from txxapi.ha import planner, state  # noqa: E402

GIB = 1024 ** 3
# The first case is small enough for the baseline to finish, so that the
# two answers are compared on the exhaustive strategy too.
CASES = ((8, 250), (16, 1000), (64, 1000), (16, 4096), (64, 4096))


def pool(hosts, vms, slack=0.25, seed=7):
    """A pool whose VMs (1-8 GiB) run spread round-robin over hosts sized
    to their load plus some slack for restarts."""
    rng = random.Random(seed)
    sizes = {"vm%05d" % i: rng.randint(1, 8) * GIB for i in range(vms)}
    names = ["host%03d" % h for h in range(hosts)]
    placement = [(vm, names[i % hosts]) for i, vm in enumerate(sorted(sizes))]
    load = {h: 0 for h in names}
    for vm, h in placement:
        load[h] += sizes[vm]
    capacity = int(max(load.values()) * (1 + slack))
    free = [(h, capacity - load[h]) for h in names]
    return planner.PoolState(free, hosts, sizes, placement, [], False)


# --- the baseline: XAPI's list-based algorithm, ported as it is -------------

class OutOfTime(Exception):
    pass


class Baseline:
    def __init__(self, budget):
        self.deadline = time.perf_counter() + budget

    def tick(self):
        if time.perf_counter() > self.deadline:
            raise OutOfTime()

    @staticmethod
    def assoc(key, pairs):
        for k, v in pairs:
            if k == key:
                return v
        raise KeyError(key)

    @staticmethod
    def mem_assoc(key, pairs):
        return any(k == key for k, _ in pairs)

    @staticmethod
    def insert(elt, bins):
        for i, b in enumerate(bins):
            if b[1] <= elt[1]:
                return bins[:i] + [elt] + bins[i:]
        return bins + [elt]

    def bfd(self, things, bins):
        things = sorted(things, key=lambda t: -t[1])
        bins = sorted(bins, key=lambda b: -b[1])
        mapping = []
        for thing, size in things:
            if not bins:
                continue
            first, room = bins[0]
            if room - size < 0:
                continue
            bins = self.insert((first, room - size), bins[1:])
            mapping.insert(0, (thing, first))
        return mapping

    def account(self, hosts, vms, plan):
        return [(h, free - sum(self.assoc(vm, vms) for vm, host in plan
                               if host == h)) for h, free in hosts]

    def pack(self, hosts, vms, failed):
        return self.bfd([(vm, self.assoc(vm, vms)) for vm in failed], hosts)

    def simulate_failure(self, cfg, dead):
        self.tick()
        hosts, vms, placement, r = cfg
        failed = [vm for vm, h in placement if h == dead]
        hosts = [(h, m) for h, m in hosts if h != dead]
        plan = self.pack(hosts, vms, failed)
        if len(plan) != len(failed):
            return None
        hosts = self.account(hosts, vms, plan)
        placement = [(vm, self.assoc(vm, plan) if self.mem_assoc(vm, plan)
                      else h) for vm, h in placement]
        return hosts, vms, placement, r - 1

    def always_possible(self, cfg, total):
        hosts, vms, placement, r = cfg
        if len(hosts) < r or (len(hosts) == r and vms):
            return False
        if planner.choose_strategy(total, r) == planner.APPROXIMATE:
            cfg_t = planner.Configuration(hosts, dict(vms), placement,
                                          total, r)
            return planner._approximation_holds(cfg_t)
        for combination in itertools.combinations([h for h, _ in hosts], r):
            for order in itertools.permutations(combination):
                c = cfg
                for dead in order:
                    c = self.simulate_failure(c, dead)
                    if c is None:
                        return False
        return True

    def plan_for_n(self, state, n):
        vms = list(state.vms.items())
        plan = self.pack(state.hosts, vms, state.offline)
        if len(plan) != len(state.offline):
            return False
        hosts = self.account(state.hosts, vms, plan)
        placement = plan + [(vm, h) for vm, h in state.placement
                            if not self.mem_assoc(vm, plan)]
        return self.always_possible((hosts, vms, placement, n),
                                    state.total_hosts)

    def max_failures(self, state):
        lower, upper = 0, state.total_hosts
        while upper - lower >= 2:
            mid = (lower + upper) // 2
            if self.plan_for_n(state, mid):
                lower = mid
            else:
                upper = mid
        return upper if self.plan_for_n(state, upper) else lower


def measure(budget):
    rows = []
    for hosts, vms in CASES:
        state = pool(hosts, vms)
        start = time.perf_counter()
        answer = planner.max_failures_to_tolerate(state)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        try:
            base_answer = Baseline(budget).max_failures(state)
            complete = True
        except OutOfTime:
            base_answer, complete = None, False
        base = time.perf_counter() - start
        if complete and base_answer != answer:
            raise SystemExit("answers differ at %d x %d: %s vs %s"
                             % (hosts, vms, answer, base_answer))
        rows.append({"hosts": hosts, "vms": vms, "tolerates": answer,
                     "planner_s": ours, "baseline_s": base,
                     "baseline_complete": complete, "ratio": base / ours})
    return rows


def database_read(hosts=64, vms=4096):
    """Seconds to read the planning state (agility, free memory,
    placement) from an in-memory database of that size, every VM with a
    disk on a shared SR and a VIF on a shared network: the part of a
    planning call that runs on the reactor."""
    db = Database(MODEL)
    sr, net = db.create("SR", {"shared": True}), db.create("network", {})
    refs = []
    for i in range(hosts):
        metrics = db.create("host_metrics", {"memory_total": 512 * GIB,
                                             "live": True})
        h = db.create("host", {"uuid": "h%03d" % i, "metrics": metrics,
                               "enabled": True})
        db.create("PBD", {"SR": sr, "host": h, "currently_attached": True})
        db.create("PIF", {"network": net, "host": h})
        refs.append(h)
    rng = random.Random(1)
    for i in range(vms):
        size = rng.randint(1, 8) * GIB
        vm = db.create("VM", {
            "uuid": "v%05d" % i, "memory_static_max": size,
            "memory_dynamic_max": size, "memory_dynamic_min": size,
            "memory_static_min": size, "VCPUs_max": 1, "domain_type": "pv",
            "resident_on": refs[i % hosts], "power_state": "Running",
            "ha_always_run": True, "ha_restart_priority": "restart"})
        vdi = db.create("VDI", {"SR": sr})
        db.create("VBD", {"VM": vm, "VDI": vdi, "empty": False})
        db.create("VIF", {"VM": vm, "network": net})
    start = time.perf_counter()
    state.pool_state(db)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds the baseline may take per case")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = measure(args.budget)
    read = database_read()
    if args.json:
        print(json.dumps({"planner": rows, "database_read_s": read},
                         indent=2))
        return 0
    print("%5s %5s %9s %11s %13s %8s" % ("hosts", "VMs", "tolerates",
                                         "planner s", "baseline s", "ratio"))
    for r in rows:
        mark = "" if r["baseline_complete"] else ">"
        print("%5d %5d %9d %11.3f %12s%s %7s%.0f" % (
            r["hosts"], r["vms"], r["tolerates"], r["planner_s"],
            mark, "%.3f" % r["baseline_s"], mark, r["ratio"]))
    print("reading the planning state of 64 hosts x 4,096 VMs from the "
          "database: %.3f s" % read)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
VM.pool_migrate between the two hosts of a real pool (tests/support/pool.py:
two ``twistd xapi`` processes on 127.0.N.2 and .3, their database on etcd),
by the VM's memory size, against a baseline measured in the same run:
XAPI's localhost migration (VM.pool_migrate to the VM's own host, here a
suspend to an image on the local SR and a resume from it).  Each figure is
the median of ``--rounds`` moves, seconds per move, through the XenAPI SDK
on the master.  Needs root (ports 80/443 on loopback addresses) and etcd.

The simulator's domain image is its state, not its memory: the figures are
the toolstack's cost of a move (checks, marks, the HTTPS stream between the
hosts, the database writes through the master), which a real host adds
the memory copy to.

    python3 benchmarks/bench_pool_migrate.py [--rounds N] [--dir DIR] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from tests.support.etcd import have_etcd  # noqa: E402
from tests.support.pool import joined_pool  # noqa: E402
from tests.test_vm_lifecycle import MIB, guest_metrics, new_vm  # noqa: E402

SIZES_MIB = (256, 1024, 4096, 16384)
SERVER_ARGS = ["--simulator-op-time", "0.01", "--metrics-interval", "5"]


def timed(fn, *args):
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def measure(x, a, b, size_mib, rounds):
    vm = new_vm(x, "bench-%d" % size_mib, memory=size_mib * MIB)
    try:
        x.VM.start_on(vm, a, False, False)
        guest_metrics(x, vm)
        between, local = [], []
        for _ in range(rounds):
            for target in (b, a):
                between.append(timed(x.VM.pool_migrate, vm, target, {}))
            local.append(timed(x.VM.pool_migrate, vm, a, {}))
            guest_metrics(x, vm)
        x.VM.hard_shutdown(vm)
    finally:
        if x.VM.get_power_state(vm) == "Halted":
            x.VM.destroy(vm)
    return statistics.median(between), statistics.median(local)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not have_etcd():
        raise SystemExit("etcd is not installed")
    if os.geteuid() != 0:
        raise SystemExit("needs root: the hosts bind ports 80/443")
    base = tempfile.mkdtemp(prefix="bench-migrate-", dir=args.dir)
    pool = joined_pool(base, 2, SERVER_ARGS)
    rows = []
    try:
        hosts = next(pool)
        session = hosts[0].session()
        x = session.xenapi
        by_address = {r["address"]: ref
                      for ref, r in x.host.get_all_records().items()}
        a, b = (by_address[h.address] for h in hosts)
        for size in SIZES_MIB:
            between, local = measure(x, a, b, size, args.rounds)
            rows.append({"memory_mib": size, "between_hosts_s": between,
                         "localhost_s": local, "ratio": between / local})
            if not args.json:
                print("%6d MiB: between hosts %.3f s, localhost %.3f s, "
                      "ratio %.2f" % (size, between, local, between / local),
                      flush=True)
        session.xenapi.session.logout()
    finally:
        pool.close()
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

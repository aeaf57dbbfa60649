"""
HA failover times against T on a pool of three real hosts (the test
fixture's: twistd processes on 127.0.N.2-4, an etcd member each), for a
few values of T: a slave crashed (its process and etcd member killed with
-9) — detection (until the master declares it dead: HA_HOST_FAILED) and
the restart of its protected VMs (until all run on survivors); then the
master crashed — the API back (a survivor answers as master) and its
VMs restarted.  Every figure is also given as a ratio to T, the time
below which no failover may happen (a lease lives T after its last
renewal); XAPI's is about two minutes for T = 60 by its users' reports.

    sudo python3 benchmarks/bench_ha_failover.py [--timeouts 10,20] [--vms 4]
                                                 [--dir DIR] [--json]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from tests.support.api import wait_until  # noqa: E402
from tests.support.etcd import have_etcd  # noqa: E402
from tests.support.pool import Supervisor, joined_pool  # noqa: E402
from tests.test_ha_failover import (  # noqa: E402
    SERVER_ARGS, heartbeat_sr, master_of, plug_everywhere,
    running_elsewhere)
from tests.test_vm_lifecycle import MIB, new_vm  # noqa: E402
from txxenops.backends.simledger import overlaps  # noqa: E402

def until(check, timeout):
    return wait_until(check, timeout=timeout, what="the failover")


def protect(x, host, count, tag):
    vms = []
    for i in range(count):
        vm = new_vm(x, "%s-%d" % (tag, i), memory=64 * MIB, affinity=host)
        x.VM.set_ha_restart_priority(vm, "restart")
        x.VM.start(vm, False, False)
        vms.append(vm)
    return vms


def failed_messages(x, uuid):
    return sum(m["name"] == "HA_HOST_FAILED" and m["obj_uuid"] == uuid
               for m in x.message.get_all_records().values())


def crash(pool, x, t, victim, vms, tag, first, first_check):
    """Crash ``victim`` with ``vms`` protected VMs on it: seconds until
    ``first_check(x)`` (the SDK on the master) and until its VMs run
    elsewhere; the host is started again and back in the liveset."""
    host = x.host.get_by_uuid(victim.uuid)
    on_host = protect(x, host, vms, "%s-t%d" % (tag, t))
    figures = {}
    crashed = time.monotonic()
    victim.crash()
    y = until(lambda: first_check(x), 3 * t + 60)
    y = x if y is True else y
    figures[first] = time.monotonic() - crashed
    until(lambda: all(running_elsewhere(y, vm, host) for vm in on_host),
          3 * t + 60)
    figures[tag + "_vms_back"] = time.monotonic() - crashed
    victim.start(timeout=120)
    until(lambda: y.host_metrics.get_live(y.host.get_metrics(host)),
          3 * t + 60)
    return y, figures


def one_timeout(pool, t, vms):
    row = {"T": t}
    x = master_of(pool)
    the_pool = x.pool.get_all()[0]
    if x.pool.get_ha_enabled(the_pool):
        x.pool.disable_ha()
    sr = heartbeat_sr(x, pool)
    plug_everywhere(x, sr)
    x.pool.enable_ha([sr], {"timeout": str(t)})
    master = x.pool.get_master(the_pool)
    uuids = {r["address"]: r["uuid"]
             for r in x.host.get_all_records().values()}
    for h in pool:
        h.uuid = uuids[h.address]
    master_host = next(h for h in pool if h.uuid == x.host.get_uuid(master))
    slave_host = next(h for h in pool if h is not master_host)
    before = failed_messages(x, slave_host.uuid)
    x, figures = crash(
        pool, x, t, slave_host, vms, "slave", "slave_detected",
        lambda x: failed_messages(x, slave_host.uuid) > before)
    row.update(figures)
    x, figures = crash(pool, x, t, master_host, vms, "master", "api_back",
                       lambda x: master_of(pool))
    row.update(figures)
    row["overlaps"] = len(overlaps(
        {h.address: os.path.join(h.data_dir, "xenops") for h in pool}))
    return row


FIGURES = (("slave_detected", "slave declared dead"),
           ("slave_vms_back", "slave's VMs running again"),
           ("api_back", "API back on a new master"),
           ("master_vms_back", "master's VMs running again"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeouts", default="10,20")
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not have_etcd() or os.geteuid() != 0:
        raise SystemExit("needs etcd and root (ports 80/443 on 127.0.N.x)")
    base = tempfile.mkdtemp(prefix="bench-ha-", dir=args.dir)
    rows = []
    try:
        for hosts in joined_pool(base, 3, SERVER_ARGS):
            hosts.shared = os.path.join(base, "shared")
            os.makedirs(hosts.shared)
            supervisor = Supervisor(hosts)
            try:
                for t in [int(v) for v in args.timeouts.split(",")]:
                    rows.append(one_timeout(hosts, t, args.vms))
            finally:
                supervisor.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("%-28s" % "seconds after the crash" +
          "".join("%16s" % ("T = %d s" % r["T"]) for r in rows))
    for key, label in FIGURES:
        print("%-28s" % label + "".join(
            "%8.1f (%4.2fT)" % (r[key], r[key] / r["T"]) for r in rows))
    print("%-28s" % "VMs ever on two hosts" +
          "".join("%16d" % r["overlaps"] for r in rows))


if __name__ == "__main__":
    main()

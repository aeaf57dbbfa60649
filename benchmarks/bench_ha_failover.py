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

from tests.support.etcd import have_etcd  # noqa: E402
from tests.support.pool import Supervisor, joined_pool  # noqa: E402
from tests.test_ha_failover import (  # noqa: E402
    SERVER_ARGS, heartbeat_sr, master_of, plug_everywhere,
    running_elsewhere)
from tests.test_vm_lifecycle import MIB, new_vm  # noqa: E402
from txxenops.backends.simledger import overlaps  # noqa: E402

POLL = 0.1


def until(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL)
    raise SystemExit("timed out after %.0f s" % timeout)


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


def one_timeout(pool, t, vms):
    row = {"T": t}
    x = master_of(pool)
    the_pool = x.pool.get_all()[0]
    if x.pool.get_ha_enabled(the_pool):
        x.pool.disable_ha()
    sr = heartbeat_sr(x, pool)
    plug_everywhere(x, sr)
    x.pool.enable_ha([sr], {"timeout": str(t)})
    by_address = {x.host.get_address(h): h for h in x.host.get_all()}
    master = x.pool.get_master(the_pool)
    slave_host = next(h for h in pool
                      if by_address[h.address] != master)
    master_host = next(h for h in pool if by_address[h.address] == master)
    slave = by_address[slave_host.address]

    on_slave = protect(x, slave, vms, "slave-t%d" % t)
    uuid = x.host.get_uuid(slave)
    before = failed_messages(x, uuid)
    crashed = time.monotonic()
    slave_host.crash()
    until(lambda: failed_messages(x, uuid) > before, 3 * t + 60)
    row["slave_detected"] = time.monotonic() - crashed
    until(lambda: all(running_elsewhere(x, vm, slave) for vm in on_slave),
          3 * t + 60)
    row["slave_vms_back"] = time.monotonic() - crashed
    slave_host.start(timeout=120)
    until(lambda: x.host_metrics.get_live(x.host.get_metrics(slave)),
          3 * t + 60)

    on_master = protect(x, master, vms, "master-t%d" % t)
    crashed = time.monotonic()
    master_host.crash()
    y = until(lambda: master_of(pool), 3 * t + 60)
    row["api_back"] = time.monotonic() - crashed
    until(lambda: all(running_elsewhere(y, vm, master) for vm in on_master),
          3 * t + 60)
    row["master_vms_back"] = time.monotonic() - crashed
    master_host.start(timeout=120)
    until(lambda: y.host_metrics.get_live(y.host.get_metrics(master)),
          3 * t + 60)
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

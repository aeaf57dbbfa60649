"""
VM lifecycle throughput: start/hard_shutdown cycles per second on the
simulator with its operation time set to zero (so the toolstack's own cost
shows), with 1, 10 and 100 cycles in flight, each worker on its own VM
and its own session.  Side by side, the baseline: the same workers each
doing two plain durable writes (VM.set_name_label) per cycle, the floor
any two-call cycle pays for dispatch and the redo log.

    python3 benchmarks/bench_vm_lifecycle.py [--seconds S]
                                             [--inflight 1,10,100]

The server is a real `twistd xapi` (as the tests start it); the workers
are threads of this process speaking XML-RPC over plain HTTP.
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

import XenAPI  # noqa: E402

from tests.support.servers import PASSWORD, USER, LoadServer  # noqa: E402

MIB = 1024 ** 2
NULL = "OpaqueRef:NULL"


def vm_record(name):
    memory = str(64 * MIB)
    return {
        "name_label": name, "name_description": "", "user_version": "1",
        "is_a_template": False, "affinity": NULL,
        "memory_static_max": memory, "memory_dynamic_max": memory,
        "memory_dynamic_min": memory, "memory_static_min": memory,
        "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "restart",
        "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "", "PV_args": "",
        "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {},
        "PCI_bus": "", "other_config": {}, "recommendations": ""}


def lifecycle_cycle(x, vm, i):
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)


def baseline_cycle(x, vm, i):
    x.VM.set_name_label(vm, "a%d" % i)
    x.VM.set_name_label(vm, "b%d" % i)


def run(server, vms, seconds, cycle):
    """Cycles per second with one worker per VM, and the first error."""
    counts = [0] * len(vms)
    errors = []
    barrier = threading.Barrier(len(vms) + 1)
    stop = threading.Event()

    def worker(n, vm):
        session = XenAPI.Session(server.http_url)
        session.xenapi.login_with_password(USER, PASSWORD, "1.0", "bench")
        x = session.xenapi
        barrier.wait()
        try:
            while not stop.is_set():
                cycle(x, vm, counts[n])
                counts[n] += 1
        except Exception as e:
            errors.append(e)
        finally:
            session.xenapi.session.logout()

    threads = [threading.Thread(target=worker, args=(n, vm))
               for n, vm in enumerate(vms)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return sum(counts) / elapsed, (errors[0] if errors else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--inflight", default="1,10,100")
    args = parser.parse_args()
    levels = [int(n) for n in args.inflight.split(",")]
    base = tempfile.mkdtemp(prefix="bench-vm-")
    server = LoadServer(os.path.join(base, "data"), extra_args=[
        "--simulator-op-time", "0", "--simulator-memory",
        str(64 * 1024 * MIB)])
    server.start()
    rows = []
    try:
        x = server.session(https=False).xenapi
        vms = [x.VM.create(vm_record("bench%d" % i))
               for i in range(max(levels))]
        for n in levels:
            rate, error = run(server, vms[:n], args.seconds, lifecycle_cycle)
            floor, _ = run(server, vms[:n], args.seconds, baseline_cycle)
            rows.append((n, rate, floor, error))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print("VM start/hard_shutdown cycles per second (simulator op time 0, "
          "%gs per level)" % args.seconds)
    print("%9s  %14s  %22s" % ("in flight", "cycles/s", "baseline 2 writes/s"))
    for n, rate, floor, error in rows:
        print("%9d  %14.1f  %22.1f%s" % (
            n, rate, floor, "  (error: %s)" % error if error else ""))


if __name__ == "__main__":
    main()

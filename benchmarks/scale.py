"""
Item 2: scale sweep over pools of 1,000, 10,000 and 50,000 VMs (each with
its metrics, two VBDs and a VIF): VM.get_all_records and the initial
event.from dump (time and size), startup time, server RSS and snapshot
write time.  The ratio is the per-VM cost against the smallest pool's
(each net of the empty pool's figure): 1.00 is linear growth.
"""

import os
import shutil
import time

from benchmarks import common

ITEM = "scale"


def measure_pool(ctx, vms):
    """Figures of one pool size; vms=0 is the freshly bootstrapped pool."""
    data = os.path.join(ctx.base, "scale-%d" % vms)
    figures = {}
    if vms:
        figures["snapshot write"] = common.populated_data_dir(
            ctx.template(), data, vms)
    else:
        shutil.copytree(ctx.template(), data)
    server = common.LoadServer(data)
    t0 = time.perf_counter()
    server.start(timeout=600)
    figures["startup"] = time.perf_counter() - t0
    try:
        pid = server.proc.pid
        figures["RSS idle"] = common.rss_mib(pid)
        url = server.https_url
        session = common.login(url)
        repeats = 1 if vms >= 50000 else 2
        for label, call in (
                ("VM.get_all_records XML-RPC",
                 lambda: len(common.xmlrpc_raw(
                     url, "VM.get_all_records", [session]))),
                ("VM.get_all_records JSON-RPC",
                 lambda: common.jsonrpc(
                     url, "VM.get_all_records", [session])[1]),
                ("event.from initial dump XML-RPC",
                 lambda: len(common.xmlrpc_raw(
                     url, "event.from", [session, ["*"], "", 30.0]))),
                ("event.from initial dump JSON-RPC",
                 lambda: common.jsonrpc(
                     url, "event.from", [session, ["*"], "", 30.0])[1])):
            best = cpu = None
            for _ in range(repeats):
                c0 = common.cpu_seconds(pid)
                t0 = time.perf_counter()
                size = call()
                elapsed = time.perf_counter() - t0
                used = common.cpu_seconds(pid) - c0
                best = elapsed if best is None else min(best, elapsed)
                cpu = used if cpu is None else min(cpu, used)
            figures[label] = best
            # The server's own CPU time: steadier than the wall clock on
            # a shared machine, and free of the client's parsing.
            figures[label + ", server CPU"] = cpu
            figures[label + " size"] = size / 1e6
        figures["RSS after the calls"] = common.rss_mib(pid)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    print("  %6d VMs: %s" % (vms, ", ".join(
        "%s %.3g" % (k, v) for k, v in figures.items())), flush=True)
    return figures


UNITS = {"snapshot write": "s", "startup": "s", "RSS idle": "MiB",
         "RSS after the calls": "MiB"}


def run(ctx):
    sizes = (500, 1000, 2000) if ctx.quick else (1000, 10000, 50000)
    empty = measure_pool(ctx, 0)
    by_size = {n: measure_pool(ctx, n) for n in sizes}
    small = sizes[0]
    for name in by_size[small]:
        unit = UNITS.get(name, "MB" if name.endswith("size") else "s")
        base0 = empty.get(name, 0.0)
        per_vm_small = (by_size[small][name] - base0) / small
        for n in sizes:
            value = by_size[n][name]
            ratio = None
            if n != small and per_vm_small > 0:
                ratio = ((value - base0) / n) / per_vm_small
            ctx.results.add(
                ITEM, "%s, %s VMs" % (name, "{:,}".format(n)), value, unit,
                ratio=ratio,
                baseline_name=("linear from %s VMs" % "{:,}".format(small))
                if ratio is not None else None)
            chart = "Scale: RSS (MiB)" if unit == "MiB" else \
                "Scale: response size (MB)" if unit == "MB" else \
                "Scale: time (s)"
            ctx.results.point(chart, name, n, value)

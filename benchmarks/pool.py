"""
Item pool: a pool of N real hosts (tests/support/pool.py: a twistd each,
on 127.0.N.x ports 80/443, needs root and etcd) with 64 VMs a host (64
hosts: 4,096 VMs), for N in 16, 32, 64 (quick: 4, 8): join time per host
(all joining at once), VM.get_all_records on the master, the latency from
a guest's own power-off on a slave to an XO-style event.from watcher on
the master, durable writes per second through the pool's etcd log against
a lone host's local redo log, master failover (kill -9, then
emergency_transition_to_master on a slave until it serves as master), and
resident memory per host; each against its value at the smallest N.

    TXXAPI_TEST_NET=N python -m benchmarks --only pool [--quick]

A size that does not fit (a host that does not come up, a phase over its
time budget) is measured as far as it got and says so in its note.
"""

import os
import statistics
import threading
import time
import xmlrpc.client

from benchmarks import common
from tests.support import pool as pool_support
from tests.support.servers import PASSWORD, USER

ITEM = "pool"
VMS_PER_HOST = 64
MIB = 1024 * 1024
WRITE_SECONDS = 5.0
WRITERS = 8
START_BUDGET = 600.0


def rpc(address):
    return xmlrpc.client.ServerProxy(
        "https://%s/" % address, context=common.insecure_context(),
        allow_none=True)


def value(reply):
    if reply.get("Status") != "Success":
        raise RuntimeError("XenAPI failure: %r" % reply.get("ErrorDescription"))
    return reply["Value"]


def login(address):
    return value(rpc(address).session.login_with_password(
        USER, PASSWORD, "1.0", "benchmark"))


def vm_record(name):
    mem = str(64 * MIB)
    return {"name_label": name, "name_description": "", "user_version": "1",
            "is_a_template": False, "affinity": "OpaqueRef:NULL",
            "memory_static_max": mem, "memory_dynamic_max": mem,
            "memory_dynamic_min": mem, "memory_static_min": mem,
            "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
            "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart",
            "actions_after_crash": "restart",
            "PV_bootloader": "", "PV_kernel": "", "PV_ramdisk": "",
            "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
            "HVM_boot_policy": "", "HVM_boot_params": {}, "platform": {},
            "PCI_bus": "", "other_config": {}, "recommendations": ""}


def run_workers(worker, address, threads):
    ts = [threading.Thread(target=worker, args=(address,))
          for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def parallel(address, items, fn, threads=8):
    """[fn(proxy, session, item)] over items, from ``threads`` clients
    with a session each; (results, errors)."""
    items = list(items)
    out, errors = [None] * len(items), []
    lock = threading.Lock()
    cursor = [0]

    def worker(address):
        proxy, session = rpc(address), login(address)
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(items):
                return
            try:
                out[i] = fn(proxy, session, items[i])
            except Exception as e:
                errors.append(e)
    run_workers(worker, address, threads)
    return out, errors


def writes_per_second(address, seconds=WRITE_SECONDS, writers=WRITERS):
    """network.create from ``writers`` clients for ``seconds``: each call
    answers once its write is durable."""
    stop = time.monotonic() + seconds
    counts = []

    def worker(_address):
        proxy, session = rpc(address), login(address)
        n = 0
        while time.monotonic() < stop:
            value(proxy.network.create(session, {
                "name_label": "w", "name_description": "", "MTU": "1500",
                "other_config": {}}))
            n += 1
        counts.append(n)
    run_workers(worker, address, writers)
    return sum(counts) / seconds


def event_latency(pool, master, session, vms_on, samples=5):
    """Seconds from a guest's power-off on a slave (VM.call_plugin
    simulator poweroff, run there) to its Halted in an event.from watcher
    on the master."""
    proxy = rpc(master)
    token = value(getattr(proxy.event, "from")(session, ["vm"], "", 0.0))[
        "token"]
    out = []
    for address, vm in vms_on[:samples]:
        caller = rpc(master)
        started = time.monotonic()
        value(caller.VM.call_plugin(session, vm, "simulator", "poweroff",
                                    {}))
        deadline = started + 30
        seen = None
        while seen is None and time.monotonic() < deadline:
            reply = value(getattr(proxy.event, "from")(
                session, ["vm"], token, 5.0))
            token = reply["token"]
            for e in reply["events"]:
                if e["ref"] == vm and e.get("snapshot", {}).get(
                        "power_state") == "Halted":
                    seen = time.monotonic()
        if seen is not None:
            out.append(seen - started)
    return statistics.median(out) if out else None


def rss(pid):
    return common.rss_mib(pid) if pid else None


def etcd_rss():
    """MiB of every etcd member process of this test net's pool."""
    total, count = 0.0, 0
    prefix = "127.0.%d." % pool_support.TEST_NET
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"etcd") and any(
                prefix.encode() in c for c in cmd):
            total += common.rss_mib(int(pid))
            count += 1
    return total, count


def measure(ctx, n, baseline):
    base = os.path.join(ctx.base, "pool%d" % n)
    hosts = pool_support.PoolHosts(base, n)
    figures, notes = {}, []
    try:
        t0 = time.monotonic()
        hosts.start(timeout=60 + 2 * n)
        figures["start all hosts"] = (time.monotonic() - t0, "s")
        master = hosts[0].address
        t0 = time.monotonic()
        hosts.join_all(hosts.hosts[1:], hosts[0], timeout=120 + 4 * n)
        joined = time.monotonic() - t0
        figures["join time per host (all at once)"] = (
            joined / max(1, n - 1), "s")
        session = login(master)
        proxy = rpc(master)
        host_refs = {r["address"]: ref for ref, r in
                     value(proxy.host.get_all_records(session)).items()}
        # The VMs, then each started on its host (forwarded there).
        names = ["vm-%d-%d" % (h, i) for h in range(n)
                 for i in range(VMS_PER_HOST)]
        t0 = time.monotonic()
        vms, errors = parallel(master, names, lambda p, s, name: value(
            p.VM.create(s, vm_record(name))))
        figures["VM.create (%d VMs)" % len(names)] = (
            len(names) / (time.monotonic() - t0), "/s")
        addresses = [h.address for h in hosts]
        placed = [(addresses[i // VMS_PER_HOST], vm)
                  for i, vm in enumerate(vms) if vm]
        t0 = time.monotonic()
        budget = t0 + START_BUDGET
        started, errors = parallel(master, placed, lambda p, s, item: (
            time.monotonic() < budget and value(p.VM.start_on(
                s, item[1], host_refs[item[0]], False, False)) == ""),
            threads=16)
        ok = sum(1 for s in started if s)
        figures["VM.start_on, forwarded (%d started)" % ok] = (
            ok / (time.monotonic() - t0), "/s")
        if ok < len(placed):
            notes.append("%d of %d VMs started in the %.0f s budget (%d "
                         "errors)" % (ok, len(placed), START_BUDGET,
                                      len(errors)))
        # The master's whole VM table, as XO and the SDK read it (a fresh
        # connection: the master closes one left idle during the starts).
        proxy = rpc(master)
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            records = value(proxy.VM.get_all_records(session))
            times.append(time.monotonic() - t0)
        figures["VM.get_all_records (%d records)" % len(records)] = (
            min(times), "s")
        slave_vms = [(a, vm) for a, vm in placed if a != master][::max(
            1, len(placed) // 8)]
        figures["event latency, slave guest power-off -> master watcher"] \
            = (event_latency(hosts, master, session, slave_vms), "s")
        figures["durable writes/s through the etcd log (8 clients)"] = (
            writes_per_second(master), "/s")
        figures["master RSS"] = (rss(hosts[0].proc.pid), "MiB")
        slaves = [rss(h.proc.pid) for h in hosts.hosts[1:] if h.proc]
        figures["slave RSS (mean)"] = (statistics.mean(slaves), "MiB")
        total, members = etcd_rss()
        figures["etcd RSS per member (%d members)" % members] = (
            total / max(1, members), "MiB")
        # Failover: the master killed, a slave that runs an etcd member
        # takes over (after the dead master's lease expires).
        survivor = hosts[1]
        hosts[0].kill()
        t0 = time.monotonic()
        local = rpc(survivor.address)
        with open(os.path.join(survivor.data_dir, "ptoken")) as f:
            secret = f.read().strip()
        ls = value(local.session.slave_local_login(secret))
        value(local.pool.emergency_transition_to_master(ls))
        survivor.restart(timeout=120)
        s2 = login(survivor.address)
        value(rpc(survivor.address).VM.get_all(s2))
        figures["master failover (kill -9 to serving as master)"] = (
            time.monotonic() - t0, "s")
    except Exception as e:
        notes.append("stopped at: %s: %s" % (type(e).__name__, e))
    finally:
        hosts.stop()
    note = "; ".join(notes)
    for figure, (v, unit) in figures.items():
        key = figure.split(" (")[0]
        base_value = baseline.get(key) if baseline is not None else None
        ctx.results.add(ITEM, "%d hosts: %s" % (n, figure), v, unit,
                        base_value, "the %s-host pool" % baseline["hosts"]
                        if base_value else None, note=note)
        if v is not None:
            ctx.results.point("Pool figures against hosts", key, n, v)
    return {f.split(" (")[0]: v for f, (v, _u) in figures.items()}


def lone_host_writes(ctx):
    """The baseline of durable writes: one host alone (its local redo
    log, no etcd)."""
    hosts = pool_support.PoolHosts(os.path.join(ctx.base, "lone"), 1)
    try:
        hosts.start()
        return writes_per_second(hosts[0].address)
    finally:
        hosts.stop()


def run(ctx):
    if os.geteuid() != 0:
        ctx.results.unavailable(ITEM, "pool", "needs root (ports 80/443)")
        return
    sizes = (4, 8) if ctx.quick else (16, 32, 64)
    local = lone_host_writes(ctx)
    ctx.results.add(ITEM, "lone host: durable writes/s, local redo log",
                    local, "/s")
    baseline = None
    for n in sizes:
        figures = measure(ctx, n, baseline)
        key = "durable writes/s through the etcd log"
        if figures.get(key):
            ctx.results.add(ITEM, "%d hosts: etcd log writes/s against the "
                            "lone host's local log" % n, figures[key], "/s",
                            local, "lone host, local redo log")
        if baseline is None:
            baseline = dict(figures, hosts=n)

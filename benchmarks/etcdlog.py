"""
Item 7: the pool's database log on etcd, durable writes per second and
latency p50/p99 with 1, 10 and 100 writers on a 3-member etcd cluster on
loopback, through txxapi's Twisted gateway client and through etcd3gw (a
maintained PyPI client) on a thread pool, each against today's local redo
log measured in the same run (benchmarks/bench_etcd.py).
"""

from benchmarks.durability import script

ITEM = "etcdlog"
CLIENTS = (("twisted", "etcd, Twisted gateway client"),
           ("etcd3gw", "etcd, etcd3gw on threads"))


def run(ctx):
    from tests.support.etcd import have_etcd
    if not have_etcd():
        ctx.results.unavailable(ITEM, "etcd writes", "etcd not installed")
        return
    seconds = 0.5 if ctx.quick else 3.0
    doc = script("bench_etcd.py", "--seconds", str(seconds),
                 "--dir", ctx.base)
    if not doc["etcd3gw"]:
        ctx.results.unavailable(ITEM, "etcd3gw on threads",
                                "etcd3gw not installed (the bench extra)")
    chart = "etcd log: acknowledged writes/s"
    for row in doc["rows"]:
        head = "%d writer%s: " % (row["writers"], "s"[:row["writers"] > 1])
        local = row["redolog"]
        ctx.results.point(chart, "local redo log", row["writers"],
                          local["per_s"])
        for key, label in CLIENTS:
            if key not in row:
                continue
            fig = row[key]
            ctx.results.add(ITEM, head + label + ", writes", fig["per_s"],
                            "/s", local["per_s"], "local redo log")
            for p in ("p50", "p99"):
                ctx.results.add(ITEM, head + label + ", latency " + p,
                                fig[p + "_ms"], "ms", local[p + "_ms"],
                                "local redo log")
            ctx.results.add(ITEM, head + label + ", client CPU per write",
                            fig["client_cpu_us"], "us",
                            local["client_cpu_us"], "local redo log")
            ctx.results.point(chart, label, row["writers"], fig["per_s"])
        if "etcd3gw" in row:
            ctx.results.add(ITEM, head + "Twisted client against etcd3gw, "
                            "writes", row["twisted"]["per_s"], "/s",
                            row["etcd3gw"]["per_s"], "etcd3gw on threads")

"""
Item 7: the pool's database log on etcd, durable writes per second and
latency p50/p99 with 1, 10 and 100 writers on a 3-member etcd cluster on
loopback, through txxapi's Twisted gateway client and through etcd3gw (a
maintained PyPI client) on a thread pool, each against today's local redo
log measured in the same run (benchmarks/bench_etcd.py); and database
writes through the master's PoolPersistence (group commit: one fenced etcd
transaction per batch) against the local Persistence alone
(benchmarks/bench_pool_dblog.py).
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
            add_writes(ctx, head + label, ", writes", fig, local,
                       "local redo log")
            ctx.results.add(ITEM, head + label + ", client CPU per write",
                            fig["client_cpu_us"], "us",
                            local["client_cpu_us"], "local redo log")
            ctx.results.point(chart, label, row["writers"], fig["per_s"])
        if "etcd3gw" in row:
            ctx.results.add(ITEM, head + "Twisted client against etcd3gw, "
                            "writes", row["twisted"]["per_s"], "/s",
                            row["etcd3gw"]["per_s"], "etcd3gw on threads")

    pool_writes(ctx, seconds)


def add_writes(ctx, name, what, fig, base, base_label):
    """Writes per second and latency p50/p99 against a baseline's."""
    ctx.results.add(ITEM, name + what, fig["per_s"], "/s", base["per_s"],
                    base_label)
    for p in ("p50", "p99"):
        ctx.results.add(ITEM, name + ", latency " + p, fig[p + "_ms"], "ms",
                        base[p + "_ms"], base_label)


def pool_writes(ctx, seconds):
    doc = script("bench_pool_dblog.py", "--seconds", str(seconds),
                 "--dir", ctx.base)
    chart = "pool database: acknowledged writes/s"
    for row in doc["rows"]:
        head = "%d writer%s: " % (row["writers"], "s"[:row["writers"] > 1])
        local, pool = row["local"], row["pool"]
        label = "PoolPersistence"
        add_writes(ctx, head + label, ", db writes", pool, local,
                   "local Persistence")
        ctx.results.add(ITEM, head + label + ", records per etcd txn",
                        pool["records_per_txn"], "")
        ctx.results.point(chart, "local Persistence", row["writers"],
                          local["per_s"])
        ctx.results.point(chart, label, row["writers"], pool["per_s"])

"""
Durable database writes through the pool master's persistence
(txxapi.pool.persistence.PoolPersistence: local redo log + one fenced etcd
transaction per group commit) against the local Persistence alone, on a
3-member etcd cluster on loopback: writes per second, latency p50/p99 and
records per etcd transaction, with 1, 10 and 100 concurrent writers each
creating a network row and waiting for wait_durable before the next.

    python3 benchmarks/bench_pool_dblog.py [--seconds S] [--dir DIR] [--json]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from twisted.internet import defer, task, threads  # noqa: E402

from benchmarks.bench_etcd import WRITERS, drive  # noqa: E402
from tests.support.etcd import EtcdCluster, have_etcd  # noqa: E402
from txxapi.datamodel import MODEL  # noqa: E402
from txxapi.db.memory import Database  # noqa: E402
from txxapi.db.persist import Persistence  # noqa: E402
from txxapi.pool.etcd import EtcdClient  # noqa: E402
from txxapi.pool.persistence import PoolPersistence  # noqa: E402


def network(n):
    return {"name_label": "net%d" % n, "name_description": "benchmark",
            "MTU": 1500, "other_config": {"writer": str(n)}}


@defer.inlineCallbacks
def run_one(persistence, writers, seconds):
    db = Database(MODEL)
    yield persistence.open(db)

    def write(n):
        db.create("network", network(n))
        return persistence.wait_durable(db.persistent_generation)
    figures = yield drive(writers, seconds, write)
    yield persistence.close()
    return figures


@defer.inlineCallbacks
def main(reactor, args):
    say = (lambda text: None) if args.json else print
    if not have_etcd():
        raise SystemExit("etcd is not installed")
    base = tempfile.mkdtemp(prefix="bench-pooldb-", dir=args.dir)
    cluster = EtcdCluster(os.path.join(base, "etcd"), size=3, token="bench")
    rows = []
    try:
        yield threads.deferToThread(cluster.start)
        client = EtcdClient(cluster.endpoints, reactor, timeout=10)
        say("%7s | %-6s %10s %9s %9s %12s" % (
            "writers", "log", "writes/s", "p50 ms", "p99 ms", "records/txn"))
        for writers in WRITERS:
            row = {"writers": writers}
            local = Persistence(os.path.join(base, "local%d" % writers),
                                reactor)
            row["local"] = yield run_one(local, writers, args.seconds)
            prefix = b"bench/pool%d" % writers
            lease = yield client.grant(60)
            yield client.campaign(prefix + b"/master", b"bench", lease.id)
            pool = PoolPersistence(os.path.join(base, "pool%d" % writers),
                                   reactor, client, prefix,
                                   prefix + b"/master", lease.id)
            figures = yield run_one(pool, writers, args.seconds)
            stats = pool.writer.stats
            figures["records_per_txn"] = stats["records"] / max(
                stats["batches"], 1)
            row["pool"] = figures
            for name in ("local", "pool"):
                f = row[name]
                say("%7d | %-6s %10.0f %9.2f %9.2f %12s" % (
                    writers, name, f["per_s"], f["p50_ms"], f["p99_ms"],
                    "%.1f" % f["records_per_txn"] if name == "pool" else ""))
            rows.append(row)
        yield client.close()
    finally:
        yield threads.deferToThread(cluster.stop)
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip()
                                     .splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default=None,
                        help="where the etcd data dirs and the logs go")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON line")
    task.react(main, [parser.parse_args()])

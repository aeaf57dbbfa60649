"""
Durable writes on a 3-member etcd cluster on loopback, as the pool's
database log will make them, against today's local redo log: writes per
second and latency (p50, p99) with 1, 10 and 100 concurrent writers, each
writing its next record once the previous one is acknowledged.

    python3 benchmarks/bench_etcd.py [--seconds S] [--dir DIR] [--json]

Clients compared in the same run, interleaved per writer count:
- "twisted": txxapi.pool.etcd's client (the v3 JSON gateway over Twisted's
  HTTP client, on the reactor);
- "etcd3gw": the maintained gateway client from PyPI (requests), called
  on a thread pool as many threads wide as there are writers, one client
  per thread (its session is not shared across threads);
- "redolog": txxapi.db.redolog with group commit (one fsync on this disk).
Each etcd member and the redo log write in DIR (the same disk).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from twisted.internet import defer, task, threads  # noqa: E402
from twisted.python.threadpool import ThreadPool  # noqa: E402

from benchmarks.bench_redolog import typical_record  # noqa: E402
from tests.support.etcd import EtcdCluster, have_etcd  # noqa: E402
from txxapi.db.redolog import RedoLog, encode_payload  # noqa: E402
from txxapi.pool.etcd import EtcdClient  # noqa: E402

WRITERS = (1, 10, 100)


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    rank = int(round(p / 100.0 * (len(values) - 1)))
    return values[min(len(values) - 1, rank)]


def summary(latencies, elapsed, cpu):
    return {"per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "writes": len(latencies),
            # This process's CPU (reactor and threads) per write.
            "client_cpu_us": cpu / max(len(latencies), 1) * 1e6}


@defer.inlineCallbacks
def drive(writers, seconds, write_one):
    """writers loops, each awaiting write_one(n) then writing again, for
    seconds; the summary of their latencies."""
    latencies = []
    deadline = time.perf_counter() + seconds
    counter = [0]

    @defer.inlineCallbacks
    def writer():
        while time.perf_counter() < deadline:
            counter[0] += 1
            started = time.perf_counter()
            yield write_one(counter[0])
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    yield defer.gatherResults([writer() for _ in range(writers)],
                              consumeErrors=True)
    return summary(latencies, time.perf_counter() - started,
                   time.process_time() - cpu)


def record_bytes(n):
    return encode_payload(typical_record(n))


@defer.inlineCallbacks
def run_twisted(reactor, endpoint, writers, seconds, run):
    client = EtcdClient([endpoint], reactor, timeout=10)

    def put(n):
        return client.put("/bench/%s/twisted/%d/%010d" % (run, writers, n),
                          record_bytes(n))
    result = yield drive(writers, seconds, put)
    yield client.close()
    return result


@defer.inlineCallbacks
def run_etcd3gw(reactor, endpoint, writers, seconds, run):
    import etcd3gw
    host, port = endpoint.rsplit("/", 1)[-1].rsplit(":", 1)
    local = threading.local()
    made = []

    def put(n):
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = etcd3gw.client(
                host=host, port=int(port), timeout=10, api_path="/v3/")
            made.append(client)
        client.put("/bench/%s/etcd3gw/%d/%010d" % (run, writers, n),
                   record_bytes(n))

    pool = ThreadPool(minthreads=writers, maxthreads=writers,
                      name="etcd3gw-bench")
    pool.start()
    try:
        result = yield drive(
            writers, seconds,
            lambda n: threads.deferToThreadPool(reactor, pool, put, n))
    finally:
        pool.stop()
        for client in made:
            client.session.close()
    return result


@defer.inlineCallbacks
def run_redolog(reactor, base, writers, seconds, run):
    directory = tempfile.mkdtemp(prefix="redo-", dir=base)
    log = RedoLog(directory, reactor=reactor, group_commit=True)

    def write(n):
        log.append(typical_record(n))
        return log.wait_durable(n)
    # Generations must be appended in order: drive() numbers them so.
    result = yield drive(writers, seconds, write)
    yield log.close()
    shutil.rmtree(directory)
    return result


def have_etcd3gw():
    try:
        import etcd3gw  # noqa: F401
        return True
    except ImportError:
        return False


@defer.inlineCallbacks
def main(reactor, args):
    say = (lambda text: None) if args.json else print
    if not have_etcd():
        raise SystemExit("etcd is not installed")
    base = tempfile.mkdtemp(prefix="bench-etcd-", dir=args.dir)
    cluster = EtcdCluster(os.path.join(base, "etcd"), size=3, token="bench")
    rows = []
    try:
        yield threads.deferToThread(cluster.start)
        endpoint = cluster.endpoints[0]
        say("%7s | %-8s %10s %9s %9s %9s" % (
            "writers", "client", "writes/s", "p50 ms", "p99 ms", "cpu us"))
        kinds = [("redolog", lambda w, s, r: run_redolog(reactor, base, w, s,
                                                         r)),
                 ("twisted", lambda w, s, r: run_twisted(reactor, endpoint,
                                                         w, s, r))]
        if have_etcd3gw():
            kinds.append(("etcd3gw", lambda w, s, r: run_etcd3gw(
                reactor, endpoint, w, s, r)))
        for writers in WRITERS:
            row = {"writers": writers}
            for name, run in kinds:
                figures = yield run(writers, args.seconds, "r%d" % writers)
                row[name] = figures
                say("%7d | %-8s %10.0f %9.2f %9.2f %9.0f"
                    % (writers, name, figures["per_s"], figures["p50_ms"],
                       figures["p99_ms"], figures["client_cpu_us"]))
            rows.append(row)
    finally:
        yield threads.deferToThread(cluster.stop)
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps({"rows": rows, "etcd3gw": have_etcd3gw()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip()
                                     .splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default=None,
                        help="where the etcd data dirs and the redo log go")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON line")
    task.react(main, [parser.parse_args()])

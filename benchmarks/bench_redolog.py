"""
Durable write throughput of the redo log: group commit vs one fsync per
record, with 1, 10 and 100 concurrent writers.  Each writer appends a record,
waits for wait_durable, then appends its next one, like an API call that
must not answer before its change is on disk.

    python3 benchmarks/bench_redolog.py [--seconds S] [--dir DIR] [--json]

Run it on the disk the pool database will live on (--dir): on tmpfs the
fsyncs cost nothing and the comparison is meaningless.
Also prints the codec's per-record cost for orjson and the stdlib fallback.
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

from twisted.internet import defer, task  # noqa: E402

from txxapi.db import redolog  # noqa: E402
from txxapi.db.redolog import RedoLog  # noqa: E402
from txxapi.values import DateTime, Int32  # noqa: E402

WRITERS = (1, 10, 100)


def typical_record(gen, dated=True):
    fields = {
        "name_label": "vm-%d" % gen,
        "power_state": "Running",
        "memory_dynamic_max": 4 << 30,
        "VCPUs_max": 4,
        "other_config": {"folder": "/prod", "owner": "ops"},
        "tags": ["web", "eu"],
    }
    if dated:
        fields["last_updated"] = DateTime.from_timestamp(1700000000 + gen)
        fields["domid"] = Int32(gen % 1000)
    return (gen, "mod", "VM", "OpaqueRef:%08d" % (gen % 5000), fields)


@defer.inlineCallbacks
def run_one(reactor, base, writers, group_commit, seconds):
    directory = tempfile.mkdtemp(prefix="bench-redolog-", dir=base)
    log = RedoLog(directory, reactor=reactor, group_commit=group_commit)
    state = {"gen": 0, "done": 0}
    deadline = time.perf_counter() + seconds

    @defer.inlineCallbacks
    def writer():
        while time.perf_counter() < deadline:
            state["gen"] += 1
            g = state["gen"]
            log.append(typical_record(g))
            yield log.wait_durable(g)
            state["done"] += 1

    start = time.perf_counter()
    yield defer.gatherResults([writer() for _ in range(writers)])
    elapsed = time.perf_counter() - start
    yield log.close()
    shutil.rmtree(directory)
    return state["done"] / elapsed, dict(log.stats)


def codec_costs(n=20000):
    """Microseconds per record to encode+frame and to decode."""
    rows = []
    recs = {"plain": [typical_record(g, dated=False) for g in range(n)],
            "DateTime/Int32": [typical_record(g) for g in range(n)]}
    coders = [("stdlib json", redolog.encode_payload_stdlib, json.loads)]
    if redolog.encode_payload_orjson is not None:
        import orjson
        coders.insert(0, ("orjson", redolog.encode_payload_orjson,
                          orjson.loads))
    for cname, encode, loads in coders:
        for kind, rs in recs.items():
            t = time.perf_counter()
            payloads = [encode(r) for r in rs]
            enc = (time.perf_counter() - t) / n * 1e6
            t = time.perf_counter()
            for p in payloads:
                redolog.decode_payload(p, loads=loads)
            dec = (time.perf_counter() - t) / n * 1e6
            size = sum(map(len, payloads)) / n
            rows.append((cname, kind, enc, dec, size))
    return rows


@defer.inlineCallbacks
def main(reactor, args):
    say = (lambda text: None) if args.json else print
    figures = {"codec": [], "durable": []}
    say("codec, per record:")
    say("  %-12s %-15s %9s %9s %7s" % ("backend", "record", "encode",
                                       "decode", "bytes"))
    for cname, kind, enc, dec, size in codec_costs():
        figures["codec"].append({"backend": cname, "record": kind,
                                 "encode_us": enc, "decode_us": dec,
                                 "bytes": size})
        say("  %-12s %-15s %7.2fus %7.2fus %7.0f"
            % (cname, kind, enc, dec, size))
    say("")
    say("durable writes/second (%.1f s per run):" % args.seconds)
    say("  %7s | %14s %9s | %14s | %6s"
        % ("writers", "group commit", "rec/sync", "fsync/record", "ratio"))
    for n in WRITERS:
        gc_rate, gc_stats = yield run_one(reactor, args.dir, n, True,
                                          args.seconds)
        one_rate, _ = yield run_one(reactor, args.dir, n, False,
                                    args.seconds)
        per_sync = gc_stats["records"] / max(gc_stats["fsyncs"], 1)
        figures["durable"].append({
            "writers": n, "group_commit_per_s": gc_rate,
            "records_per_fsync": per_sync, "fsync_per_record_per_s":
            one_rate})
        say("  %7d | %14.0f %9.1f | %14.0f | %5.1fx"
            % (n, gc_rate, per_sync, one_rate, gc_rate / one_rate))
    if args.json:
        print(json.dumps(figures))


def scratch_parser(doc):
    """Arguments of a benchmark script that writes in a scratch directory
    and can print its figures as JSON (for benchmarks/run.py)."""
    parser = argparse.ArgumentParser(description=doc.strip()
                                     .splitlines()[0])
    parser.add_argument("--dir", default=None,
                        help="where to create the scratch files "
                             "(default: the system temp directory)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON line")
    return parser


if __name__ == "__main__":
    parser = scratch_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    task.react(main, [parser.parse_args()])

"""
Restart time against redo log size: loading state.db and replaying the log
written since, for logs of a few sizes on the same database.

    python3 benchmarks/bench_restart.py [--objects N] [--sizes 16,64,256]
                                        [--dir DIR] [--json]

For each log size (MB of change records, VM updates of about 4 KB, as a
process killed before its next snapshot leaves them; fewer than the
100,000 records that are the count bound): the first restart
(load + replay; it snapshots at once if the log is past the size bound),
the restart after that one, and the same second restart with the record
count as the only bound (what the server did before the size bound).  The
baseline is a restart from a fresh snapshot of the same state, no log.
"""

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from twisted.internet import defer, task  # noqa: E402

from benchmarks.bench_redolog import scratch_parser  # noqa: E402
from benchmarks.bench_statedb import populate  # noqa: E402
from txxapi.datamodel import MODEL  # noqa: E402
from txxapi.db import redolog, statedb  # noqa: E402
from txxapi.db.memory import Database  # noqa: E402
from txxapi.db.persist import SNAPSHOT_LOG_BYTES, Persistence  # noqa: E402

NO_SIZE_BOUND = 1 << 62


def make_snapshot(directory, objects):
    db = Database(MODEL)
    populate(db, objects)
    os.makedirs(directory, mode=0o700)
    statedb.write(statedb.capture(db), os.path.join(directory, "state.db"))
    return db.generation, db.refs("VM")


def write_log(directory, generation, vms, megabytes):
    """Frames of VM updates after ``generation`` until the log holds
    ``megabytes``, in one segment, as the writer lays them out."""
    target = megabytes * 1e6
    path = os.path.join(directory, redolog.segment_name(generation + 1))
    size = 0
    with open(path, "wb", buffering=1 << 20) as f:
        while size < target:
            generation += 1
            vm = vms[generation % len(vms)]
            frame = redolog.encode_record((generation, "mod", "VM", vm, {
                "name_label": "vm renamed %d" % generation,
                "other_config": {"note-%d" % i: "x" * 60
                                 for i in range(60)}}))
            f.write(frame)
            size += len(frame)
    os.chmod(path, redolog.FILE_MODE)
    return size


@defer.inlineCallbacks
def restart(reactor, directory, snapshot_log_bytes=SNAPSHOT_LOG_BYTES,
            force_snapshot=False):
    """Seconds to open the database; then stop as kill -9 would (after
    a snapshot the start began, or one forced).  Returns (seconds,
    whether the start snapshotted)."""
    p = Persistence(directory, reactor,
                    snapshot_log_bytes=snapshot_log_bytes)
    started = time.perf_counter()
    yield p.open(Database(MODEL))
    seconds = time.perf_counter() - started
    snapshotted = p._snapshotting is not None
    if snapshotted or force_snapshot:
        yield p.snapshot()
    p._timer.stop()
    yield p.log.close()
    return seconds, snapshotted


@defer.inlineCallbacks
def one_size(reactor, base, template, generation, vms, mb):
    """Figures for one log size, both policies side by side."""
    row = {"log_mb": mb}
    for policy, bound in (("size", SNAPSHOT_LOG_BYTES),
                          ("records", NO_SIZE_BOUND)):
        directory = os.path.join(base, "%s-%d" % (policy, mb))
        shutil.copytree(template, directory)
        written = write_log(directory, generation, vms, mb)
        first, snapshotted = yield restart(reactor, directory, bound)
        left = redolog.log_bytes(directory)
        second, _ = yield restart(reactor, directory, bound)
        row[policy] = {"first_s": first, "second_s": second,
                       "snapshotted": snapshotted, "log_mb": written / 1e6,
                       "log_left_mb": left / 1e6}
        if policy == "size":
            # The baseline: the same state from a fresh snapshot.
            yield restart(reactor, directory, bound, force_snapshot=True)
            row["fresh_s"], _ = yield restart(reactor, directory, bound)
        shutil.rmtree(directory)
    return row


@defer.inlineCallbacks
def main(reactor, args):
    base = tempfile.mkdtemp(prefix="bench-restart-", dir=args.dir)
    say = (lambda text: None) if args.json else print
    try:
        template = os.path.join(base, "template")
        generation, vms = make_snapshot(template, args.objects)
        figures = {"objects": args.objects, "bound_mib":
                   SNAPSHOT_LOG_BYTES / (1 << 20), "logs": []}
        for mb in (int(x) for x in args.sizes.split(",")):
            row = yield one_size(reactor, base, template, generation, vms,
                                 mb)
            figures["logs"].append(row)
            new, old = row["size"], row["records"]
            say("%4d MB log, %d objects: fresh snapshot %.3f s; replaying "
                "the log %.2f s, the next restart %.3f s (log left %.1f MB)"
                "; records bound only: next %.2f s"
                % (mb, args.objects, row["fresh_s"], new["first_s"],
                   new["second_s"], new["log_left_mb"], old["second_s"]))
        if args.json:
            print(json.dumps(figures))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = scratch_parser(__doc__)
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--sizes", default="16,64,256",
                        help="log sizes in MB, comma-separated")
    task.react(main, [parser.parse_args()])

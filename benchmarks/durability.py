"""
Item 6: durability cost, acknowledged writes per second with group commit
against one fsync per write, 1, 10 and 100 writers
(benchmarks/bench_redolog.py); and the state.db snapshot's capture, write
and load times (benchmarks/bench_statedb.py).  Both write in the run's
scratch directory: on tmpfs fsync costs nothing and the ratio means little.
"""

import json
import subprocess
import sys

from benchmarks import common

ITEM = "durability"


def script(name, *args):
    out = subprocess.run(
        [sys.executable, "benchmarks/" + name, "--json"] + list(args),
        cwd=common.REPO, env=common.python_env(), capture_output=True,
        text=True, timeout=900)
    if out.returncode:
        raise RuntimeError("%s: %s" % (name, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(ctx):
    seconds = 0.5 if ctx.quick else 2.0
    redo = script("bench_redolog.py", "--seconds", str(seconds),
                  "--dir", ctx.base)
    for row in redo["durable"]:
        head = "%d writer%s: " % (row["writers"], "s"[:row["writers"] > 1])
        ctx.results.add(ITEM, head + "durable writes, group commit",
                        row["group_commit_per_s"], "/s",
                        row["fsync_per_record_per_s"], "fsync per write")
        ctx.results.add(ITEM, head + "records per fsync, group commit",
                        row["records_per_fsync"], "")
        ctx.results.point("Durability: acknowledged writes/s",
                          "group commit", row["writers"],
                          row["group_commit_per_s"])
        ctx.results.point("Durability: acknowledged writes/s",
                          "fsync per write", row["writers"],
                          row["fsync_per_record_per_s"])
    for row in redo["codec"]:
        if row["backend"] == "orjson" or len(redo["codec"]) == 2:
            ctx.results.add(ITEM, "redo record encode (%s, %s)"
                            % (row["backend"], row["record"]),
                            row["encode_us"], "us")
    sizes = "10000" if ctx.quick else "10000,100000"
    snaps = script("bench_statedb.py", "--sizes", sizes, "--dir", ctx.base)
    small = snaps[0]
    for row in snaps:
        head = "state.db, %s objects: " % "{:,}".format(row["objects"])
        for key, label in (("capture_s", "capture (reactor thread)"),
                           ("write_s", "write (worker thread, fsync)"),
                           ("load_s", "load")):
            ratio = None
            if row is not small:
                ratio = (row[key] / row["objects"]) / \
                    (small[key] / small["objects"])
            ctx.results.add(
                ITEM, head + label, row[key], "s", ratio=ratio,
                baseline_name="linear from %s" % "{:,}".format(
                    small["objects"]) if ratio is not None else None)

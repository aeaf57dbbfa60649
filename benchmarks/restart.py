"""
Item 7: restart time against redo log size, the database loaded from
state.db and the log replayed (benchmarks/bench_restart.py): a restart
replaying a log of each size, the restart after it (the size bound made
the first one snapshot), and the same with the record count as the only
bound, as before; each against a restart from a fresh snapshot of the
same state, measured side by side.
"""

from benchmarks.durability import script

ITEM = "restart"


def run(ctx):
    objects, sizes = (3000, "16,64") if ctx.quick else (10000, "16,64,256")
    figures = script("bench_restart.py", "--objects", str(objects),
                     "--sizes", sizes, "--dir", ctx.base)
    for row in figures["logs"]:
        fresh = row["fresh_s"]
        base = "fresh snapshot, same state"
        head = "%d MB log, %s objects: " % (row["log_mb"],
                                            "{:,}".format(objects))
        new, old = row["size"], row["records"]
        ctx.results.add(ITEM, head + "restart replaying it", new["first_s"],
                        "s", fresh, base)
        ctx.results.add(ITEM, head + "the restart after (size bound)",
                        new["second_s"], "s", fresh, base)
        ctx.results.add(ITEM, head + "the restart after (records bound "
                        "only)", old["second_s"], "s", fresh, base)
        ctx.results.add(ITEM, head + "log left after the first restart",
                        new["log_left_mb"], "MB", note="size bound %g MiB"
                        % figures["bound_mib"])
        ctx.results.point("Restart time against redo log size",
                          "replaying the log", row["log_mb"], new["first_s"])
        ctx.results.point("Restart time against redo log size",
                          "the restart after, size bound", row["log_mb"],
                          new["second_s"])
        ctx.results.point("Restart time against redo log size",
                          "the restart after, records bound only",
                          row["log_mb"], old["second_s"])

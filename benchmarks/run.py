"""
python -m benchmarks [--quick|--smoke] [--only ITEM,...] [--seconds S]
                     [--clients P] [--out DIR] [--keep]

Runs the benchmark items against real servers on loopback, prints one
table (figure, value, unit, ratio to the baseline measured in the same
run), and writes it as JSON plus a PNG chart of the sweeps to
benchmarks/results/.  --quick is a pass of about a minute; the full run
takes a quarter of an hour or more.  --smoke (for the test suite) runs an
item at its smallest, to show the harness still works end to end; its
figures mean nothing.  Absolute figures drift on a shared
machine: compare the ratios.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

from benchmarks import common

ITEMS = ("api", "scale", "events", "records", "lifecycle", "datapath", "xva", "xva_rss",
         "nbd",
         "durability", "restart", "etcdlog", "rbac", "adlogin", "metrics",
         "pool")


class Context:
    def __init__(self, args, base):
        # A smoke run is a quick one, smaller still where an item says so.
        self.smoke = args.smoke
        self.quick = args.quick or args.smoke
        self.seconds = args.seconds
        self.client_processes = args.clients
        self.profile = args.profile
        self.base = base
        self.results = common.Results()
        self._template = None

    def template(self):
        """A bootstrapped data dir, made once per run."""
        if self._template is None:
            self._template = common.bootstrap_data_dir(self.base, "template")
        return self._template


def run_item(name, ctx):
    import importlib
    module = importlib.import_module("benchmarks." + name)
    started = time.monotonic()
    print("== %s: %s" % (name, module.__doc__.strip().splitlines()[0]),
          flush=True)
    try:
        module.run(ctx)
    except Exception as e:
        traceback.print_exc()
        ctx.results.add(name, "%s: failed" % name, None, "",
                        note="%s: %s" % (type(e).__name__, e))
    print("   (%s took %.0f s)" % (name, time.monotonic() - started),
          flush=True)


def print_table(rows):
    print()
    print("%-66s %14s %-6s %7s  %s" % ("figure", "value", "unit", "ratio",
                                       "baseline"))
    print("-" * 110)
    item = None
    for row in rows:
        if row["item"] != item:
            item = row["item"]
            print("[%s]" % item)
        common.print_row(row)


def write_outputs(ctx, args, out_dir, elapsed):
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    doc = {"started": stamp, "quick": args.quick, "smoke": args.smoke, "seconds": args.seconds,
           "items": args.only or list(ITEMS), "elapsed_s": elapsed,
           "machine": {"cpus": os.cpu_count(), "python":
                       platform.python_version(),
                       "platform": platform.platform()},
           "rows": ctx.results.rows,
           "sweeps": {k: {s: pts for s, pts in v.items()}
                      for k, v in ctx.results.sweeps.items()}}
    json_path = os.path.join(out_dir, stamp + ".json")
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1)
    print("\ntable: %s" % json_path)
    if ctx.results.sweeps:
        from benchmarks.chart import draw
        png = draw(ctx.results.sweeps, os.path.join(out_dir, stamp + ".png"))
        if png:
            print("chart: %s" % png)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="txxapi benchmarks, each against a baseline measured "
                    "in the same run")
    p.add_argument("--quick", action="store_true",
                   help="a pass of about a minute (smaller sizes, shorter "
                        "runs)")
    p.add_argument("--smoke", action="store_true",
                   help="each item at its smallest, to check the harness "
                        "(figures meaningless)")
    p.add_argument("--only", default="",
                   help="comma-separated items: " + ", ".join(ITEMS))
    p.add_argument("--seconds", type=float, default=4.0,
                   help="measuring time of each load point (full run)")
    p.add_argument("--clients", type=int, default=2,
                   help="client processes driving the API load")
    p.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results"),
        help="where the JSON table and the chart go")
    p.add_argument("--profile", metavar="DIR",
                   help="record the txxapi server with py-spy during the API "
                        "item (a speedscope file in DIR)")
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch directory (data dirs, logs)")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in ITEMS]
    if unknown:
        p.error("unknown items %s (known: %s)" % (", ".join(unknown),
                                                  ", ".join(ITEMS)))
    args.only = only
    common.raise_fd_limit()
    base = tempfile.mkdtemp(prefix="txxapi-bench-")
    ctx = Context(args, base)
    started = time.monotonic()
    try:
        for name in ITEMS:
            if not only or name in only:
                run_item(name, ctx)
    finally:
        if args.keep:
            print("scratch kept in %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    elapsed = time.monotonic() - started
    print_table(ctx.results.rows)
    print("(%.0f s in all)" % elapsed)
    write_outputs(ctx, args, args.out, elapsed)
    failed = [r for r in ctx.results.rows if r["figure"].endswith(": failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

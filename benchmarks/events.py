"""
Item 3: event fan-out, 1,000 event.from watchers blocked on one server,
then a write: latency until every watcher has its answer, and the
server's RSS with them connected (benchmarks/bench_events.py).  The
baseline is the same measurement with a single watcher.
"""

import json
import subprocess
import sys

from benchmarks import common

ITEM = "events"


def measure(watchers, rounds, settle):
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_events.py", "--json",
         "--watchers", str(watchers), "--rounds", str(rounds),
         "--settle", str(settle)],
        cwd=common.REPO, env=common.python_env(), capture_output=True,
        text=True, timeout=900)
    if out.returncode:
        raise RuntimeError("bench_events.py: %s" % out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(ctx):
    watchers = 100 if ctx.quick else 1000
    rounds = 2 if ctx.quick else 5
    settle = 0.5 if ctx.quick else 2.0
    one = measure(1, rounds, settle)
    many = measure(watchers, rounds, settle)
    head = "%s watchers: " % "{:,}".format(watchers)
    base = "1 watcher"
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"),
                       ("max_ms", "max")):
        ctx.results.add(ITEM, head + "write to every reply, " + label,
                        many[key], "ms", one[key], base)
    ctx.results.add(ITEM, head + "connect and subscribe", many["connect_s"],
                    "s")
    ctx.results.add(ITEM, head + "server RSS, watchers blocked",
                    many["rss_blocked_mib"], "MiB", many["rss_idle_mib"],
                    "idle server")
    ctx.results.add(ITEM, head + "server RSS per blocked watcher",
                    (many["rss_blocked_mib"] - many["rss_idle_mib"])
                    * 1024 / watchers, "KiB")

"""
Item 3: event fan-out and a watcher on "*".  Blocked event.from watchers
(1,000 and 10,000 in the full run; 1,000 in --quick) on one server, then a
write: latency until every watcher has its answer, at the watcher's socket
(the kernel's receive time: what the server delivered) and as read by the
watcher, with the server's CPU per watcher woken and its RSS with them
blocked (benchmarks/bench_events.py).  The baseline is the same
measurement with a single watcher.  Then one watcher on "*" while 4,096
VMs change at 100 writes/s (benchmarks/bench_event_star.py): every write
seen, its lag, and the server's RSS in the second half of the run against
the first.
"""

import json
import subprocess
import sys

from benchmarks import common

ITEM = "events"
STAR_VMS = 4096
STAR_RATE = 100


def measure(script, *args):
    out = subprocess.run(
        [sys.executable, "benchmarks/" + script, "--json"]
        + [str(a) for a in args],
        cwd=common.REPO, env=common.python_env(), capture_output=True,
        text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError("%s: %s" % (script, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def fan_out(ctx, one, watchers, rounds, settle):
    many = measure("bench_events.py", "--watchers", watchers,
                   "--rounds", rounds, "--settle", settle)
    head = "%s watchers: " % "{:,}".format(watchers)
    base = "1 watcher"
    goal = 100.0 if watchers <= 1000 else 500.0
    for prefix, label in (("socket_", "write to every reply at its socket"),
                          ("", "write to every reply read")):
        for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"),
                          ("max_ms", "max")):
            ctx.results.add(ITEM, "%s%s, %s" % (head, label, name),
                            many[prefix + key], "ms", one[prefix + key], base,
                            note="goal p99 <= %d ms" % goal
                            if key == "p99_ms" and prefix else "")
    ctx.results.add(ITEM, head + "server CPU per watcher woken",
                    many["wake_cpu_us"], "us",
                    note="load average %.1f" % many["load_average"])
    ctx.results.add(ITEM, head + "connect and subscribe", many["connect_s"],
                    "s")
    ctx.results.add(ITEM, head + "server RSS, watchers blocked",
                    many["rss_blocked_mib"], "MiB", many["rss_idle_mib"],
                    "idle server")
    ctx.results.add(ITEM, head + "server RSS per blocked watcher",
                    (many["rss_blocked_mib"] - many["rss_idle_mib"])
                    * 1024 / watchers, "KiB", 10.0, "the issue's 10 KiB")


def star(ctx):
    seconds = 8 if ctx.quick else 30
    f = measure("bench_event_star.py", "--vms", STAR_VMS, "--rate",
                STAR_RATE, "--seconds", seconds)
    head = "'*' watcher, %s VMs at %d writes/s: " % (
        "{:,}".format(STAR_VMS), STAR_RATE)
    ctx.results.add(ITEM, head + "writes made", f["write_rate"], "/s",
                    STAR_RATE, "rate asked", note="for %d s" % seconds)
    ctx.results.add(ITEM, head + "writes seen", f["seen"], "", f["writes"],
                    "writes made")
    for key, name in (("lag_p50_ms", "p50"), ("lag_p99_ms", "p99"),
                      ("lag_max_ms", "max")):
        ctx.results.add(ITEM, head + "write to its event, " + name, f[key],
                        "ms")
    ctx.results.add(ITEM, head + "server CPU per write",
                    f["server_cpu_per_write_ms"], "ms")
    ctx.results.add(ITEM, head + "server RSS, 2nd half",
                    f["rss_second_half_mib"], "MiB", f["rss_first_half_mib"],
                    "first half")
    ctx.results.add(ITEM, head + "server RSS, most", f["rss_max_mib"], "MiB",
                    f["rss_idle_mib"], "before the writes")


def run(ctx):
    rounds = 2 if ctx.quick else 5
    settle = 0.5 if ctx.quick else 2.0
    one = measure("bench_events.py", "--watchers", 1, "--rounds", rounds,
                  "--settle", settle)
    fan_out(ctx, one, 1000, rounds, settle)
    if not ctx.quick:
        fan_out(ctx, one, 10000, 3, 3.0)
    star(ctx)

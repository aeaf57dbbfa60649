"""
python -m benchmarks.hotpath [--method VM.get_record] [--scheme http]
                             [--connections 100] [--seconds 10] [--top 25]

Where the server's time for one call goes: a server with the API item's
1,000 VMs is loaded by wrk with one call while py-spy samples it, and
the samples of the reactor thread (the one that serves every call; the
other threads only wait) are sorted into the steps of a call, innermost
frame first: HTTP, TLS, XML decode and encode, dispatch checks, record
building, Deferreds, socket writes, the reactor's own loop.  Printed as
microseconds per request (busy samples over requests answered), with the
functions that cost most by their own time.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import tempfile

from benchmarks import api, common

# (step, predicate on (file, function)), the first that matches the
# innermost frame of a sample wins, walking outwards.
STEPS = [
    ("XML decode", lambda f, n: f.endswith("wire/xmlrpc.py") and (
        "decode" in n or n in ("_parse", "_value", "_struct", "_array",
                               "_member", "_scalar", "_unescape"))),
    ("XML encode", lambda f, n: f.endswith("wire/xmlrpc.py")),
    ("JSON codec", lambda f, n: f.endswith("wire/jsonrpc.py")
     or "orjson" in f),
    ("wire (shared)", lambda f, n: "/wire/" in f),
    ("record building (db)", lambda f, n: "txxapi/db/" in f),
    ("implementation", lambda f, n: "txxapi/impl/" in f),
    ("dispatch checks", lambda f, n: "txxapi/api/" in f
     or "txxapi/datamodel/" in f),
    ("redo log", lambda f, n: "redolog" in f or "persistence" in f),
    ("events", lambda f, n: "txxapi/events" in f),
    ("TLS", lambda f, n: "OpenSSL" in f or "protocols/tls.py" in f
     or "txxapi/tls.py" in f),
    ("HTTP (txxapi)", lambda f, n: "txxapi/http/" in f),
    ("HTTP (twisted.web)", lambda f, n: "twisted/web/" in f
     or "protocols/basic.py" in f or "protocols/policies.py" in f),
    ("Deferreds", lambda f, n: "internet/defer.py" in f),
    ("socket I/O", lambda f, n: n in ("untilConcludes", "writeSomeData",
                                     "doRead", "_dataReceived", "doWrite")
     or "internet/abstract.py" in f),
    ("logging", lambda f, n: "logger/" in f or "python/log.py" in f),
    ("reactor loop", lambda f, n: "twisted/internet/" in f
     or "twisted/python/" in f),
]
IDLE = ("select", "poll", "doPoll")


def step_of(stack):
    for path, name in reversed(stack):
        name = name.rsplit(".", 1)[-1]
        for step, match in STEPS:
            if match(path, name):
                return step
    return "other"


def reactor_samples(doc):
    """(stack of (file, function)) of every sample on the reactor thread
    that is not waiting in epoll, with its weight in seconds."""
    frames = [(f.get("file", ""), f["name"]) for f in doc["shared"]["frames"]]
    for profile in doc["profiles"]:
        for sample, weight in zip(profile["samples"], profile["weights"]):
            stack = [frames[i] for i in sample]
            if not any(n.endswith("mainLoop") for _, n in stack):
                continue
            path, name = stack[-1]
            if name.rsplit(".", 1)[-1] in IDLE and (
                    "selectors" in path or "epollreactor" in path):
                continue
            yield stack, weight


def analyse(path, requests, cpu, top, within=None):
    with open(path) as f:
        doc = json.load(f)
    steps, own = collections.Counter(), collections.Counter()
    busy = 0.0
    for stack, weight in reactor_samples(doc):
        if within and not any(n.endswith(within) for _, n in stack):
            continue
        busy += weight
        steps[step_of(stack)] += weight
        file_, name = stack[-1]
        own["%s (%s)" % (name, file_.split("site-packages/")[-1]
                         .split(common.REPO + "/")[-1])] += weight
    if cpu is None:
        # Shares only: a recording made elsewhere (bench_events --profile).
        per = 100.0 / max(busy, 1e-9)
        print("%d reactor samples; the figures marked us are shares in %% "
              "of the busy time" % round(busy * 250))
    else:
        # py-spy drops samples under load: the samples give the shares,
        # the process's CPU time the total.
        per = 1e6 * cpu / max(1, requests) / max(busy, 1e-9)
        print("server CPU %.2f s for %d requests: %.0f us a request "
              "(%d reactor samples)" % (cpu, requests, busy * per,
                                        round(busy * 250)))
    for step, s in steps.most_common():
        print("  %-22s %6.1f us  %5.1f%%" % (step, s * per,
                                             100 * s / busy))
    print("functions by own time:")
    for name, s in own.most_common(top):
        print("  %6.1f us  %s" % (s * per, name))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.hotpath",
                                description=__doc__.split("\n\n")[1])
    p.add_argument("--method", default="VM.get_record",
                   choices=[m for m, _ in api.calls("s", "v")])
    p.add_argument("--scheme", default="http", choices=("http", "https"))
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--server-args", default="",
                   help="extra twistd xapi options, space-separated")
    p.add_argument("--analyse", metavar="FILE",
                   help="only sort an existing py-spy speedscope file "
                        "into the steps (shares, no per-request figure)")
    p.add_argument("--within", metavar="FUNCTION",
                   help="with --analyse: only the samples under this "
                        "function (e.g. EventHub._flush)")
    args = p.parse_args(argv)
    if args.analyse:
        analyse(args.analyse, 0, None, args.top, args.within)
        return
    common.raise_fd_limit()
    base = tempfile.mkdtemp(prefix="txxapi-hotpath-")
    data = os.path.join(base, "data")
    common.populated_data_dir(common.bootstrap_data_dir(base, "template"),
                            data, api.VMS)
    server = common.LoadServer(data, extra_args=args.server_args.split())
    server.start()
    try:
        session = common.login(server.https_url)
        vm = next(iter(common.jsonrpc(
            server.https_url, "VM.get_all_records_where",
            [session, 'field "is_control_domain" = "false"'])[0]))
        chosen = [c for c in api.calls(session, vm) if c[0] == args.method]
        bodies, _ = api.capture(base, server.https_url, chosen)
        url = getattr(server, args.scheme + "_url")
        api.wrk(url, bodies[args.method], args.connections, 1)   # warm up
        out = os.path.join(base, "profile.json")
        spy = subprocess.Popen(
            ["py-spy", "record", "-p", str(server.proc.pid), "-o", out,
             "-f", "speedscope", "-r", "250", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu = common.cpu_seconds(server.proc.pid)
        figures = api.wrk(url, bodies[args.method], args.connections,
                          args.seconds)
        cpu = common.cpu_seconds(server.proc.pid) - cpu
        api._Spy(spy).stop()
    finally:
        server.stop()
    requests = int(figures["rps"] * round(args.seconds))
    api.say("txxapi", args.scheme, args.method, args.connections, figures)
    analyse(out, requests, cpu, args.top)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

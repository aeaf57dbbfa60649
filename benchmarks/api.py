"""
Item 1: API calls over HTTPS keep-alive with 1 to 1,000 concurrent
clients: txxapi against the wire's ceiling (a minimal Twisted resource
answering the same bytes) and against Python's thread-per-connection
xmlrpc.server answering the same values.  The clients are separate
processes (benchmarks.loadgen), the same for all three servers.
"""

import json
import os
import signal
import subprocess

from benchmarks import common

ITEM = "api"
VMS = 1000
WHERE = 'field "is_control_domain" = "true"'
CEILING = "twisted minimal"
STDLIB = "stdlib xmlrpc"


def calls(session, vm):
    return [("VM.get_record", [session, vm]),
            ("host.get_all_records", [session]),
            ("VM.get_all_records_where", [session, WHERE])]


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1,
            int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[i]


def load(port, body_file, connections, seconds, processes):
    """Run the clients against a port; merged figures of all processes."""
    procs = min(processes, connections)
    shares = [connections // procs + (1 if i < connections % procs else 0)
              for i in range(procs)]
    clients = [subprocess.Popen(
        common.module_cmd("benchmarks.loadgen", "--port", port, "--tls",
                          "--connections", n, "--seconds", seconds,
                          "--body-file", body_file),
        cwd=common.REPO, env=common.python_env(), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True) for n in shares]
    try:
        for c in clients:
            line = c.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError("load client: %s" % (line.strip()
                                                         or "exited"))
        for c in clients:
            c.stdin.write("go\n")
            c.stdin.flush()
        outs = [json.loads(c.stdout.readline()) for c in clients]
    finally:
        for c in clients:
            try:
                c.wait(30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    for o in outs:
        if "failed" in o:
            raise RuntimeError("load client: %s" % o["failed"])
    lat = sorted(x for o in outs for x in o["latencies_us"])
    seconds_ = max(o["seconds"] for o in outs)
    return {"rps": sum(o["requests"] for o in outs) / seconds_,
            "p50_ms": percentile(lat, 50) / 1e3 if lat else None,
            "p99_ms": percentile(lat, 99) / 1e3 if lat else None,
            "errors": sum(o["errors"] for o in outs),
            "client_cpu": sum(o["cpu"] for o in outs) / seconds_,
            "client_procs": procs}


class Baseline:
    """One of the baseline servers, as a process."""

    def __init__(self, kind, cert, key, responses):
        self.kind = kind
        self.port = common.free_port()
        self.proc = subprocess.Popen(
            common.module_cmd("benchmarks.baselines", kind,
                              "--port", self.port, "--cert", cert,
                              "--key", key, "--responses", responses),
            cwd=common.REPO, env=common.python_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self):
        line = self.proc.stdout.readline()
        if line.strip() != "listening":
            raise RuntimeError("baseline %s: %s" % (self.kind, line))
        return self

    def __exit__(self, *exc):
        common.stop_process(self.proc)


def run(ctx):
    results = ctx.results
    concurrency = (1, 100) if ctx.quick else (1, 10, 100, 1000)
    seconds = 1.0 if ctx.quick else ctx.seconds
    data = os.path.join(ctx.base, "api-data")
    common.populated_data_dir(ctx.template(), data, VMS)
    server = common.LoadServer(data)
    server.start()
    work = os.path.join(ctx.base, "api")
    os.makedirs(work, exist_ok=True)
    measured = {}   # (server kind, method, clients) -> figures
    try:
        url = server.https_url
        session = common.login(url)
        vm = next(r for r, v in common.jsonrpc(
            url, "VM.get_all_records_where",
            [session, 'field "is_control_domain" = "false"'])[0].items())
        chosen = calls(session, vm)
        if ctx.quick:
            chosen = chosen[:1]
        bodies, responses = {}, {}
        for method, params in chosen:
            bodies[method] = os.path.join(work, method + ".request")
            with open(bodies[method], "wb") as f:
                f.write(common.xmlrpc_body(method, params))
            responses[method] = os.path.join(work, method + ".response")
            with open(responses[method], "wb") as f:
                f.write(common.xmlrpc_raw(url, method, params))
        response_map = os.path.join(work, "responses.json")
        with open(response_map, "w") as f:
            json.dump(responses, f)
        cert = os.path.join(data, "xapi-ssl.pem")
        key = os.path.join(data, "xapi-ssl.key")

        def sweep(kind, port):
            for method, _ in chosen:
                for n in concurrency:
                    figures = load(port, bodies[method], n, seconds,
                                   ctx.client_processes)
                    measured[(kind, method, n)] = figures
                    results.point("API throughput: " + method, kind, n,
                                  figures["rps"])
                    print("  %-16s %-26s %5d clients: %8.0f req/s  "
                          "p50 %7.2f ms  p99 %7.2f ms  errors %d  "
                          "client CPU %.0f%% of %d process(es)"
                          % (kind, method, n, figures["rps"],
                             figures["p50_ms"] or 0, figures["p99_ms"] or 0,
                             figures["errors"], 100 * figures["client_cpu"],
                             figures["client_procs"]), flush=True)

        spy = profiler(ctx, server.proc.pid)
        try:
            sweep("txxapi", server.https_port)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes on SIGINT
                spy.wait(60)
        for kind, name in (("twisted", CEILING), ("stdlib", STDLIB)):
            with Baseline(kind, cert, key, response_map) as b:
                sweep(name, b.port)
        pid = server.proc.pid
        results.add(ITEM, "txxapi server RSS after the API runs",
                    common.rss_mib(pid), "MiB")
    finally:
        server.stop()
    report(results, measured, [m for m, _ in chosen], concurrency)


def profiler(ctx, pid):
    """py-spy recording the server, if --profile asked for it."""
    if not ctx.profile:
        return None
    os.makedirs(ctx.profile, exist_ok=True)
    out = os.path.join(ctx.profile, "api-txxapi.speedscope.json")
    print("  profiling the server into %s" % out)
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-o", out,
                             "-f", "speedscope", "-r", "200"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def report(results, measured, methods, concurrency):
    for method in methods:
        for n in concurrency:
            ceil = measured[(CEILING, method, n)]
            ours = measured[("txxapi", method, n)]
            std = measured[(STDLIB, method, n)]
            head = "%s, %d client%s: " % (method, n, "s"[:n > 1])
            results.add(ITEM, head + "throughput, txxapi", ours["rps"],
                        "req/s", ceil["rps"], CEILING,
                        note=_errors(ours))
            results.add(ITEM, head + "throughput, stdlib xmlrpc",
                        std["rps"], "req/s", ceil["rps"], CEILING,
                        note=_errors(std))
            results.add(ITEM, head + "throughput, ceiling", ceil["rps"],
                        "req/s", note=_errors(ceil))
            results.add(ITEM, head + "p50 latency, txxapi", ours["p50_ms"],
                        "ms", ceil["p50_ms"], CEILING)
            results.add(ITEM, head + "p99 latency, txxapi", ours["p99_ms"],
                        "ms", ceil["p99_ms"], CEILING)
            results.add(ITEM, head + "p99 latency, stdlib xmlrpc",
                        std["p99_ms"], "ms", ceil["p99_ms"], CEILING)


def _errors(figures):
    return "%d errors" % figures["errors"] if figures["errors"] else ""

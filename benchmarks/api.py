"""
Item 1: API calls over keep-alive HTTP and HTTPS with 1, 100 and 1,000
concurrent connections, load driven by wrk (a C load generator, through
benchmarks/post_body.lua posting the XML-RPC call with a real session).
Beside txxapi, in the same run and point by point: the ceiling, a raw
Twisted Protocol answering the same bytes; a minimal twisted.web resource
(the same with twisted.web's Request); Python's thread-per-connection
xmlrpc.server answering the same values (benchmarks/baselines.py).
And txxapi twice, on copies of one database: as it runs (RPC calls read
and answered by txxapi.http.rpc_channel) and with every request through
twisted.web (--rpc-http twisted-web), the before and after of that
channel side by side.

Why this item once disagreed with wrk: it drove the load with Python
clients (benchmarks.loadgen, asyncio) in two processes, on a two-core
machine the server shares.  Measured side by side (rows "Python client"),
the two clients give txxapi the same figure within the noise: txxapi is
the bottleneck either way.  They differ for the fast baselines: the
Python client costs 40-60 us of CPU per request on the cores the server
needs, so it caps the servers that answer in tens of microseconds and
makes their ratio to txxapi look smaller than it is.  The "1.0x against
a minimal Twisted resource" seen with wrk does not reproduce here: with
wrk the minimal twisted.web resource answers 2-3x what txxapi does, and
the raw Protocol 4-8x.  A client in C spends a small fraction of the
server's CPU per request, so every server is measured at its own limit.

wrk opens its connections when it starts, so at 1,000 connections the
figures include 1,000 connects (and handshakes, over HTTPS).
"""

import json
import os
import resource
import shutil
import subprocess

from benchmarks import common

ITEM = "api"
VMS = 1000
SMOKE_VMS = 10
CEILING = "raw twisted Protocol"
# txxapi itself with every request through twisted.web (--rpc-http
# twisted-web): what its own RPC channel is measured against.
OURS, OURS_WEB = "txxapi", "txxapi via twisted.web"
TWISTED_WEB = "twisted.web minimal"
STDLIB = "stdlib xmlrpc"
BASELINES = (("raw", CEILING), ("twisted", TWISTED_WEB), ("stdlib", STDLIB))
# wrk counts from its start: at 1,000 connections over TLS the handshakes
# alone can take two seconds of a shorter run.
MIN_SECONDS_AT_1000 = 5
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   "post_body.lua")


def calls(session, vm):
    """(method, [params of each request sent in turn]); the write
    alternates between two values so that each one changes the field."""
    return [("VM.get_record", [[session, vm]]),
            ("host.get_all_records", [[session]]),
            ("VM.set_name_description", [[session, vm, "benchmark VM a"],
                                         [session, vm, "benchmark VM b"]])]


def wrk(url, body_files, connections, seconds):
    """One wrk run; its figures (latencies in ms) and the CPU it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t", str(min(2, connections)), "-c", str(connections),
         "-d", "%ds" % max(1, round(seconds)), "--timeout", "10s",
         "-s", LUA, url + "/", "--", "text/xml"] + body_files,
        capture_output=True, text=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError("wrk: %s" % (out.stderr or out.stdout)[-2000:])
    w = json.loads(lines[-1])
    elapsed = w["duration_us"] / 1e6
    errors = sum(w[k] for k in ("connect_errors", "read_errors",
                                "write_errors", "status_errors", "timeouts"))
    return {"rps": w["requests"] / elapsed,
            "p50_ms": w["p50_us"] / 1e3, "p99_ms": w["p99_us"] / 1e3,
            "errors": errors,
            "client_cpu": (after.ru_utime - before.ru_utime
                           + after.ru_stime - before.ru_stime) / elapsed}


class Baseline:
    """One of the baseline servers, as a process with an HTTP and an
    HTTPS port."""

    def __init__(self, kind, cert, key, responses):
        self.kind = kind
        self.http_url = "http://127.0.0.1:%d" % common.free_port()
        self.https_port = common.free_port()
        self.https_url = "https://127.0.0.1:%d" % self.https_port
        self.proc = subprocess.Popen(
            common.module_cmd("benchmarks.baselines", kind,
                              "--port", self.http_url.rsplit(":", 1)[1],
                              "--tls-port", self.https_port,
                              "--cert", cert, "--key", key,
                              "--responses", responses),
            cwd=common.REPO, env=common.python_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        line = self.proc.stdout.readline()
        if line.strip() != "listening":
            raise RuntimeError("baseline %s: %s" % (self.kind, line))

    def stop(self):
        common.stop_process(self.proc)


def write_bodies(work, chosen):
    """Write each call's request bodies; the files by method."""
    os.makedirs(work, exist_ok=True)
    bodies = {}
    for method, requests in chosen:
        bodies[method] = []
        for i, params in enumerate(requests):
            bodies[method].append(os.path.join(
                work, "%s-%d.request" % (method, i)))
            with open(bodies[method][-1], "wb") as f:
                f.write(common.xmlrpc_body(method, params))
    return bodies


def capture(work, url, chosen):
    """Write each call's request bodies and txxapi's answer; the body
    files by method, and the JSON map of the answers the baselines
    read."""
    bodies, responses = write_bodies(work, chosen), {}
    for method, requests in chosen:
        for params in requests:
            answer = common.xmlrpc_raw(url, method, params)
        if b"<value>Success</value>" not in answer:
            raise RuntimeError("%s failed: %r" % (method, answer[:300]))
        responses[method] = os.path.join(work, method + ".response")
        with open(responses[method], "wb") as f:
            f.write(answer)
    response_map = os.path.join(work, "responses.json")
    with open(response_map, "w") as f:
        json.dump(responses, f)
    return bodies, response_map


def run(ctx):
    results = ctx.results
    concurrency = (1,) if ctx.smoke else \
        (1, 100) if ctx.quick else (1, 100, 1000)
    schemes = ("https",) if ctx.smoke else ("http", "https")
    seconds = 1.0 if ctx.quick else ctx.seconds
    data = os.path.join(ctx.base, "api-data")
    common.populated_data_dir(ctx.template(), data,
                              SMOKE_VMS if ctx.smoke else VMS)
    # The same database for both, so that the same VM is read.
    shutil.copytree(data, data + "-web")
    server = common.LoadServer(data)
    web = common.LoadServer(data + "-web",
                            extra_args=["--rpc-http", "twisted-web"])
    server.start()
    web.start()
    work = os.path.join(ctx.base, "api")
    os.makedirs(work, exist_ok=True)
    measured = {}   # (server, scheme, method, connections) -> figures
    baselines = []
    try:
        session = common.login(server.https_url)
        vm = next(r for r, v in common.jsonrpc(
            server.https_url, "VM.get_all_records_where",
            [session, 'field "is_control_domain" = "false"'])[0].items())
        n_calls = 1 if ctx.quick else 3
        chosen = calls(session, vm)[:n_calls]
        bodies, response_map = capture(work, server.https_url, chosen)
        # Its bodies carry a session of its own.
        web_bodies = write_bodies(os.path.join(work, "web"), calls(
            common.login(web.https_url), vm)[:n_calls])
        cert = os.path.join(data, "xapi-ssl.pem")
        key = os.path.join(data, "xapi-ssl.key")
        baselines = [(Baseline(kind, cert, key, response_map), name)
                     for kind, name in BASELINES]
        for b, _ in baselines:
            b.start()
        servers = [(server, OURS), (web, OURS_WEB)] + baselines
        spy = profiler(ctx, server.proc.pid)
        try:
            for scheme in schemes:
                for method, _ in chosen:
                    for n in concurrency:
                        # Every server at one point, one after the other:
                        # what disturbs the machine disturbs them alike.
                        for s, name in servers:
                            f = wrk(getattr(s, scheme + "_url"),
                                    (web_bodies if s is web else bodies)
                                    [method], n, seconds if n < 1000
                                    else max(seconds, MIN_SECONDS_AT_1000))
                            measured[(name, scheme, method, n)] = f
                            results.point("API throughput (%s): %s"
                                          % (scheme.upper(), method),
                                          name, n, f["rps"])
                            say(name, scheme, method, n, f)
        finally:
            if spy is not None:
                spy.stop()
        if not ctx.smoke:
            python_client(ctx, [x for x in servers if x[0] is not web],
                          bodies, measured)
        results.add(ITEM, "txxapi server RSS after the API runs",
                    common.rss_mib(server.proc.pid), "MiB")
    finally:
        server.stop()
        web.stop()
        for b, _ in baselines:
            b.stop()
    report(results, measured, [m for m, _ in chosen], concurrency, schemes)


def say(name, scheme, method, n, f):
    print("  %-20s %-5s %-24s %4d conns: %7.0f req/s  p50 %7.2f ms  "
          "p99 %7.2f ms  errors %d  client CPU %.0f%%"
          % (name, scheme, method, n, f["rps"], f["p50_ms"] or 0,
             f["p99_ms"] or 0, f["errors"], 100 * f["client_cpu"]),
          flush=True)


def python_client(ctx, servers, bodies, measured):
    """The point the old figures came from (VM.get_record, HTTPS, 100
    connections) driven by the Python client instead of wrk."""
    from benchmarks.loadgen import drive
    if "VM.get_record" not in bodies:
        return
    seconds = 1.0 if ctx.quick else ctx.seconds
    for s, name in servers:
        port = s.https_port
        f = drive(port, bodies["VM.get_record"][0], 100, seconds,
                  ctx.client_processes)
        measured[(name, "python", "VM.get_record", 100)] = f
        say(name, "https", "VM.get_record (Python client)", 100, f)


class _Spy:
    def __init__(self, proc):
        self.proc = proc

    def stop(self):
        import signal
        self.proc.send_signal(signal.SIGINT)  # py-spy writes on SIGINT
        self.proc.wait(60)


def profiler(ctx, pid):
    """py-spy recording the server, if --profile asked for it."""
    if not ctx.profile:
        return None
    os.makedirs(ctx.profile, exist_ok=True)
    out = os.path.join(ctx.profile, "api-txxapi.speedscope.json")
    print("  profiling the server into %s" % out)
    return _Spy(subprocess.Popen(
        ["py-spy", "record", "-p", str(pid), "-o", out, "-f", "speedscope",
         "-r", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def report(results, measured, methods, concurrency, schemes):
    for scheme in schemes:
        for method in methods:
            for n in concurrency:
                def at(name):
                    return measured[(name, scheme, method, n)]
                ceil, ours = at(CEILING), at(OURS)
                head = "%s %s, %d conn%s: " % (scheme.upper(), method, n,
                                               "s"[:n > 1])
                for name, f in ((OURS, ours), (OURS_WEB, at(OURS_WEB)),
                                (TWISTED_WEB, at(TWISTED_WEB)),
                                (STDLIB, at(STDLIB))):
                    results.add(ITEM, head + "req/s, " + name, f["rps"],
                                "req/s", ceil["rps"], CEILING,
                                note=_errors(f))
                results.add(ITEM, head + "req/s, " + CEILING, ceil["rps"],
                            "req/s", note=_errors(ceil))
                results.add(ITEM, head + "req/s, txxapi vs stdlib",
                            ours["rps"], "req/s", at(STDLIB)["rps"], STDLIB)
                results.add(ITEM, head + "req/s, txxapi vs its twisted.web "
                            "path", ours["rps"], "req/s",
                            at(OURS_WEB)["rps"], OURS_WEB)
                for name in (OURS, OURS_WEB, STDLIB):
                    results.add(ITEM, head + "p99, " + name,
                                at(name)["p99_ms"], "ms", ceil["p99_ms"],
                                CEILING)
    key = ("python", "VM.get_record", 100)
    if (CEILING,) + key not in measured:
        return
    ceil = measured[(CEILING,) + key]
    for name in ("txxapi", TWISTED_WEB, STDLIB, CEILING):
        f = measured[(name,) + key]
        results.add(ITEM, "Python client, HTTPS VM.get_record, 100 conns: "
                    "req/s, " + name, f["rps"], "req/s",
                    None if name == CEILING else ceil["rps"],
                    None if name == CEILING else CEILING,
                    note="client CPU %.0f%%" % (100 * f["client_cpu"]))


def _errors(figures):
    return "%d errors" % figures["errors"] if figures["errors"] else ""

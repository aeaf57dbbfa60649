"""
Item: VM.get_all_records on a big pool, over XML-RPC and JSON-RPC, with
curl as the client (time to the last byte; the client never parses), while
a probe client calls VM.get_record back to back on its own connection: the
probe's p99 while the big calls run against its p99 before them, on the
same server.  Then the growth of both calls from 500 VMs up, per VM
against the smallest pool (net of the bootstrapped pool's figure): 1.00 is
linear.

    python -m benchmarks.records [--vms 4096] [--sizes 500,1000,...]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import common

ITEM = "records"
AT = 4096
ROUNDS = 3
WIRES = (("XML-RPC", "/", "text/xml"),
         ("JSON-RPC", "/jsonrpc", "application/json"))


def bodies(session):
    return {"XML-RPC": common.xmlrpc_body("VM.get_all_records", [session]),
            "JSON-RPC": json.dumps({"jsonrpc": "2.0", "id": 1,
                                    "method": "VM.get_all_records",
                                    "params": [session]}).encode()}


def curl(url, path, content_type, body_file):
    """(seconds to the last byte, bytes) of one call."""
    out = subprocess.run(
        ["curl", "-s", "-k", "-o", "/dev/null", "-w",
         "%{http_code} %{time_total} %{size_download}",
         "-H", "Content-Type: " + content_type,
         "--data-binary", "@" + body_file, url + path],
        capture_output=True, text=True, timeout=600, check=True)
    code, seconds, size = out.stdout.split()
    if code != "200":
        raise RuntimeError("HTTP %s from %s" % (code, url + path))
    return float(seconds), int(size)


def timed_calls(base, url, session, rounds=ROUNDS, pid=None):
    """{wire: (best seconds, bytes, [(start, end)], server CPU seconds a
    call)}: the call windows on the monotonic clock, for the probe; the
    server's CPU (of process pid) is steadier than the wall clock on a
    shared machine."""
    out = {}
    for wire, path, content_type in WIRES:
        body_file = os.path.join(base, "body-%s" % path.strip("/"))
        with open(body_file, "wb") as f:
            f.write(bodies(session)[wire])
        best, size, windows = None, 0, []
        cpu = common.cpu_seconds(pid) if pid else 0.0
        for _ in range(rounds):
            start = time.monotonic()
            seconds, size = curl(url, path, content_type, body_file)
            windows.append((start, time.monotonic()))
            best = seconds if best is None else min(best, seconds)
        cpu = (common.cpu_seconds(pid) - cpu) / rounds if pid else None
        out[wire] = (best, size, windows, cpu)
    return out


# -- the probe process ----------------------------------------------------------

def probe_main(args):
    """VM.get_record back to back until stdin closes; then every call's
    (start, seconds) as one JSON line."""
    import threading
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()),
                     daemon=True).start()
    conn = common.KeepAliveClient(args.port, timeout=60)
    calls = []
    while not done.is_set():
        start = time.monotonic()
        conn.call("VM.get_record", args.session, args.vm)
        calls.append((start, time.monotonic() - start))
        time.sleep(0.002)
    print(json.dumps(calls), flush=True)


def probed(base, server, session, vm):
    """The big calls while the probe runs: (calls, probe p99 before them,
    probe p99 while they run, probe max while they run), in seconds."""
    probe = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.records", "--probe",
         "--port", str(server.http_port), "--session", session, "--vm", vm],
        cwd=common.REPO, env=common.python_env(), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        first = time.monotonic()
        calls = timed_calls(base, server.https_url, session)
        probe.stdin.close()
        samples = json.loads(probe.stdout.readline())
    finally:
        common.stop_process(probe)
    windows = [w for _best, _size, ws, _cpu in calls.values() for w in ws]
    idle = sorted(s for start, s in samples if start + s < first)
    during = sorted(s for start, s in samples
                    if any(start < end and start + s > begin
                           for begin, end in windows))
    return calls, common.percentile(idle, 99), common.percentile(during, 99), during[-1] if during \
        else float("nan"), len(during)


def pool(ctx_base, template, vms):
    data = os.path.join(ctx_base, "records-%d" % vms)
    if vms:
        common.populated_data_dir(template, data, vms)
    else:
        shutil.copytree(template, data)
    server = common.LoadServer(data)
    server.start(timeout=900)
    return data, server


def measure_at(base, template, vms):
    data, server = pool(base, template, vms)
    try:
        session = common.login(server.http_url)
        vm = next(iter(common.jsonrpc(
            server.http_url, "VM.get_all_records_where",
            [session, 'field "is_control_domain" = "false"'])[0]))
        return probed(base, server, session, vm)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def growth(base, template, sizes):
    """{vms: {wire: (best seconds, server CPU seconds)}} over HTTPS, the
    bootstrapped pool as 0."""
    out = {}
    for vms in (0,) + tuple(sizes):
        data, server = pool(base, template, vms)
        try:
            session = common.login(server.http_url)
            # Enough calls that the CPU clock's ticks do not matter.
            rounds = max(1, min(10, 20000 // max(vms, 1)))
            calls = timed_calls(base, server.https_url, session,
                                rounds=rounds, pid=server.proc.pid)
            out[vms] = {w: (c[0], c[3]) for w, c in calls.items()}
            print("  %6d VMs: %s" % (vms, ", ".join(
                "%s %.3f s, server CPU %.3f s (%.1f MB)"
                % (w, c[0], c[3], c[1] / 1e6)
                for w, c in calls.items())), flush=True)
        finally:
            server.stop()
            shutil.rmtree(data, ignore_errors=True)
    return out


def run(ctx, vms=AT, sizes=None):
    if sizes is None:
        sizes = (500, 1000, 2000, 4096) if ctx.quick else \
            (500, 1000, 2000, 4096, 10000, 50000)
    template = ctx.template()
    calls, idle, during, worst, n = measure_at(ctx.base, template, vms)
    head = "%s VMs, HTTPS, " % "{:,}".format(vms)
    bounds = {"XML-RPC": 1.0, "JSON-RPC": 0.3}
    for wire, (best, size, _w, _cpu) in calls.items():
        ctx.results.add(ITEM, head + "VM.get_all_records " + wire, best, "s",
                        bounds[wire], "the issue's bound")
        ctx.results.add(ITEM, head + "VM.get_all_records %s size" % wire,
                        size / 1e6, "MB")
    ctx.results.add(ITEM, head + "probe VM.get_record p99 during them",
                    during * 1e3, "ms", idle * 1e3, "probe p99 before",
                    note="%d probe calls during; max %.1f ms"
                    % (n, worst * 1e3))
    ctx.results.add(ITEM, head + "probe VM.get_record p99 before",
                    idle * 1e3, "ms", 50.0, "the issue's 50 ms")
    by_size = growth(ctx.base, template, sizes)
    small = sizes[0]
    for wire in bounds:
        for i, label in ((0, ""), (1, ", server CPU")):
            base0 = by_size[0][wire][i]
            per_small = (by_size[small][wire][i] - base0) / small
            for n in sizes:
                value = by_size[n][wire][i]
                ratio = ((value - base0) / n) / per_small \
                    if n != small and per_small > 0 else None
                ctx.results.add(
                    ITEM, "VM.get_all_records %s%s, %s VMs" % (
                        wire, label, "{:,}".format(n)), value, "s",
                    ratio=ratio, baseline_name=(
                        "linear from %s VMs" % "{:,}".format(small))
                    if ratio is not None else None)
                ctx.results.point("Records: VM.get_all_records (s)",
                                  wire + label, n, value)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.records",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=AT)
    p.add_argument("--sizes", default="500,1000,2000,4096",
                   help="pool sizes of the growth sweep")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int)
    p.add_argument("--session")
    p.add_argument("--vm")
    args = p.parse_args(argv)
    if args.probe:
        probe_main(args)
        return
    from benchmarks.run import Context
    common.raise_fd_limit()
    base = tempfile.mkdtemp(prefix="txxapi-records-")
    ctx = Context(argparse.Namespace(quick=False, seconds=0, clients=1,
                                     profile=None), base)
    try:
        run(ctx, args.vms, [int(x) for x in args.sizes.split(",")])
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""
event.from fan-out: N concurrent watchers (default 1,000) blocked in
event.from on one server, then one write; how long until every watcher has
its answer (p50/p99/max over all watchers and rounds), and the server's
RSS idle, with the watchers blocked, and after.

    python3 benchmarks/bench_events.py [--watchers N] [--rounds R]
                                       [--clients P]
                                       [--subscription network|*|object]
                                       [--json]

The server is a real `twistd xapi` (as the tests start it); the watchers
are spread over P client processes (default 4, so that reading a
thousand replies in Python is not what is measured), each watcher on its
own keep-alive HTTP connection speaking JSON-RPC, driven by asyncio.  Latency is measured from
just before the write is sent to the arrival of each watcher's reply, on
the monotonic clock both processes share; it includes the server's ~50 ms
event batching delay.
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from tests.support.servers import PASSWORD, USER, LoadServer  # noqa: E402


# -- the client process -------------------------------------------------------

async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def request_bytes(host, port, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params}).encode()
    return (b"POST /jsonrpc HTTP/1.1\r\nHost: %s:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (host.encode(), port, len(body))) + body


async def watcher(host, port, session, classes, token, rounds, arrivals,
                  sent):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for r in range(rounds):
            writer.write(request_bytes(host, port, "event.from",
                                       [session, classes, token, 300.0]))
            await writer.drain()
            sent[r] += 1
            while True:
                reply = json.loads(await read_response(reader))
                arrived = time.monotonic()
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                token = reply["result"]["token"]
                if reply["result"]["events"]:
                    break
                writer.write(request_bytes(
                    host, port, "event.from",
                    [session, classes, token, 300.0]))
                await writer.drain()
            arrivals[r].append(arrived)
    finally:
        writer.close()


async def client_main(args):
    arrivals = [[] for _ in range(args.rounds)]
    sent = [0] * args.rounds
    classes = json.loads(args.classes)
    tasks = [asyncio.ensure_future(watcher(
        args.host, args.port, args.session, classes, args.token,
        args.rounds, arrivals, sent)) for _ in range(args.watchers)]
    out = sys.stdout
    for r in range(args.rounds):
        while sent[r] < args.watchers:
            await asyncio.sleep(0.05)
        out.write("ready %d\n" % r)
        out.flush()
        while len(arrivals[r]) < args.watchers:
            await asyncio.sleep(0.01)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
        out.write("round %d %s\n" % (r, json.dumps(arrivals[r])))
        out.flush()
    await asyncio.gather(*tasks)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- the driver ---------------------------------------------------------------

def rpc(url, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params}).encode()
    req = urllib.request.Request(url + "/jsonrpc", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        reply = json.loads(r.read())
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["result"]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(sorted_values, p):
    i = min(len(sorted_values) - 1, int(round(p / 100.0 *
                                              (len(sorted_values) - 1))))
    return sorted_values[i]


def measure(args, say=print):
    """Run the benchmark; a dict of its figures (latencies in ms, RSS in
    MiB)."""
    raise_fd_limit()
    base = tempfile.mkdtemp(prefix="bench-events-")
    server = LoadServer(os.path.join(base, "data"))
    server.start()
    try:
        pid = server.proc.pid
        url = server.http_url
        session = rpc(url, "session.login_with_password",
                      [USER, PASSWORD, "1.0", "bench-events"])
        net = rpc(url, "network.create", [session, {
            "name_label": "bench", "name_description": "", "MTU": "1500",
            "other_config": {}}])
        if args.subscription == "object":
            classes = ["network/" + net]
        else:
            classes = [args.subscription]
        token = rpc(url, "event.from", [session, classes, "", 5.0])["token"]
        rss_idle = rss_kib(pid)
        processes = max(1, min(args.clients, args.watchers))
        clients = [subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client",
             "--host", "127.0.0.1", "--port", str(server.http_port),
             "--session", session, "--token", token,
             "--classes", json.dumps(classes),
             "--watchers", str(args.watchers // processes
                               + (i < args.watchers % processes)),
             "--rounds", str(args.rounds)],
            stdout=subprocess.PIPE, text=True) for i in range(processes)]
        latencies, rss_blocked = [], 0
        started = time.monotonic()
        for r in range(args.rounds):
            for client in clients:
                line = client.stdout.readline()
                assert line.startswith("ready"), line
            if r == 0:
                connected = time.monotonic() - started
                say("%d watchers connected and sent in %.2f s"
                    % (args.watchers, connected))
            time.sleep(args.settle)   # let every request reach the server
            rss_blocked = max(rss_blocked, rss_kib(pid))
            t0 = time.monotonic()
            rpc(url, "network.set_name_label", [session, net, "r%d" % r])
            arrivals = []
            for client in clients:
                line = client.stdout.readline()
                assert line.startswith("round"), line
                arrivals += json.loads(line.split(" ", 2)[2])
            lat = sorted(a - t0 for a in arrivals)
            latencies.extend(lat)
            say("round %d: all %d answered %.1f ms after the write "
                "(p50 %.1f ms)" % (r, len(lat), lat[-1] * 1e3,
                                   percentile(lat, 50) * 1e3))
        for client in clients:
            client.wait(60)
        rss_after = rss_kib(pid)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    latencies.sort()
    return {"watchers": args.watchers, "rounds": args.rounds,
            "clients": processes,
            "subscription": classes[0].split("/")[0] +
            ("/<ref>" if "/" in classes[0] else ""),
            "connect_s": connected,
            "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "max_ms": latencies[-1] * 1e3,
            "rss_idle_mib": rss_idle / 1024.0,
            "rss_blocked_mib": rss_blocked / 1024.0,
            "rss_after_mib": rss_after / 1024.0}


def drive(args):
    if args.json:
        figures = measure(args, say=lambda text: None)
        print(json.dumps(figures))
        return
    f = measure(args)
    print()
    print("watchers %d, subscription %s, rounds %d"
          % (f["watchers"], f["subscription"], f["rounds"]))
    print("write -> watcher reply latency: p50 %.1f ms, p99 %.1f ms, "
          "max %.1f ms" % (f["p50_ms"], f["p99_ms"], f["max_ms"]))
    print("server RSS: idle %.1f MiB, %d watchers blocked %.1f MiB, "
          "after %.1f MiB" % (f["rss_idle_mib"], f["watchers"],
                              f["rss_blocked_mib"], f["rss_after_mib"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clients", type=int, default=4,
                   help="client processes the watchers are spread over")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds between the last request sent and the write")
    p.add_argument("--subscription", default="network",
                   choices=["network", "*", "object"])
    p.add_argument("--json", action="store_true",
                   help="print the figures as one JSON line")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--session")
    p.add_argument("--token")
    p.add_argument("--classes")
    args = p.parse_args()
    if args.client:
        raise_fd_limit()
        asyncio.run(client_main(args))
    else:
        drive(args)


if __name__ == "__main__":
    main()

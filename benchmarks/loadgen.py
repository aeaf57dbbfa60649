"""
The client side of the API benchmarks, run as its own process:

    python -m benchmarks.loadgen --port P --connections N --seconds S
                                 --body-file F [--tls] [--warmup W]

Opens N keep-alive connections, each sending one fixed POST after the
other (the next as soon as the previous answer is complete), and measures
for S seconds once every connection has had its first answer.  It prints
"ready" when connected and warmed up, waits for a line on stdin (so that
several processes start together), then prints one JSON line: requests
completed, errors, latencies (microseconds) and its own CPU time.

asyncio protocols rather than streams, and a parser that only looks for
Content-Length: the client must cost far less per request than any server
it measures.  It does not: see benchmarks/api.py, which drives its load
with wrk and keeps this client for one comparison (``drive``).
"""

import argparse
import asyncio
import json
import os
import resource
import ssl
import subprocess
import sys
import time


class Connection(asyncio.Protocol):
    def __init__(self, runner):
        self.runner = runner
        self.transport = None
        self.buffer = bytearray()
        self.need = None      # bytes of the whole response, once known
        self.sent_at = 0.0
        self.answered = asyncio.get_running_loop().create_future()
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def send(self):
        self.buffer.clear()
        self.need = None
        self.sent_at = time.perf_counter()
        self.transport.write(self.runner.request)

    def data_received(self, data):
        buf = self.buffer
        buf += data
        if self.need is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            if i < 0:
                self.fail("response without Content-Length")
                return
            j = head.find(b"\r\n", i)
            length = int(head[i + 15:j if j > 0 else None])
            self.need = end + 4 + length
            self.status_ok = head.startswith(b"http/1.1 200") or \
                head.startswith(b"http/1.0 200")
        if len(buf) >= self.need:
            self.runner.answered(self, time.perf_counter() - self.sent_at,
                                 self.status_ok)

    def fail(self, why):
        self.runner.errors += 1
        self.runner.last_error = why
        self.transport.close()

    def connection_lost(self, exc):
        self.lost = True
        if not self.answered.done():
            self.answered.set_result(False)
        self.runner.closed(self)


class Runner:
    def __init__(self, args):
        body = open(args.body_file, "rb").read()
        self.request = (
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (args.path.encode(), args.port, args.content_type.encode(),
               len(body))) + body
        self.args = args
        self.measuring = False
        self.stopping = False
        self.latencies = []
        self.errors = 0
        self.last_error = ""
        self.count = 0

    def answered(self, conn, latency, ok):
        if not conn.answered.done():
            conn.answered.set_result(True)
        if self.measuring:
            if ok:
                self.count += 1
                self.latencies.append(latency)
            else:
                self.errors += 1
        if not self.stopping:
            conn.send()

    def closed(self, conn):
        if not self.stopping:
            self.errors += 1
            self.last_error = self.last_error or "connection closed"

    async def connect(self, ctx):
        loop = asyncio.get_running_loop()
        for attempt in range(5):
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(self), "127.0.0.1", self.args.port,
                    ssl=ctx, server_hostname="127.0.0.1" if ctx else None)
                return conn
            except OSError:
                # A burst of 1,000 connects can overflow a listen backlog.
                await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError("cannot connect to port %d" % self.args.port)


async def run(args):
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    runner = Runner(args)
    conns = []
    # Connect in batches so that the handshakes do not all queue at once.
    for i in range(0, args.connections, 50):
        conns += await asyncio.gather(*[
            runner.connect(ctx)
            for _ in range(min(50, args.connections - i))])
    for c in conns:
        c.send()
    await asyncio.wait_for(asyncio.gather(*[c.answered for c in conns]),
                           timeout=args.warmup_timeout)
    await asyncio.sleep(args.warmup)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    runner.measuring = True
    await asyncio.sleep(args.seconds)
    runner.measuring = False
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    runner.stopping = True
    for c in conns:
        c.transport.close()
    await asyncio.sleep(0.05)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(json.dumps({
        "requests": runner.count, "errors": runner.errors,
        "last_error": runner.last_error, "seconds": elapsed, "cpu": cpu,
        "latencies_us": [int(x * 1e6) for x in runner.latencies]}),
        flush=True)


def percentile(sorted_values, p):
    i = min(len(sorted_values) - 1,
            int(round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[i]


def drive(port, body_file, connections, seconds, processes):
    """Run ``processes`` of these clients (TLS) against a port together;
    the merged figures (latencies in ms, CPU as cores used)."""
    from benchmarks import common
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
    elapsed = max(o["seconds"] for o in outs)
    return {"rps": sum(o["requests"] for o in outs) / elapsed,
            "p50_ms": percentile(lat, 50) / 1e3 if lat else None,
            "p99_ms": percentile(lat, 99) / 1e3 if lat else None,
            "errors": sum(o["errors"] for o in outs),
            "client_cpu": sum(o["cpu"] for o in outs) / elapsed}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--path", default="/")
    p.add_argument("--content-type", default="text/xml")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--warmup-timeout", type=float, default=120.0)
    p.add_argument("--body-file", required=True)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    try:
        asyncio.run(run(args))
    except Exception as e:
        print(json.dumps({"failed": "%s: %s" % (type(e).__name__, e)}),
              flush=True)
        os._exit(1)


if __name__ == "__main__":
    main()

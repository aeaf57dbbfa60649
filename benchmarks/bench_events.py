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
own keep-alive HTTP connection speaking JSON-RPC, on one epoll loop per
process.  Latency is measured from
just before the write is sent to the arrival of each watcher's reply, on
the monotonic clock both processes share; it includes the server's ~50 ms
event batching delay.
"""

import argparse
import json
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from benchmarks import common  # noqa: E402
from tests.support.servers import PASSWORD, USER, LoadServer  # noqa: E402


# -- the client process -------------------------------------------------------

class Watcher:
    """One watcher's connection: its socket, the bytes of a reply still
    arriving, its token and round."""

    __slots__ = ("sock", "buf", "token", "round")

    def __init__(self, sock, token):
        self.sock, self.buf, self.token, self.round = sock, b"", token, 0


def request_bytes(host, port, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params}).encode()
    return (b"POST /jsonrpc HTTP/1.1\r\nHost: %s:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (host.encode(), port, len(body))) + body


def whole_reply(buf):
    """(body, rest) once buf holds a whole response, else None.  The RPC
    path always answers with a Content-Length."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    at = buf.find(b"\r\ncontent-length:", 0, end)
    if at < 0:
        at = buf.lower().find(b"\r\ncontent-length:", 0, end)
    stop = buf.find(b"\r\n", at + 17)
    length = int(buf[at + 17:stop])
    if len(buf) < end + 4 + length:
        return None
    return buf[end + 4:end + 4 + length], buf[end + 4 + length:]


# SO_TIMESTAMPNS (Linux): the kernel's receive time of each segment, so
# that a reply's arrival is not the moment this loop got round to it.
SO_TIMESTAMPNS = 35
OK_PREFIX = b'{"jsonrpc":"2.0","result":'
NO_EVENTS = b'"events":[]'
TOKEN = b'"token":"'


def client_main(args):
    """The watchers of one process on one epoll loop.  A reply is read
    without a JSON parse (its token found in the bytes: the server writes
    it last, after the events), so that the client stays ahead of the
    server; each records when its reply was read and when the kernel
    received its last byte."""
    classes = json.loads(args.classes)
    poll = select.epoll()
    watchers = {}
    # A token has a fixed width: one request with a placeholder of that
    # width, its Content-Length right for every token.
    mark = "@" * 41
    head, tail = request_bytes(
        args.host, args.port, "event.from",
        [args.session, classes, mark, 300.0]).split(mark.encode())

    def ask(w):
        w.sock.send(head + w.token + tail if len(w.token) == 41 else
                    request_bytes(args.host, args.port, "event.from",
                                  [args.session, classes,
                                   w.token.decode(), 300.0]))

    for _ in range(args.watchers):
        sock = socket.create_connection((args.host, args.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        w = Watcher(sock, args.token.encode())
        ask(w)
        sock.setblocking(False)
        watchers[sock.fileno()] = w
        poll.register(sock.fileno(), select.EPOLLIN)
    out = sys.stdout
    arrivals = [[] for _ in range(args.rounds)]
    for r in range(args.rounds):
        out.write("ready %d\n" % r)
        out.flush()
        while len(arrivals[r]) < args.watchers:
            for fd, _ in poll.poll(1.0):
                w = watchers[fd]
                data, anc, _flags, _addr = w.sock.recvmsg(262144, 64)
                if not data:
                    raise RuntimeError("the server closed a watcher")
                w.buf += data
                got = whole_reply(w.buf)
                if got is None:
                    continue
                read = time.monotonic()
                received = read_time = time.time()
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        received = sec + nsec * 1e-9
                body, w.buf = got
                if not body.startswith(OK_PREFIX):
                    raise RuntimeError(body[:2000])
                at = body.rindex(TOKEN) + len(TOKEN)
                w.token = body[at:body.index(b'"', at)]
                if NO_EVENTS not in body:
                    # (read, received) on the monotonic clock
                    arrivals[w.round].append(
                        (read, read - (read_time - received)))
                    w.round += 1
                    if w.round == args.rounds:
                        continue
                ask(w)
        out.write("round %d %s\n" % (r, json.dumps(arrivals[r])))
        out.flush()
    for w in watchers.values():
        w.sock.close()


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


def profiling(pid, out):
    """py-spy sampling the server from now until stop() (a speedscope
    file; python -m benchmarks.hotpath --analyse reads it)."""
    from benchmarks.api import _Spy
    return _Spy(subprocess.Popen(
        [shutil.which("py-spy") or os.path.join(
            os.path.dirname(sys.executable), "py-spy"), "record", "-p", str(pid), "-o", out, "-f", "speedscope",
         "-r", "250", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


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
        latencies, rss_blocked, wake_cpu, at_socket = [], 0, [], []
        spy = None
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
            if r == 0 and args.profile:
                spy = profiling(pid, args.profile)
            cpu0 = common.cpu_seconds(pid)
            t0 = time.monotonic()
            rpc(url, "network.set_name_label", [session, net, "r%d" % r])
            arrivals, received_at = [], []
            for client in clients:
                line = client.stdout.readline()
                assert line.startswith("round"), line
                for read, received in json.loads(line.split(" ", 2)[2]):
                    arrivals.append(read)
                    received_at.append(received)
            # The server's CPU from the write until every reply arrived
            # (with some of the watchers' next calls, read meanwhile).
            wake_cpu.append(common.cpu_seconds(pid) - cpu0)
            lat = sorted(a - t0 for a in arrivals)
            latencies.extend(lat)
            at_socket.extend(a - t0 for a in received_at)
            say("round %d: all %d answered %.1f ms after the write "
                "(p50 %.1f ms)" % (r, len(lat), lat[-1] * 1e3,
                                   common.percentile(lat, 50) * 1e3))
        if spy is not None:
            spy.stop()
        for client in clients:
            client.wait(60)
        rss_after = rss_kib(pid)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    latencies.sort()
    at_socket.sort()
    load = os.getloadavg()[0]
    return {"watchers": args.watchers, "rounds": args.rounds,
            "clients": processes,
            "subscription": classes[0].split("/")[0] +
            ("/<ref>" if "/" in classes[0] else ""),
            "connect_s": connected,
            # Other work on the machine takes CPU from the server and its
            # clients: the latencies are read with it.
            "load_average": load,
            "p50_ms": common.percentile(latencies, 50) * 1e3,
            "p99_ms": common.percentile(latencies, 99) * 1e3,
            "max_ms": latencies[-1] * 1e3,
            "socket_p50_ms": common.percentile(at_socket, 50) * 1e3,
            "socket_p99_ms": common.percentile(at_socket, 99) * 1e3,
            "socket_max_ms": at_socket[-1] * 1e3,
            "wake_cpu_us": 1e6 * sum(wake_cpu) / len(wake_cpu)
            / args.watchers,
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
    print("write -> reply read by the watcher: p50 %.1f ms, p99 %.1f ms, "
          "max %.1f ms" % (f["p50_ms"], f["p99_ms"], f["max_ms"]))
    print("write -> reply at the watcher's socket: p50 %.1f ms, p99 %.1f ms, "
          "max %.1f ms" % (f["socket_p50_ms"], f["socket_p99_ms"],
                           f["socket_max_ms"]))
    print("load average (1 min) at the end: %.2f" % f["load_average"])
    print("server CPU per watcher woken: %.1f us"
          % f["wake_cpu_us"])
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
    p.add_argument("--profile", metavar="FILE",
                   help="record the server with py-spy over the rounds "
                        "(a speedscope file)")
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
        client_main(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()

"""
A watcher on "*" while VMs change: a server with N VMs (default 4,096),
a writer process changing one VM after another at a steady rate (default
100 writes/s, each VM.set_name_description carrying its send time), and
one event.from watcher on "*" that follows.  Whether the watcher keeps up
(every write seen, the lag from a write's send to its event's arrival)
and whether the server's memory grows (RSS sampled every second).

    python3 benchmarks/bench_event_star.py [--vms N] [--rate W]
                                           [--seconds S] [--json]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from benchmarks import common  # noqa: E402


# -- the writer process -------------------------------------------------------

def writer_main(args):
    """Write at the rate asked, VM after VM; print how many were sent."""
    conn = common.KeepAliveClient(args.port, timeout=600)
    vms = json.loads(sys.stdin.readline())
    interval = 1.0 / args.rate
    start = time.monotonic()
    sent = 0
    while True:
        due = start + sent * interval
        now = time.monotonic()
        if now - start >= args.seconds:
            break
        if due > now:
            time.sleep(due - now)
        vm = vms[sent % len(vms)]
        conn.call("VM.set_name_description", args.session, vm,
                  "w%d %.6f" % (sent, time.monotonic()))
        sent += 1
    print(json.dumps({"sent": sent,
                      "seconds": time.monotonic() - start}), flush=True)


# -- the driver ---------------------------------------------------------------

def sample_rss(pid, samples, stop):
    t0 = time.monotonic()
    while not stop.wait(1.0):
        samples.append((time.monotonic() - t0, common.rss_mib(pid)))


def measure(args, say=print):
    base = tempfile.mkdtemp(prefix="bench-star-")
    try:
        data = os.path.join(base, "data")
        common.populated_data_dir(common.bootstrap_data_dir(base, "template"),
                                  data, args.vms)
        server = common.LoadServer(data)
        server.start(timeout=600)
        try:
            return run_against(server, args, say)
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_against(server, args, say):
    pid = server.proc.pid
    conn = common.KeepAliveClient(server.http_port, timeout=600)
    session = conn.call("session.login_with_password",
                        common.USER, common.PASSWORD, "1.0", "bench-star")
    vms = sorted(conn.call("VM.get_all_records_where",
                           session, 'field "is_control_domain" = "false"'))
    token = conn.call("event.from", session, ["pool"], "", 0.0)["token"]
    rss_idle = common.rss_mib(pid)
    writer = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--writer",
         "--port", str(server.http_port),
         "--session", session, "--rate", str(args.rate),
         "--seconds", str(args.seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    writer.stdin.write(json.dumps(vms) + "\n")
    writer.stdin.flush()
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pid, samples, stop))
    sampler.start()
    cpu0 = common.cpu_seconds(pid)
    seen, lags, replies = set(), [], 0
    started = time.monotonic()
    try:
        # Follow until the writer is done and a quiet reply says all is in.
        while True:
            reply = conn.call("event.from", session, ["*"], token, 2.0)
            arrived = time.monotonic()
            replies += 1
            token = reply["token"]
            for event in reply["events"]:
                if event["class"] != "vm" or event["operation"] != "mod":
                    continue
                text = event["snapshot"]["name_description"]
                if text.startswith("w"):
                    n, sent_at = text[1:].split()
                    if n not in seen:
                        seen.add(n)
                        lags.append(arrived - float(sent_at))
            if writer.poll() is not None and not reply["events"]:
                break
            if time.monotonic() - started > args.seconds + 120:
                raise RuntimeError("the watcher did not catch up")
    finally:
        stop.set()
        sampler.join()
    cpu = common.cpu_seconds(pid) - cpu0
    written = json.loads(writer.stdout.readline())
    writer.wait(60)
    lags.sort()
    # Memory: the first samples hold the warm-up; growth is judged from
    # the samples of the second half against those of the first.
    rss = [m for _, m in samples]
    half = len(rss) // 2
    first, second = rss[1:half] or rss[:1], rss[half:] or rss[-1:]
    figures = {
        "vms": args.vms, "rate_asked": args.rate,
        "writes": written["sent"],
        "write_rate": written["sent"] / written["seconds"],
        "seen": len(seen), "replies": replies,
        "lag_p50_ms": common.percentile(lags, 50) * 1e3,
        "lag_p99_ms": common.percentile(lags, 99) * 1e3,
        "lag_max_ms": lags[-1] * 1e3 if lags else None,
        "server_cpu_per_write_ms": 1e3 * cpu / max(1, written["sent"]),
        "rss_idle_mib": rss_idle,
        "rss_first_half_mib": sum(first) / len(first),
        "rss_second_half_mib": sum(second) / len(second),
        "rss_max_mib": max(rss), "rss_samples": samples}
    say("%d writes at %.0f/s, %d seen in %d replies; lag p50 %.1f ms, "
        "p99 %.1f ms; RSS idle %.1f, first half %.1f, second half %.1f MiB"
        % (figures["writes"], figures["write_rate"], figures["seen"],
           replies, figures["lag_p50_ms"], figures["lag_p99_ms"], rss_idle,
           figures["rss_first_half_mib"], figures["rss_second_half_mib"]))
    return figures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=4096)
    p.add_argument("--rate", type=float, default=100.0,
                   help="writes per second")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--json", action="store_true",
                   help="print the figures as one JSON line")
    p.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int)
    p.add_argument("--session")
    args = p.parse_args()
    if args.writer:
        writer_main(args)
    elif args.json:
        print(json.dumps(measure(args, say=lambda text: None)))
    else:
        measure(args)


if __name__ == "__main__":
    main()

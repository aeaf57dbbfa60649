"""
Item 4: VM lifecycle throughput on the simulator, start/hard_shutdown
cycles per second with 1, 10 and 100 in flight (each on its own VM), the
simulator's operation time set to zero so that the toolstack's own cost
shows.  The baseline is the same number of workers each doing two plain
durable writes (VM.set_name_label) per cycle.  Reports "not available
yet" while the server lacks --simulator-op-time or VM.start answers
NOT_IMPLEMENTED.
"""

import os
import threading
import time

from benchmarks import common

ITEM = "lifecycle"
OP_TIME_OPTION = "--simulator-op-time"
MISSING = ("NOT_IMPLEMENTED", "MESSAGE_METHOD_UNKNOWN")


Client = common.KeepAliveClient


def cycles(port, session, vms, seconds, cycle):
    """Run one worker per VM, each repeating cycle(client, session, vm)
    for ``seconds``; cycles per second and the first error, if any."""
    done = [0] * len(vms)
    errors = []
    start = threading.Barrier(len(vms) + 1)
    deadline = [0.0]

    def worker(i, vm):
        client = Client(port)
        try:
            start.wait()
            while time.monotonic() < deadline[0] and not errors:
                cycle(client, session, vm)
                done[i] += 1
        except Exception as e:
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i, vm), daemon=True)
               for i, vm in enumerate(vms)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.monotonic() - t0
    return sum(done) / elapsed, (errors[0] if errors else None)


def start_stop(client, session, vm):
    client.call("VM.start", session, vm, False, False)
    client.call("VM.hard_shutdown", session, vm)


def two_writes(client, session, vm):
    client.call("VM.set_name_label", session, vm, "bench-a")
    client.call("VM.set_name_label", session, vm, "bench-b")


def run(ctx):
    in_flight = (1, 10) if ctx.quick else (1, 10, 100)
    seconds = 1.0 if ctx.quick else ctx.seconds
    data = os.path.join(ctx.base, "lifecycle-data")
    common.populated_data_dir(ctx.template(), data, max(in_flight))
    # Memory for every VM in flight at once: the figure is the toolstack's.
    server = common.LoadServer(data, extra_args=[
        OP_TIME_OPTION, "0", "--simulator-memory", str(1 << 40)])
    try:
        server.start()
    except RuntimeError as e:
        if OP_TIME_OPTION[2:] in str(e):
            ctx.results.unavailable(
                ITEM, "start/shutdown cycles",
                common.NOT_AVAILABLE + " (no %s)" % OP_TIME_OPTION)
            return
        raise
    try:
        url = server.http_url
        session = common.login(url)
        vms = sorted(r for r, v in common.jsonrpc(
            url, "VM.get_all_records_where",
            [session, 'field "is_control_domain" = "false" and '
             'field "is_a_template" = "false"'])[0].items())
        probe = Client(server.http_port)
        try:
            start_stop(probe, session, vms[0])
        except common.RPCError as e:
            if e.description and e.description[0] in MISSING:
                ctx.results.unavailable(
                    ITEM, "start/shutdown cycles",
                    common.NOT_AVAILABLE + " (VM.start: %s)"
                    % e.description[0])
                return
            raise
        finally:
            probe.close()
        for n in in_flight:
            rate, error = cycles(server.http_port, session, vms[:n], seconds,
                                 start_stop)
            base, base_error = cycles(server.http_port, session, vms[:n],
                                      seconds, two_writes)
            note = "; ".join("%s: %s" % (k, e) for k, e in (
                ("cycles", error), ("writes", base_error)) if e)
            ctx.results.add(ITEM, "%d in flight: start/shutdown cycles" % n,
                            rate, "/s", base, "2 set_name_label", note=note)
            ctx.results.point("Lifecycle: cycles/s", "start+hard_shutdown",
                              n, rate)
            ctx.results.point("Lifecycle: cycles/s", "2 x set_name_label",
                              n, base)
    finally:
        server.stop()

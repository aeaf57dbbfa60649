"""What one request costs a server, measured rather than timed: the CPU
seconds its process spent (all threads), read from /proc before and after,
so a loaded machine makes a request slower but not costlier."""

import os
from contextlib import contextmanager


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        # The fields after the command name: state is the first, utime and
        # stime the 12th and 13th.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cost:
    seconds = None


@contextmanager
def cpu_of(server):
    """``with cpu_of(server) as cost: ...``; then cost.seconds."""
    cost = Cost()
    before = cpu_seconds(server.proc.pid)
    yield cost
    cost.seconds = cpu_seconds(server.proc.pid) - before

"""
Thread pools of the server's parts.  Their threads are daemons: a server
that is never stopped (the in-process ones of tests and benchmarks) must
not keep its process alive.  Each part still stops its pool, waiting for
the work under way, when the server stops.
"""

import functools
import threading

from twisted.python.threadpool import ThreadPool


def daemon_pool(minthreads, maxthreads, name):
    pool = ThreadPool(minthreads=minthreads, maxthreads=maxthreads,
                      name=name)
    pool.threadFactory = functools.partial(threading.Thread, daemon=True)
    return pool

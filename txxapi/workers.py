"""
Thread pools of the server's parts.  Their threads are daemons: a server
that is never stopped (the in-process ones of tests and benchmarks) must
not keep its process alive.  Each part still stops its pool, waiting for
the work under way, when the server stops (``stop_pool``).
"""

import functools
import threading

from twisted.python.threadpool import ThreadPool


def daemon_pool(minthreads, maxthreads, name):
    pool = ThreadPool(minthreads=minthreads, maxthreads=maxthreads,
                      name=name)
    pool.threadFactory = functools.partial(threading.Thread, daemon=True)
    return pool


def stop_pool(pool):
    """Stop ``pool``, waiting for its work.  Under a reactor whose
    callFromThread runs at once (the in-process servers of tests and
    benchmarks) a part's stop can arrive on one of the pool's own
    threads, which cannot join itself: the joining is then left to a
    thread of its own."""
    if threading.current_thread() in pool.threads:
        threading.Thread(target=pool.stop, name=pool.name + "-stop").start()
    else:
        pool.stop()

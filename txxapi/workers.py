"""
Where the server's parts run their blocking work (driver and backend
calls, directory look-ups, metrics files): ``Workers``, one per part.

* Under a real reactor the work runs on a thread pool of the part's own.
  Its threads are daemons: a server that is never stopped (the
  in-process ones of tests and benchmarks) must not keep its process
  alive.  The part still stops its pool, waiting for the work under way,
  when the server stops.
* Under a reactor without threads (a test Clock) the work runs inline,
  so a test sees its outcome at once and no thread outlives it.
"""

import functools
import threading

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.python.threadpool import ThreadPool


class Workers:
    """``run(fn, *args, **kw)``: a Deferred of ``fn``'s result, computed
    off the reactor thread when the reactor has threads.  ``inline``
    forces the choice either way (a part whose work must stay on threads
    even under a Clock)."""

    def __init__(self, reactor, name, maxthreads, inline=None):
        self.reactor = reactor
        self.name = name
        if inline is None:
            inline = not IReactorThreads.providedBy(reactor)
        self.inline = inline
        self.pool = None if inline else daemon_pool(0, maxthreads, name)
        self._started = False

    def start(self):
        """Start the threads; work run before waits for them."""
        if self.pool is not None and not self._started:
            self._started = True
            self.pool.start()

    def stop(self):
        """Stop the threads, waiting for the work under way (once: a
        stopped pool does not start again)."""
        if self._started:
            self._started = False
            stop_pool(self.pool)

    def run(self, fn, *args, **kw):
        if self.pool is None:
            return defer.maybeDeferred(fn, *args, **kw)
        return threads.deferToThreadPool(self.reactor, self.pool, fn,
                                         *args, **kw)


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

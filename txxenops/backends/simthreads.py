"""
The simulator's two daemon threads: timers (guests acknowledging, agents
reporting) and event delivery to subscribers, in order.
"""

import heapq
import logging
import queue
import threading
import time

log = logging.getLogger(__name__)


class Scheduler:
    """Runs callables at given Unix times on one daemon thread."""

    def __init__(self):
        self._heap = []
        self._seq = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="txxenops-sim-timer", daemon=True)
        self._thread.start()

    def call_at(self, when, fn):
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, fn))
            self._cond.notify()

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self):
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.time()
                    if self._heap and self._heap[0][0] <= now:
                        fn = heapq.heappop(self._heap)[2]
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                else:
                    return
            try:
                fn()
            except Exception:
                log.exception("simulator timer callback failed")


class Dispatcher:
    """Delivers events to subscribers, in order, from one daemon thread."""

    def __init__(self):
        self._queue = queue.Queue()
        self._subscribers = ()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="txxenops-sim-events", daemon=True)
        self._thread.start()

    def subscribe(self, callback):
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

    def unsubscribe(self, callback):
        with self._lock:
            self._subscribers = tuple(
                s for s in self._subscribers if s != callback)

    def put(self, event):
        self._queue.put(event)

    def stop(self):
        self._queue.put(None)
        self._thread.join(5)

    def _run(self):
        while True:
            event = self._queue.get()
            if event is None:
                return
            for callback in self._subscribers:
                try:
                    callback(event)
                except Exception:
                    log.exception("event subscriber %r failed", callback)

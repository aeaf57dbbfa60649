"""
The backend's event loop for libxl: one thread polling the file
descriptors and timeouts libxl registers through libxl_osevent_hooks, and
telling libxl when they fire.

libxl calls the registration hooks (txx_fd_register & co in ffi.py) from
any thread, with its context lock held, so they only update the registry
under ``_lock`` and wake the loop; ``_lock`` is never held while calling
into libxl (the lock order libxl_event.h recommends).  A registration
reported after libxl dropped it is safe: libxl ignores stale handles.

The loop also asks libxl every TICK_MS to reap its child processes: the
application owns SIGCHLD (libxl_sigchld_owner_mainloop), so libxl never
touches the SIGCHLD handlers of Twisted or of Python's subprocess module.

It serves the process's one context (context.py) and, like it, lives as
long as the process.
"""

import itertools
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

TICK_MS = 100
ERROR_OSEVENT_REG_FAIL = -12


class EventLoop:
    def __init__(self, ffi, lib):
        self.ffi = ffi
        self.lib = lib
        self.ctx = None
        self._lock = threading.Lock()
        self._fds = {}          # id -> [fd, events, for_libxl]
        self._timeouts = {}     # id -> [unix time, for_libxl]
        self._ids = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = None
        self.handle = ffi.new_handle(self)
        # Must outlive the context.
        self.hooks = ffi.new("libxl_osevent_hooks *")
        self.hooks.fd_register = lib.txx_fd_register
        self.hooks.fd_modify = lib.txx_fd_modify
        self.hooks.fd_deregister = lib.txx_fd_deregister
        self.hooks.timeout_register = lib.txx_timeout_register
        self.hooks.timeout_modify = lib.txx_timeout_modify
        self.hooks.timeout_deregister = lib.txx_timeout_deregister

    def register(self, ctx):
        """Attach to a fresh context (before anything else uses it)."""
        self.ctx = ctx
        self.lib.libxl_osevent_register_hooks(ctx, self.hooks, self.handle)

    def start(self):
        self._thread = threading.Thread(
            target=self._run, name="txxenops-libxl-poll", daemon=True)
        self._thread.start()

    def wake(self):
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass    # already awake

    # --- the hooks (see ffi.py): registry only, never libxl ----------------

    def _id_of(self, reg):
        return int(self.ffi.cast("uintptr_t", reg))

    def fd_register(self, fd, reg_out, events, for_libxl):
        with self._lock:
            rid = next(self._ids)
            self._fds[rid] = [fd, events, for_libxl]
        reg_out[0] = self.ffi.cast("void *", rid)
        self.wake()
        return 0

    def fd_modify(self, fd, reg_update, events):
        with self._lock:
            entry = self._fds.get(self._id_of(reg_update[0]))
            if entry is None:
                return ERROR_OSEVENT_REG_FAIL
            entry[1] = events
        self.wake()
        return 0

    def fd_deregister(self, fd, reg):
        with self._lock:
            self._fds.pop(self._id_of(reg), None)
        self.wake()

    def timeout_register(self, reg_out, abs_time, for_libxl):
        when = abs_time.tv_sec + abs_time.tv_usec / 1e6
        with self._lock:
            rid = next(self._ids)
            self._timeouts[rid] = [when, for_libxl]
        reg_out[0] = self.ffi.cast("void *", rid)
        self.wake()
        return 0

    def timeout_modify(self, reg_update, abs_time):
        # libxl only ever asks for "now"; the timeout may already be
        # firing, in which case it is gone from the registry.
        with self._lock:
            entry = self._timeouts.get(self._id_of(reg_update[0]))
            if entry is not None:
                entry[0] = 0.0
        self.wake()
        return 0

    def timeout_deregister(self, reg):
        with self._lock:
            self._timeouts.pop(self._id_of(reg), None)

    # --- the loop ---------------------------------------------------------

    def _run(self):
        ffi, lib = self.ffi, self.lib
        while True:
            with self._lock:
                watched = [(fd, events, for_libxl) for fd, events, for_libxl
                           in self._fds.values() if events]
                soonest = min((t for t, _ in self._timeouts.values()),
                              default=None)
            wait = TICK_MS
            if soonest is not None:
                wait = max(0, min(wait, int((soonest - time.time()) * 1000)))
            fds = ffi.new("struct pollfd[]", len(watched) + 1)
            for i, (fd, events, _) in enumerate(watched):
                fds[i].fd = fd
                fds[i].events = events
            fds[len(watched)].fd = self._wake_r
            fds[len(watched)].events = lib.POLLIN
            lib.poll(fds, len(watched) + 1, wait)
            if fds[len(watched)].revents:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            for i, (fd, events, for_libxl) in enumerate(watched):
                if fds[i].revents:
                    lib.libxl_osevent_occurred_fd(self.ctx, for_libxl, fd,
                                                  events, fds[i].revents)
            now = time.time()
            with self._lock:
                due = [(rid, t) for rid, t in self._timeouts.items()
                       if t[0] <= now]
                for rid, _ in due:
                    # Firing deregisters it (libxl re-registers if need be).
                    del self._timeouts[rid]
            for _, (_, for_libxl) in due:
                lib.libxl_osevent_occurred_timeout(self.ctx, for_libxl)
            lib.libxl_childproc_sigchld_occurred(self.ctx)

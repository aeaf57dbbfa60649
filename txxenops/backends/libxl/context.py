"""
The process's one libxl context, shared by every LibxlBackend in it.

A toolstack opens a single libxl context and keeps it until it exits, as
xenopsd does.  It is never freed, so no thread can ever be inside a freed
context (an operation still running when its backend closes finishes on
it), and a daemon has no use for a second one.

What libxl wants set once, before anything else uses the context, lives
here: the osevent hooks (served by loop.EventLoop's thread), the event
callbacks, the child-process mode, and a xenstore handle for the reads the
backends make themselves.

Events go to the backend that asked for them: a backend enables death
events with a ``for_user`` cookie holding its serial in the high 32 bits
and the domid in the low ones, so a closed backend's events are dropped.
"""

import itertools
import logging
import os
import threading

from txxenops.backends.libxl.errors import LibxlError
from txxenops.backends.libxl.loop import EventLoop
from txxenops.errors import BackendUnavailable

log = logging.getLogger(__name__)

EVENT_DOMAIN_SHUTDOWN = 1
EVENT_DOMAIN_DEATH = 2

_shared = None
_shared_lock = threading.Lock()


def shared_context(binding):
    """The process's Context, opened on first use (BackendUnavailable if
    libxl or xenstore cannot be reached; the next call tries again)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Context(binding)
        return _shared


class Context:
    def __init__(self, binding):
        self.binding = binding
        ffi, lib = self.ffi, self.lib = binding.ffi, binding.lib
        self._lock = threading.Lock()
        self._receivers = {}        # serial -> backend
        self._serials = itertools.count(1)
        pctx = ffi.new("libxl_ctx **")
        try:
            binding.call("libxl_ctx_alloc", pctx, lib.LIBXL_VERSION, 0,
                         lib.txx_logger())
        except LibxlError as e:
            raise BackendUnavailable("libxl: %s" % e)
        self.ctx = pctx[0]
        self.xs = lib.xs_open(0)
        if self.xs == ffi.NULL:
            reason = os.strerror(ffi.errno)
            lib.libxl_ctx_free(self.ctx)    # nothing has used it yet
            raise BackendUnavailable("cannot connect to xenstore: %s"
                                     % reason)
        # The hooks first: libxl registers its fds as soon as it has them.
        self.loop = EventLoop(ffi, lib)
        self.loop.register(self.ctx)
        # These structures must live as long as the context: for ever.
        self._handle = ffi.new_handle(self)
        self._hooks = ffi.new("libxl_event_hooks *")
        self._hooks.event_occurs_mask = (1 << EVENT_DOMAIN_SHUTDOWN) | \
            (1 << EVENT_DOMAIN_DEATH)
        self._hooks.event_occurs = lib.txx_event_occurs
        self._hooks.disaster = lib.txx_disaster
        lib.libxl_event_register_callbacks(self.ctx, self._hooks,
                                           self._handle)
        self._childproc = ffi.new("libxl_childproc_hooks *")
        self._childproc.chldowner = lib.libxl_sigchld_owner_mainloop
        lib.libxl_childproc_setmode(self.ctx, self._childproc, ffi.NULL)
        self.loop.start()

    # --- receivers --------------------------------------------------------

    def attach(self, receiver):
        """Route events to ``receiver``; returns its serial."""
        with self._lock:
            serial = next(self._serials)
            self._receivers[serial] = receiver
        return serial

    def detach(self, serial):
        with self._lock:
            self._receivers.pop(serial, None)

    @staticmethod
    def cookie(serial, domid):
        """The ``for_user`` value of a receiver's event generator."""
        return (serial << 32) | domid

    # --- called by ffi.txx_event_occurs / txx_disaster ---------------------

    def libxl_event(self, domid, kind, reason, for_user):
        with self._lock:
            receiver = self._receivers.get(for_user >> 32)
        if receiver is not None:
            receiver.libxl_event(domid, kind, reason)

    def libxl_disaster(self, kind, message):
        log.critical("libxl cannot deliver events (type %d) any more: %s",
                     kind, message)


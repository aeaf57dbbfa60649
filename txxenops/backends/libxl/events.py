"""
Domain events of the libxl backend: death watches on its domains, libxl's
events (queued from whichever thread raised them) and the events
operations emit, delivered to the subscribers in order by one thread
(``txxenops-libxl-events``).

What libxl does on its own is reported: DOMAIN_SHUTDOWN becomes a 'state'
event unless an operation asked for it and is waiting, and DOMAIN_DEATH of
a domain the backend did not destroy becomes a 'state' event with info
None.
"""

import logging

from txxenops.backends.libxl.context import (
    EVENT_DOMAIN_DEATH, EVENT_DOMAIN_SHUTDOWN)
from txxenops.backends.libxl.domains import SHUTDOWN_REASONS
from txxenops.backends.libxl.errors import LibxlError
from txxenops.errors import DomainNotFound
from txxenops.types import DomainEvent

log = logging.getLogger(__name__)


class DomainEvents:
    """LibxlBackend's event watching and delivery (mixed into it)."""

    def subscribe(self, callback):
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

    def unsubscribe(self, callback):
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers
                                      if s != callback)

    def libxl_event(self, domid, kind, reason):
        """On whatever thread libxl is running: only queue it."""
        self._queue.put(("libxl", domid, kind, reason))

    def _event_loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if item[0] == "emit":
                    self._deliver(item[1])
                else:
                    self._handle_libxl_event(*item[1:])
            except Exception:
                log.exception("handling %r failed", item)

    def _deliver(self, event):
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed", callback)

    def _handle_libxl_event(self, domid, kind, reason):
        with self._lock:
            vm = next((v for v in self._vms.values() if v.domid == domid),
                      None)
            if vm is None:
                return
            if kind == EVENT_DOMAIN_SHUTDOWN:
                vm.shutdown_reason = SHUTDOWN_REASONS.get(reason, "")
                self._cond.notify_all()
                if vm.awaiting or vm.quiet:
                    return
            elif kind == EVENT_DOMAIN_DEATH:
                vm.dead = True
                self._cond.notify_all()
                if vm.quiet or vm.awaiting:
                    return
                del self._vms[vm.uuid]
            else:
                return
        if kind == EVENT_DOMAIN_DEATH:
            self._pty_consoles.forget(vm.uuid)
            self._disable_events(vm)
            self._deliver(DomainEvent(vm.uuid, domid, "state", None))
            return
        try:
            info = self._info(vm)
        except DomainNotFound:
            return      # already gone: its death event follows
        self._deliver(DomainEvent(vm.uuid, domid, "state", info))

    def _enable_events(self, vm):
        ev = self.ffi.new("libxl_evgen_domain_death **")
        try:
            self._call("libxl_evenable_domain_death", self._ctx, vm.domid,
                       self._context.cookie(self._serial, vm.domid), ev)
        except LibxlError as e:
            log.error("no death events for domain %d: %s", vm.domid, e)
            return
        with self._lock:
            vm.evgen = ev[0]

    def _disable_events(self, vm):
        with self._lock:
            evgen, vm.evgen = vm.evgen, None
        if evgen is not None:
            self.lib.libxl_evdisable_domain_death(self._ctx, evgen)

    def _emit(self, event):
        """Queue an event behind everything queued so far (callers hold
        self._lock, which keeps the queue in the order of the changes)."""
        self._queue.put(("emit", event))

    def _emit_gone(self, uuid, domid):
        with self._lock:
            self._emit(DomainEvent(uuid, domid, "state", None))

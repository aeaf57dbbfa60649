"""
Requests the guest carries out, for the libxl backend: clean shutdown and
reboot through the PV control node, suspend to an image, ballooning and
vCPU changes, and the waits until the guest has followed.
"""

import logging
import time

from txxenops.backends.libxl import errors, image as suspend_image
from txxenops.backends.libxl.domains import KIB
from txxenops.backends.libxl.errors import LibxlError
from txxenops.errors import (
    Cancelled, ImageError, InvalidSpec, SuspendTimeout)
from txxenops.types import DomainEvent

log = logging.getLogger(__name__)

# Balloon and vCPU changes are carried out by the guest; wait this long for
# Xen to show them (XAPI waits for the balloon too).
GUEST_WAIT = 20.0
# memory_actual counts as at the target within this much (the balloon
# driver works in pages; Xen counts a few pages of its own for the guest).
BALLOON_TOLERANCE = 1024 * KIB


class GuestRequests:
    """LibxlBackend's requests to guests (mixed into it)."""

    def suspend(self, uuid, image, timeout=1200.0):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, ("running",))
            info = self._info(vm)
            header = {
                "uuid": uuid, "domain_type": info.domain_type,
                "memory_actual": info.memory_actual,
                "memory_target": info.memory_target,
                "vcpus": info.vcpus, "name": info.name,
                "config": vm.config or self._stored_config(vm),
                "saved_at": time.time(),
            }
            if vm.booting:
                # libxc cannot save a guest that has not yet published its
                # memory layout: wait until its PV drivers say they are up.
                # (A restored guest does not advertise again, but was up.)
                self._wait_feature(ctl, vm, "suspend", timeout,
                                   SuspendTimeout)
                vm.booting = False
            suspend_image.write_header(image, uuid, header)
            with self._lock:
                vm.awaiting = True
                vm.shutdown_reason = None
            try:
                # Asks the guest to suspend, then libxl-save-helper
                # writes its memory after our header.
                self._call("libxl_domain_suspend", self._ctx, vm.domid,
                           image, 0, self.ffi.NULL, uuid=uuid)
                with self._lock:
                    vm.quiet = True     # torn down below
            except LibxlError as e:
                self._cancel_suspend(vm)
                if e.rc in (errors.ERROR_GUEST_TIMEDOUT,
                            errors.ERROR_TIMEDOUT):
                    raise SuspendTimeout(uuid, timeout)
                raise ImageError(uuid, "saving the domain failed: %s" % e)
            finally:
                with self._lock:
                    vm.awaiting = False
            self._teardown(vm)

    def _cancel_suspend(self, vm):
        """After a failed save: a guest that had already suspended runs
        on (libxl's suspend_cancel, as xl save does on failure)."""
        di = self._dominfo(vm.domid, vm.uuid)
        if di is None or di.shutdown_reason != "suspend":
            return
        try:
            self._call("libxl_domain_resume", self._ctx, vm.domid, 1,
                       self.ffi.NULL, uuid=vm.uuid)
        except LibxlError as e:
            log.warning("VM %s: resuming after a failed save: %s",
                        vm.uuid, e)
            return
        # libxl reports a domain's shutdown once per death watch, and it
        # has reported the suspend: a fresh watch sees the next one.
        self._disable_events(vm)
        with self._lock:
            vm.shutdown_reason = None
        self._enable_events(vm)

    def set_memory_target(self, uuid, target):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, ("running", "paused"))
            target = int(target)
            static_max = self._static_max(vm)
            if not 0 < target <= static_max:
                raise InvalidSpec(uuid, "memory target %d outside "
                                  "(0, static_max]" % target)
            # enforce=0: keep Xen's maxmem at static_max so that the guest
            # may balloon back up.
            self._call("libxl_set_memory_target", self._ctx, vm.domid,
                       target // KIB, 0, 0, uuid=uuid)
            if self._state(vm) == "running":
                self._wait_guest(ctl, vm, lambda info: abs(
                    info.memory_actual - target) <= BALLOON_TOLERANCE)
            info = self._info(vm)
            self._emit(DomainEvent(uuid, vm.domid, "memory", info))
            return info

    def set_vcpus(self, uuid, n):
        ctl = self._control(uuid)
        with ctl.operation():
            vm = self._require(uuid, ("running", "paused"))
            vcpus_max = self._dominfo_of(vm).vcpu_max_id + 1
            if not 1 <= n <= vcpus_max:
                raise InvalidSpec(uuid, "%d vCPUs outside 1..%d"
                                  % (n, vcpus_max))
            ffi, lib = self.ffi, self.lib
            cpumap = ffi.new("libxl_bitmap *")
            lib.libxl_bitmap_init(cpumap)
            try:
                self._call("libxl_bitmap_alloc", self._ctx, cpumap,
                           vcpus_max)
                for i in range(n):
                    lib.libxl_bitmap_set(cpumap, i)
                self._call("libxl_set_vcpuonline", self._ctx, vm.domid,
                           cpumap, ffi.NULL, uuid=uuid)
            finally:
                lib.libxl_bitmap_dispose(cpumap)
            if self._state(vm) == "running":
                self._wait_guest(ctl, vm, lambda info: info.vcpus == n)
            info = self._info(vm)
            self._emit(DomainEvent(uuid, vm.domid, "vcpus", info))
            return info

    def _guest_request(self, ctl, vm, function, timeout, error):
        """Ask the guest (PV control node) to shut down or reboot and wait
        until it has; ``error`` after ``timeout``, Cancelled if
        interrupted."""
        with self._lock:
            vm.awaiting = True
            vm.shutdown_reason = None
        try:
            try:
                self._call(function, self._ctx, vm.domid, self.ffi.NULL,
                           uuid=vm.uuid)
            except LibxlError as e:
                if e.rc == errors.ERROR_NOPARAVIRT:
                    raise error(vm.uuid, timeout)
                raise
            with self._cond:
                done = self._cond.wait_for(
                    lambda: vm.shutdown_reason is not None or vm.dead
                    or ctl.cancel.is_set(), timeout)
                if ctl.cancel.is_set():
                    raise Cancelled(vm.uuid)
                if not done:
                    raise error(vm.uuid, timeout)
                # The caller tears the domain down: its death is no news.
                vm.quiet = True
        finally:
            with self._lock:
                vm.awaiting = False

    def _wait_feature(self, ctl, vm, feature, timeout, error):
        """Wait until the guest advertises control/feature-<feature>."""
        path = "/local/domain/%d/control/feature-%s" % (vm.domid, feature)
        deadline = time.monotonic() + timeout
        while self._xs_read(path) != "1":
            if time.monotonic() > deadline:
                raise error(vm.uuid, timeout)
            if ctl.cancel.wait(0.1):
                raise Cancelled(vm.uuid)

    def _wait_guest(self, ctl, vm, reached):
        deadline = time.monotonic() + GUEST_WAIT
        while not reached(self._info(vm)):
            if time.monotonic() > deadline:
                log.warning("VM %s: the guest did not follow within %gs",
                            vm.uuid, GUEST_WAIT)
                return
            if ctl.cancel.wait(0.1):
                raise Cancelled(vm.uuid)

    def _xs_read(self, path):
        ffi, lib = self.ffi, self.lib
        n = ffi.new("unsigned int *")
        value = lib.xs_read(self._xs, lib.XBT_NULL, path.encode(), n)
        if value == ffi.NULL:
            return None
        try:
            return bytes(ffi.buffer(value, n[0])).decode("utf-8", "replace")
        finally:
            lib.free(value)

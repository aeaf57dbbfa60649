"""
Claims: each use of a VDI's data on this host (a VBD of a running VM, an
HTTP import or export, a copy).  The driver keeps one activation per host,
so it is asked to attach and activate on the first claim and to deactivate
on the last; a database listener releases a VBD's claim when its device
goes away.

A VM's disk is a tracked writer when the backend says where its guest
writes (``guest_writes``, the simulator's model): those blocks are
marked in the VDI's changed-block log when the claim ends and before the
VDI is snapshotted; otherwise the whole log counts as changed.
"""

import os

from twisted.internet import defer
from twisted.logger import Logger

from txxapi import operations
from txxapi.errors import XenAPIError
from txxapi.storage.common import CLAIMS, translate
from txxapi.values import NULL_REF
from txstorage import cbt
from txstorage.errors import StorageError

log = Logger()


class Claims:
    """This host's uses of VDI data."""

    # The backend's disk_writes(path), if it can tell where guests write.
    guest_writes = None

    # --- claims: this host using a VDI's data --------------------------------

    def _claim_blocking(self, driver, sr_uuid, location, key, writable,
                        tracked=False):
        info = driver.vdi_attach(sr_uuid, location, writable)
        try:
            if writable and not tracked and getattr(info, "cbt_log", None):
                driver.vdi_cbt_untracked_writer(sr_uuid, location)
            with self._claim_lock:
                claims = self._claims.setdefault((sr_uuid, location), {})
                was_rw = any(claims.values())
                if not claims or (writable and not was_rw):
                    driver.vdi_activate(sr_uuid, location, writable or was_rw)
                claims[key] = writable
        except BaseException:
            with self._claim_lock:
                if not self._claims.get((sr_uuid, location)):
                    self._claims.pop((sr_uuid, location), None)
            driver.vdi_detach(sr_uuid, location)
            raise
        return info

    def _mark_guest_writes(self, info):
        """Mark in the changed-block log what guests wrote through the
        attach ``info`` (blocking)."""
        if self.guest_writes is None or info is None or not info.cbt_log:
            return

        def mark(extents):
            # A log disabled since the attach has gone: nothing to mark,
            # and a release must not fail for it.
            if os.path.exists(info.cbt_log):
                try:
                    cbt.mark(info.cbt_log, extents)
                except (OSError, StorageError) as e:
                    log.warn("marking guest writes in {log}: {error}",
                             log=info.cbt_log, error=e)
        # The backend forgets them once they are marked.
        self.guest_writes(info.path, mark)

    def guest_writes_marked(self, vdi):
        """A Deferred that fires once what guests wrote on ``vdi`` so far
        is in its changed-block log."""
        infos = [use.info for (ref, _), use in self._uses.items()
                 if ref == vdi and use.info is not None]
        if self.guest_writes is None or not infos:
            return defer.succeed(None)
        return self.run(lambda: [self._mark_guest_writes(i) for i in infos])

    def log_started(self, vdi):
        """A Deferred: the VDI's changed-block log was just started while
        it is in use.  Its users learn where the log is (a tracked
        writer marks it from now on); an untracked writer makes every
        block count, as at its attach."""
        uses = [u for (ref, _), u in self._uses.items()
                if ref == vdi and u.info is not None and u.writable]
        if not uses:
            return defer.succeed(None)
        driver = self.driver_of(uses[0].sr)[0]

        def start(use):
            use.info.cbt_log = driver.vdi_cbt_log(use.sr_uuid, use.location)
            if not use.tracked and use.info.cbt_log:
                driver.vdi_cbt_untracked_writer(use.sr_uuid, use.location)
        return self.run(lambda: [start(u) for u in uses])

    def _release_blocking(self, driver, sr_uuid, location, key, info=None):
        self._mark_guest_writes(info)
        with self._claim_lock:
            claims = self._claims.get((sr_uuid, location), {})
            if key not in claims:
                return
            writable = claims.pop(key)
            if not claims:
                del self._claims[(sr_uuid, location)]
                driver.vdi_deactivate(sr_uuid, location)
            elif writable and not any(claims.values()):
                driver.vdi_activate(sr_uuid, location, False)
        driver.vdi_detach(sr_uuid, location)

    def attach(self, vdi, writable, key, tracked=False):
        """Attach and activate ``vdi`` on this host for one user (``key``,
        e.g. a VBD ref): a Deferred of its AttachInfo (``.path``,
        ``.format``), which ``path_of`` also answers until ``detach``.
        The use counts from this call on (CLAIMS).  tracked: the writer
        marks the VDI's changed-block log itself (the data paths); any
        other writer makes the whole log count as changed."""
        f = self.db.fields("VDI", vdi)
        sr = f["SR"]
        self.assert_plugged(sr)
        driver, sr_uuid = self.driver_of(sr)
        if (vdi, key) in self._uses:
            raise XenAPIError("INTERNAL_ERROR", "VDI %s already attached "
                              "for %s" % (vdi, key))
        use = Use(writable, sr, sr_uuid, f["location"], tracked)
        self._uses[(vdi, key)] = use
        CLAIMS.setdefault(vdi, {})[key] = writable
        self._refresh_later(vdi)
        d = self.run(self._claim_blocking, driver, sr_uuid, f["location"],
                     key, writable, tracked)

        def attached(info):
            use.info = info
            use.settle(True)
            return info

        def failed(failure):
            use.settle(False)
            if self._uses.get((vdi, key)) is use:
                self._forget_use(vdi, key)
            return translate(failure, sr, vdi)
        return d.addCallbacks(attached, failed)

    def _forget_use(self, vdi, key):
        self._uses.pop((vdi, key), None)
        users = CLAIMS.get(vdi)
        if users is not None:
            users.pop(key, None)
            if not users:
                CLAIMS.pop(vdi, None)
        self._refresh_later(vdi)

    def _refresh_later(self, vdi):
        """Recompute the VDI's allowed_operations in a later turn: this
        may run inside a database listener, which must not write."""
        def refresh():
            if self.db.exists("VDI", vdi):
                operations.refresh(self.db, "VDI", vdi)
        self.clock.callLater(0, refresh)

    def detach(self, vdi, key):
        """Undo ``attach`` (a Deferred); detaching twice is harmless.  The
        use stops counting at once; ``settled`` waits for the driver."""
        use = self._uses.get((vdi, key))
        if use is None:
            return defer.succeed(None)
        self._forget_use(vdi, key)
        done = defer.Deferred()
        self._releasing.setdefault(vdi, []).append(done)

        def release(attached):
            if not attached:
                return None
            try:
                driver = self.driver_of(use.sr)[0]
            except XenAPIError:
                return None
            return self.run(self._release_blocking, driver, use.sr_uuid,
                            use.location, key, use.info)

        def finished(result):
            pending = self._releasing.get(vdi, [])
            if done in pending:
                pending.remove(done)
            if not pending:
                self._releasing.pop(vdi, None)
            done.callback(None)
            return result
        # An attach still under way is released once it has happened.
        d = use.settled().addCallback(release)
        d.addBoth(finished)
        return d.addErrback(translate, use.sr, vdi)

    def settled(self, vdi=None):
        """A Deferred that fires when the releases under way (of ``vdi``,
        or all) have reached the driver."""
        if vdi is None:
            pending = [d for ds in self._releasing.values() for d in ds]
        else:
            pending = list(self._releasing.get(vdi, []))
        waits = []
        for d in pending:
            w = defer.Deferred()
            d.addBoth(lambda r, w=w: (w.callback(None), r)[1])
            waits.append(w)
        return defer.DeferredList(waits)

    def detach_key(self, key, keep=None):
        """Release every VDI attached for ``key`` but ``keep`` (in the
        background; failures are logged)."""
        for vdi, k in list(self._uses):
            if k == key and vdi != keep:
                self.detach(vdi, key).addErrback(
                    lambda f, vdi=vdi: log.warn(
                        "releasing {vdi}: {error}", vdi=vdi,
                        error=f.getErrorMessage()))

    def path_of(self, vdi, key=None):
        """The path an attach of ``vdi`` returned, or None."""
        for (ref, k), use in self._uses.items():
            if ref == vdi and use.info is not None and (key is None or
                                                        k == key):
                return use.info.path
        return None

    def attached_for(self, vdi, key):
        return (vdi, key) in self._uses

    def assert_attachable(self, vdi, key, writable):
        """XAPI's sharing rule for a VBD: a VDI that is not sharable may
        have one writer, or readers only; system domains and suspended
        VMs do not count."""
        db = self.db
        f = db.fields("VDI", vdi)
        if writable and f["read_only"]:
            raise XenAPIError("VDI_READONLY", vdi)
        if f["sharable"]:
            return
        users = dict(CLAIMS.get(vdi, {}))
        for vbd in db.where("VBD", VDI=vdi):
            g = db.fields("VBD", vbd)
            if g["currently_attached"] or g["current_operations"]:
                users.setdefault(vbd, g["mode"] == "RW")
        users.pop(key, None)
        for other in list(users):
            if db.exists("VBD", other):
                vm = db.fields("VBD", other)["VM"]
                if db.exists("VM", vm) and (
                        db.fields("VM", vm)["power_state"] == "Suspended"
                        or db.fields("VM", vm)["is_control_domain"]):
                    del users[other]
        if any(users.values()) or (writable and users):
            raise XenAPIError("VDI_IN_USE", vdi)

    def _changed(self, record, cls):
        """Database listener: a VBD's data is released when its device
        goes away (VM halted or suspended, VBD unplugged, emptied, moved
        to another VDI, destroyed)."""
        _, op, table, ref, fields = record
        if table == "VBD":
            vdi = (fields or {}).get("VDI")
            if vdi is None and op != "del":
                vdi = self.db.fields("VBD", ref)["VDI"]
            # (allowed_operations are the master's to recompute for the
            # changes it wrote itself.)
            if vdi is not None and vdi != NULL_REF and \
                    not self.db.replicated:
                self._refresh_later(vdi)
            if op == "del" or (op == "mod" and (
                    fields.get("currently_attached") is False or
                    fields.get("empty") is True)):
                self.detach_key(ref)
            elif op == "mod" and "VDI" in fields:
                self.detach_key(ref, keep=fields["VDI"])
        elif table == "VM" and op == "mod" and \
                fields.get("power_state") in ("Halted", "Suspended"):
            for vbd in self.db.where("VBD", VM=ref):
                self.detach_key(vbd)



class Use:
    """One claim on a VDI by this host: where it lives, and the attach
    that made it (settle(ok) when that is over)."""

    def __init__(self, writable, sr, sr_uuid, location, tracked=False):
        self.writable = writable
        self.tracked = tracked      # marks the changed-block log itself
        self.sr = sr
        self.sr_uuid = sr_uuid
        self.location = location
        self.info = None
        self._outcome = None
        self._waiting = []

    def settle(self, ok):
        self._outcome = ok
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(ok)

    def settled(self):
        """A Deferred of whether the attach succeeded, once it is over."""
        if self._outcome is not None:
            return defer.succeed(self._outcome)
        d = defer.Deferred()
        self._waiting.append(d)
        return d

"""
The RRDs of this host, as xcp-rrdd holds them: one for the host, one per
VM with a domain here, one per SR plugged here, each with the data
sources its owner offers now (its live definitions, which may include
sources not recorded yet).  A VM's RRD is set aside when its domain goes
and taken up again when it comes back, so its history survives a
shutdown.  On a pool's master it also keeps what the other hosts send
(txxapi.metrics.handover): the RRDs of VMs stopped there, and their
backups of their own and of their SRs'.

Everything here runs on threads (the collector's updates, the HTTP
renderers, the API's queries), under one lock; the reactor never waits
for it.
"""

import threading
import time

from txxapi.metrics import formats
from txxapi.metrics.rrd import AVERAGE, RRD, NoArchive, archive_specs

HOST, VM, SR = "host", "vm", "sr"


def _newest_archive(rrd, now):
    """The archive whose newest row is a source's newest 5 s average (as
    query_named_ds picks it), None if there is none."""
    try:
        archives = rrd.best_archives(0, AVERAGE, now)
    except NoArchive:
        return None
    return archives[0] if archives else None


class DatasourceMissing(Exception):
    """rrdd's Datasource_missing: no RRD, or no such live source."""


class Owner:
    """An RRD and whose it is.  ``domid``: the domain feeding it (0 for
    a host's or an SR's), None for one read back or sent from another
    host, which the next readings carry on."""

    __slots__ = ("kind", "uuid", "rrd", "definitions", "domid")

    def __init__(self, kind, uuid, rrd, definitions=None, domid=None):
        self.kind = kind
        self.uuid = uuid
        self.rrd = rrd
        self.definitions = definitions or {}
        self.domid = domid


class MetricsStore:
    def __init__(self, step):
        self.step = step
        self.lock = threading.Lock()
        self.host = None
        self.vms = {}           # uuid -> Owner, domains here now
        self.set_aside = {}     # uuid -> Owner, VMs without a domain here
        self.srs = {}
        self.archived_hosts = {}    # uuid -> Owner, other hosts' backups
        # uuid -> domid of a VM whose RRD went with its domain to another
        # host: that domain's last readings here start no new RRD.
        self.handed_over = {}

    # --- updates (the collector's thread) -----------------------------------

    def update(self, timestamp, host, vms, srs, min_max):
        """One sample: ``host`` (uuid, definitions, readings), ``vms``
        [(uuid, domid, definitions, readings)], ``srs`` [(uuid,
        definitions, readings)].  ``min_max``: whether new VM and SR RRDs
        get MIN and MAX archives (host RRDs always do).  Answers (the
        uuids of the VMs whose domains went since the last sample, those
        whose domains came)."""
        with self.lock:
            uuid, defs, values = host
            self.host = self._take(self.host, HOST, uuid, 0, defs, values,
                                   timestamp, True)
            seen = {}
            handed = {}
            for uuid, domid, defs, values in vms:
                if self.handed_over.get(uuid) == domid:
                    handed[uuid] = domid
                    continue
                owner = self.vms.pop(uuid, None) or \
                    self.set_aside.pop(uuid, None)
                seen[uuid] = self._take(owner, VM, uuid, domid, defs, values,
                                        timestamp, min_max)
            gone = [uuid for uuid in self.vms if uuid not in seen]
            came = [uuid for uuid in seen if uuid not in self.vms]
            self.set_aside.update(self.vms)
            self.vms = seen
            self.handed_over = handed
            live = {}
            for uuid, defs, values in srs:
                live[uuid] = self._take(self.srs.get(uuid), SR, uuid, 0,
                                        defs, values, timestamp, min_max)
            # An SR unplugged here keeps its RRD until it is forgotten.
            for uuid, owner in self.srs.items():
                live.setdefault(uuid, owner)
            self.srs = live
            return gone, came

    def _take(self, owner, kind, uuid, domid, defs, values, timestamp,
              min_max):
        if owner is None or owner.uuid != uuid:
            # A fresh RRD starts at this sample; its first readings only
            # prime the DERIVE sources (rrd_create).
            sources = [d.data_source() for d in defs.values() if d.default]
            rrd = RRD(self.step, sources, archive_specs(min_max), timestamp)
            for archive in rrd.archives:
                if archive.pdp_per_row == 1:
                    formats.blank(archive)
            for ds in rrd.sources:
                ds.last = values.get(ds.name)
            return Owner(kind, uuid, rrd, dict(defs), domid)
        rrd = owner.rrd
        if owner.domid is None:
            # Read back or sent here: its sources learn again what only
            # the definitions say.
            for ds in rrd.sources:
                d = defs.get(ds.name)
                if d is not None:
                    ds.inverse = d.inverse
        for name, d in defs.items():
            if d.default and name not in rrd:
                rrd.add_source(d.data_source(), timestamp)
        owner.definitions.update(defs)
        rrd.update(timestamp, values,
                   new=owner.domid is not None and domid != owner.domid)
        owner.domid = domid
        for archive in rrd.archives:
            if archive.pdp_per_row == 1:
                # The newest 5 s row printed here as it is made (a row
                # once per sample): the first client to ask for the last
                # minutes finds them printed.
                formats.row_text(archive, 0)
        return owner

    # --- what the API asks ----------------------------------------------------

    def _owner(self, kind, uuid):
        if kind == HOST:
            return self.host
        if kind == VM:
            return self.vms.get(uuid)
        return self.srs.get(uuid)

    def holds_vm(self, uuid):
        """(whether the live RRD of a VM, one running here, is here,
        whether one set aside is)."""
        with self.lock:
            return uuid in self.vms, uuid in self.set_aside

    def data_sources(self, kind, uuid):
        """XAPI's data_source records of an owner, by name: its live
        sources (enabled when recorded) and the recorded ones it no longer
        offers (query_possible_dss).  A recorded source's value is its
        newest 5 s average, what query_data_source answers (XAPI leaves
        it 0); one not recorded has none and says 0."""
        with self.lock:
            owner = self._owner(kind, uuid)
            if owner is None:
                return []
            rrd = owner.rrd
            archive = _newest_archive(rrd, int(time.time()))
            values = {ds.name: archive.peek(i, 0) if archive else 0.0
                      for i, ds in enumerate(rrd.sources)}
            out = {}
            for name, d in owner.definitions.items():
                out[name] = {
                    "name_label": name, "name_description": d.description,
                    "enabled": name in values, "standard": d.default,
                    "units": d.units, "min": d.min, "max": d.max,
                    "value": values.get(name, 0.0)}
            for ds in rrd.sources:
                out.setdefault(ds.name, {
                    "name_label": ds.name,
                    "name_description": "description not available",
                    "enabled": False, "standard": False, "units": "unknown",
                    "min": ds.min, "max": ds.max, "value": values[ds.name]})
            return [out[name] for name in sorted(out)]

    def _missing(self, kind, uuid):
        if kind == HOST:
            return DatasourceMissing("No host datasource!")
        return DatasourceMissing("%s: %s" % ("VM" if kind == VM else "SR",
                                             uuid))

    def query(self, kind, uuid, name):
        """The newest 5 s average of a source; rrd.UnknownSource,
        rrd.NoArchive or DatasourceMissing."""
        with self.lock:
            owner = self._owner(kind, uuid)
            if owner is None:
                raise self._missing(kind, uuid)
            return owner.rrd.query(name, time.time())

    def record(self, kind, uuid, name):
        """Start recording a live source (add_ds)."""
        with self.lock:
            owner = self._owner(kind, uuid)
            if owner is None:
                if kind == HOST:
                    return
                raise self._missing(kind, uuid)
            d = owner.definitions.get(name)
            if d is None:
                raise DatasourceMissing(name)
            owner.rrd.add_source(d.data_source(), time.time())

    def forget(self, kind, uuid, name):
        """Drop a source's archives (idempotent, as rrd_remove_ds)."""
        with self.lock:
            owner = self._owner(kind, uuid)
            if owner is not None:
                owner.rrd.remove_source(name)

    def latest(self, described=False):
        """[(kind, uuid, [(name, value)])] of every live RRD: the newest
        5 s average of each recorded source (for perfmon), with each
        source's definition after its value if ``described`` (for
        /metrics; None where the owner no longer offers it)."""
        with self.lock:
            owners = ([self.host] if self.host else []) + \
                list(self.vms.values()) + list(self.srs.values())
            out = []
            now = int(time.time())
            for owner in owners:
                rrd = owner.rrd
                archive = _newest_archive(rrd, now)
                if archive is None:
                    continue
                defs = owner.definitions
                out.append((owner.kind, owner.uuid, [
                    (ds.name, archive.peek(i, 0), defs.get(ds.name))
                    if described else (ds.name, archive.peek(i, 0))
                    for i, ds in enumerate(rrd.sources)]))
            return out

    # --- documents ---------------------------------------------------------------

    def updates(self, start, interval, cf, host, vm_uuids, sr_uuids, json):
        """The /rrd_updates document: the host's RRD if ``host``, the VMs
        here (all, or those of ``vm_uuids``), the SRs of ``sr_uuids``
        (none by default).  NoArchive when nothing answers."""
        with self.lock:
            prefixed = []
            if host and self.host is not None:
                prefixed.append(("host:%s:" % self.host.uuid, self.host.rrd))
            for uuid, owner in self.vms.items():
                if vm_uuids is None or uuid in vm_uuids:
                    prefixed.append(("vm:%s:" % uuid, owner.rrd))
            for uuid, owner in self.srs.items():
                if sr_uuids is not None and uuid in sr_uuids:
                    prefixed.append(("sr:%s:" % uuid, owner.rrd))
            x = formats.export(prefixed, start, interval, cf)
            return formats.xport_json(x) if json else formats.xport_xml(x)

    def dump(self, kind, uuid, json):
        """A whole RRD as /host_rrd and friends serve it, None if there is
        none (a VM's set-aside RRD counts)."""
        with self.lock:
            owner = self._owner(kind, uuid)
            if owner is None and kind == VM:
                owner = self.set_aside.get(uuid)
            if owner is None:
                return None
            return (formats.rrd_json if json else formats.rrd_xml)(
                owner.rrd)

    # --- keeping -----------------------------------------------------------------

    def uuids(self):
        """The uuids of every RRD kept here."""
        with self.lock:
            return [owner.uuid for owner in self._owners()]

    def _owners(self):
        return ([self.host] if self.host else []) + \
            list(self.vms.values()) + list(self.set_aside.values()) + \
            list(self.srs.values()) + list(self.archived_hosts.values())

    def _kept(self, uuid):
        if self.host is not None and self.host.uuid == uuid:
            return self.host
        for table in (self.vms, self.set_aside, self.srs,
                      self.archived_hosts):
            owner = table.get(uuid)
            if owner is not None:
                return owner
        return None

    def copy_if_behind(self, uuid, written, state):
        """A copy of the RRD of ``uuid`` unless ``state(rrd)`` is
        ``written`` (its file holds it), or there is none now."""
        with self.lock:
            owner = self._kept(uuid)
            if owner is None or state(owner.rrd) == written:
                return None
            return owner.rrd.copy()

    def restore(self, owners, host_uuid=None):
        """RRDs read back at start, [(kind, uuid, domid, rrd)]: VMs' are
        set aside until their domains are sampled; other hosts' than
        ``host_uuid`` are their backups."""
        with self.lock:
            for kind, uuid, domid, rrd in owners:
                owner = Owner(kind, uuid, rrd, domid=domid)
                if kind == HOST and host_uuid not in (None, uuid):
                    self.archived_hosts[uuid] = owner
                elif kind == HOST:
                    self.host = owner
                elif kind == VM:
                    self.set_aside[uuid] = owner
                else:
                    self.srs[uuid] = owner

    def prune(self, vm_uuids, sr_uuids, host_uuids):
        """Forget the RRDs of VMs, SRs and hosts that no longer exist."""
        with self.lock:
            for table, known in ((self.set_aside, vm_uuids),
                                 (self.srs, sr_uuids),
                                 (self.archived_hosts, host_uuids)):
                for uuid in [u for u in table if u not in known]:
                    del table[uuid]

    # --- between the pool's hosts (txxapi.metrics.handover) -------------------

    def has_host(self):
        with self.lock:
            return self.host is not None

    def set_aside_vms(self):
        with self.lock:
            return list(self.set_aside)

    def unknown_vms(self, uuids):
        """Those of ``uuids`` this host keeps no RRD of."""
        with self.lock:
            return [u for u in uuids
                    if u not in self.vms and u not in self.set_aside]

    def unknown_srs(self, uuids):
        """Those of ``uuids`` this host keeps no SR RRD of."""
        with self.lock:
            return [u for u in uuids if u not in self.srs]

    def kept(self, kind, uuid, host_uuid):
        """A copy of the RRD kept here for ``uuid`` (a VM's, an SR's,
        this host's or a backup of another's), None without one."""
        with self.lock:
            if kind == VM:
                owner = self.vms.get(uuid) or self.set_aside.get(uuid)
            elif kind == SR:
                owner = self.srs.get(uuid)
            elif uuid == host_uuid:
                owner = self.host
            else:
                owner = self.archived_hosts.get(uuid)
            return None if owner is None else owner.rrd.copy()

    def backup(self):
        """[(kind, uuid, copy)] of this host's RRD, its VMs' live ones
        and its SRs' (backup_rrds)."""
        with self.lock:
            owners = ([self.host] if self.host else []) + \
                list(self.vms.values()) + list(self.srs.values())
            return [(o.kind, o.uuid, o.rrd.copy()) for o in owners]

    def archived_host_uuids(self):
        with self.lock:
            return list(self.archived_hosts)

    def release(self, kind, uuid, live=False):
        """Let an RRD go to another host: the Owner, forgotten here (None
        if there is none).  A VM's (``live``: the RRD of its domain here,
        a migration's, whose domain may not have been sampled gone yet;
        readings of that domain start no new one); another host's
        backup."""
        with self.lock:
            if kind == HOST:
                return self.archived_hosts.pop(uuid, None)
            owner = self.vms.pop(uuid, None) if live else None
            if owner is not None:
                self.handed_over[uuid] = owner.domid
            else:
                owner = self.set_aside.pop(uuid, None)
            return owner

    def put_back(self, owner):
        """An Owner ``release`` gave that could not be sent: kept as it
        was, to be sent again, unless a newer RRD of it is here now (its
        domain came back).  Whether it was kept."""
        with self.lock:
            if owner.kind == HOST:
                return self.archived_hosts.setdefault(owner.uuid,
                                                      owner) is owner
            if owner.uuid in self.vms or owner.uuid in self.set_aside:
                return False
            self.set_aside[owner.uuid] = owner
            return True

    def receive(self, kind, uuid, rrd, archive, host_uuid):
        """An RRD another host sent.  To keep (``archive``): a VM's unless
        its domain runs here, an SR's unless this host has one of it,
        another host's backup.  To carry on: a VM's replaces the one this
        host began for its domain, taking up its history."""
        owner = Owner(kind, uuid, rrd)
        with self.lock:
            if kind == VM and archive:
                if uuid not in self.vms:
                    self.set_aside[uuid] = owner
            elif kind == VM:
                live = self.vms.get(uuid)
                if live is None:
                    self.set_aside[uuid] = owner
                else:
                    live.rrd, live.domid = rrd, None
            elif kind == SR and archive:
                self.srs.setdefault(uuid, owner)
            elif kind == HOST and archive and uuid != host_uuid:
                self.archived_hosts[uuid] = owner

    def adopt(self, kind, uuid, rrd):
        """The master's copy, fetched as a domain starts here, as an SR
        is plugged or as the host starts without its own: taken where
        nothing newer came."""
        with self.lock:
            owner = Owner(kind, uuid, rrd)
            if kind == VM and uuid not in self.vms and \
                    uuid not in self.set_aside:
                self.set_aside[uuid] = owner
            elif kind == SR:
                self.srs.setdefault(uuid, owner)
            elif kind == HOST and self.host is None:
                self.host = owner

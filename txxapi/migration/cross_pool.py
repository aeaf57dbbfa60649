"""
VM.migrate_send and VM.assert_can_migrate to another pool: ``dest`` is
the map that pool's host.migrate_receive answered (remote_pool.py), its
host not one of ours.  As XAPI's storage motion does it:

- checks here: every disk of the VM is in vdi_map (VDI_NOT_IN_MAP; an
  empty or CD drive is not a disk), every VIF in vif_map or sharing the
  MAC of one that is (VIF_NOT_IN_MAP); then there: the host enabled
  (HOST_DISABLED) and not older (VM_HOST_INCOMPATIBLE_VERSION_MIGRATE),
  each SR of vdi_map plugged on it (VM_REQUIRES_SR), each network of
  vif_map known, and for a running VM the host's free memory
  (HOST_NOT_ENOUGH_FREE_MEMORY); a suspended VM's image goes to the SR
  vdi_map gives it, else to the one XAPI picks there;
- the move: each disk copied into a new VDI of its SR there; the VM's
  metadata imported there (restored: the same uuid, MACs and device
  uuids), its disks and VIFs linked to the new VDIs and the networks of
  vif_map; a running VM's memory then sent to the host with the
  migration stream (txxapi.migration.stream), where it runs on; only
  then is the VM removed here with its disks, its messages sent there
  first, and a running VM's RRD sent to its host there (PUT /rrd in
  our session there, as XAPI's).  The call answers the VM's ref in the
  other pool.

A running VM's disks are not mirrored as XAPI mirrors them (its writes
sent to both sides); they are pre-copied: each disk's snapshot copied
while the guest runs, then the guest paused and only the blocks it wrote
since sent, then its memory; it runs on over there once that has moved
(or here again, if the move fails).  Any failure before the
end (a cancel of its task too: between steps, or while the memory is
sent) destroys what was made there (the VM, the VDIs) and leaves the VM
here as it was; a suspended VM arrives suspended.  The VM's snapshots go
with it (their disks copied whole, to the SR vdi_map gives them or their
disk's, else the default SR there; linked as snapshots of the copies).

Copy mode (options copy=true), as XAPI's: a halted VM only (else
VM_BAD_POWER_STATE; not within the pool: OPERATION_NOT_ALLOWED), its
disks copied and its metadata imported there as a new VM (not restored:
a new uuid), without its snapshots; the VM here stays, with its messages.
Not built: a VM with checkpoints, a copy under force=true of a VM that
is not halted (NOT_IMPLEMENTED).
"""

from twisted.internet import defer
from twisted.logger import Logger

from txxapi import operations, vmspec
from txxapi.errors import XenAPIError
from txxapi.forwarding import hosts, remote as pool_calls
from txxapi.impl import vm_config
from txxapi.metrics import storage as rrd_storage, transfer
from txxapi.metrics.store import VM as VM_RRD
from txxapi.migration import live_copy, remote_pool, sender
from txxapi.migration.remote_pool import RemotePool
from txxapi.values import NULL_REF, DateTime
from txxapi.xva import ova, streams
from txxapi.xva.restore import MAPS_TO
from txxenops.errors import MigrationError

log = Logger()

# The share of a move's progress that its disks' copies make.
DISKS_PROGRESS = 0.8


def is_cross_pool(ctx, dest):
    return not ctx.db.exists("host", dest.get("host", ""))


def _disks(db, vm):
    """(VBD, VDI) of the VM's disks (not its empty or CD drives)."""
    out = []
    for vbd in sorted(db.where("VBD", VM=vm)):
        f = db.fields("VBD", vbd)
        if not f["empty"] and f["type"] != "CD" and \
                db.exists("VDI", f["VDI"]):
            out.append((vbd, f["VDI"]))
    return out


def _image(db, vm):
    """A suspended VM's suspend image, else None."""
    f = db.fields("VM", vm)
    if f["power_state"] == "Suspended" and db.exists("VDI", f["suspend_VDI"]):
        return f["suspend_VDI"]
    return None


def _snapshots(db, vm):
    return sorted(db.where("VM", snapshot_of=vm))


def vifs_mapped(db, vm, vif_map, snapshots=True):
    """{VIF: remote network} of all the VIFs of the VM (and its
    snapshots): a VIF not in the map takes the network of a mapped VIF
    with its MAC (as XAPI infers it)."""
    by_mac = {db.fields("VIF", v)["MAC"]: n for v, n in vif_map.items()}
    owners = [vm] + (_snapshots(db, vm) if snapshots else [])
    out = {}
    for vif in sorted(v for owner in owners
                      for v in db.where("VIF", VM=owner)):
        network = vif_map.get(vif) or by_mac.get(db.fields("VIF", vif)["MAC"])
        if network is None:
            raise XenAPIError("VIF_NOT_IN_MAP", vif)
        out[vif] = network
    return out


def assert_local(ctx, vm, dest, vdi_map, vif_map, options):
    """What this pool's records say (before the VM is marked)."""
    remote_pool.assert_dest(dest)
    db = ctx.db
    db.fields("VM", vm)
    for vdi in vdi_map:
        db.fields("VDI", vdi)
    for vif in vif_map:
        db.fields("VIF", vif)
    copy = copying(options)
    for snapshot in [] if copy else db.where("VM", snapshot_of=vm):
        if db.fields("VM", snapshot)["power_state"] != "Halted":
            raise XenAPIError("NOT_IMPLEMENTED", "VM.migrate_send of a VM "
                              "with checkpoints to another pool")
    for _, vdi in _disks(db, vm):
        if vdi not in vdi_map:
            raise XenAPIError("VDI_NOT_IN_MAP", vdi)
    vifs_mapped(db, vm, vif_map, snapshots=not copy)


def copying(options):
    """Copy mode (options copy=true, as XAPI reads the flag): the VM is
    made there and stays here."""
    return options.get("copy") == "true"


def assert_copyable(db, vm, options):
    """XAPI copies only a halted VM to another pool (under force=true it
    would copy a running one's disks as they run: not built here)."""
    power = db.fields("VM", vm)["power_state"]
    if power == "Halted":
        return
    if options.get("force") == "true":
        raise XenAPIError("NOT_IMPLEMENTED", "VM.migrate_send with "
                          "copy=true of a VM that is not halted")
    raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", power.lower())


def _version(software_version):
    text = software_version.get("platform_version", "")
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return ()


def _snapshot_disks(db, vm):
    """(VBD, VDI) of the disks of the VM's snapshots (not its own)."""
    own = {vdi for _, vdi in _disks(db, vm)}
    out = []
    for snapshot in _snapshots(db, vm):
        out += [(vbd, vdi) for vbd, vdi in _disks(db, snapshot)
                if vdi not in own]
    return out


@defer.inlineCallbacks
def _snapshot_sr(db, vdi, remote, vdi_map):
    """Where a snapshot's disk goes there: the SR vdi_map gives it, else
    that of the disk it is a snapshot of, else the pool's default SR (as
    XAPI places it; VDI_NOT_IN_MAP if none)."""
    of = db.fields("VDI", vdi)["snapshot_of"]
    for key in (vdi, of):
        if key in vdi_map:
            return vdi_map[key]
    pool, = yield remote.call("pool.get_all")
    sr = yield remote.call("pool.get_default_SR", pool)
    if sr == NULL_REF:
        raise XenAPIError("VDI_NOT_IN_MAP", vdi)
    return sr


@defer.inlineCallbacks
def _image_sr(ctx, vm, remote, vdi_map):
    """Where a suspend image goes there: the SR vdi_map gives it, else,
    as XAPI places it, the pool's suspend_image_SR, the host's
    suspend_image_sr, the pool's default SR (VDI_NOT_IN_MAP if none)."""
    image = _image(ctx.db, vm)
    if image in vdi_map:
        return vdi_map[image]
    pool, = yield remote.call("pool.get_all")
    for method, ref in (("pool.get_suspend_image_SR", pool),
                        ("host.get_suspend_image_sr", remote.host),
                        ("pool.get_default_SR", pool)):
        sr = yield remote.call(method, ref)
        if sr != NULL_REF:
            return sr
    raise XenAPIError("VDI_NOT_IN_MAP", image)


@defer.inlineCallbacks
def assert_remote(ctx, vm, remote, vdi_map, vif_map, options):
    """What the other pool says: the host, its SRs, networks, memory.
    The SR there of each disk (and suspend image) of the VM."""
    db = ctx.db
    f = db.fields("VM", vm)
    host = yield remote.call("host.get_record", remote.host)
    if not host["enabled"]:
        raise XenAPIError("HOST_DISABLED", remote.host)
    ours = db.fields("host", ctx.server.host_ref)["software_version"]
    if _version(host["software_version"]) < _version(ours):
        raise XenAPIError("VM_HOST_INCOMPATIBLE_VERSION_MIGRATE", vm,
                          remote.host)
    copy = copying(options)
    if copy:
        assert_copyable(db, vm, options)
    targets = {vdi: vdi_map[vdi] for _, vdi in _disks(db, vm)}
    for _, vdi in [] if copy else _snapshot_disks(db, vm):
        targets[vdi] = yield _snapshot_sr(db, vdi, remote, vdi_map)
    image = _image(db, vm)
    if image is not None:
        targets[image] = yield _image_sr(ctx, vm, remote, vdi_map)
    for sr in sorted(set(targets.values())):
        pbds = yield remote.call("SR.get_PBDs", sr)
        seen = False
        for pbd in pbds:
            record = yield remote.call("PBD.get_record", pbd)
            seen = seen or (record["host"] == remote.host and
                            record["currently_attached"])
        if not seen:
            raise XenAPIError("VM_REQUIRES_SR", vm, sr)
    for network in sorted(set(vifs_mapped(db, vm, vif_map,
                                          not copy).values())):
        yield remote.call("network.get_uuid", network)
    if f["power_state"] == "Running":
        free = int((yield remote.call("host.compute_free_memory",
                                      remote.host)))
        needed = vmspec.start_memory(f)
        if free < needed:
            raise XenAPIError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed),
                              str(free))
    return targets


@defer.inlineCallbacks
def assert_can_migrate(ctx, vm, dest, vdi_map, vif_map, options):
    operations.check(ctx, "VM", vm, "migrate_send")
    assert_local(ctx, vm, dest, vdi_map, vif_map, options)
    remote = RemotePool(ctx.server.reactor, dest)
    yield assert_remote(ctx, vm, remote, vdi_map, vif_map, options)


def _metadata(ctx, vm, copies, networks, snapshots=True):
    """The tar of the VM's ova.xml (with its snapshots'), its disks and
    VIFs naming what stands for them in the other pool (XAPI's
    maps_to)."""
    db = ctx.db
    walk = ova.Walk(db)
    walk.vm(vm, snapshots=snapshots, preserve_power_state=True)
    objs = ova.objects(db, walk, True, True)
    named = {walk.lookup(ref): there
             for ref, there in list(copies.items()) + list(networks.items())}
    for obj in objs:
        there = named.get(obj["id"])
        if there is not None:
            snapshot = obj["snapshot"]
            snapshot["other_config"] = dict(snapshot.get("other_config")
                                            or {}, **{MAPS_TO: there})
    return streams.metadata_tar(ova.document(db, ctx.server.host_ref, objs,
                                             DateTime.now()))


def _new_vdi(db, vdi, sr):
    f = db.fields("VDI", vdi)
    return {"name_label": f["name_label"],
            "name_description": f["name_description"], "SR": sr,
            "virtual_size": str(f["virtual_size"]), "type": f["type"],
            "sharable": f["sharable"], "read_only": f["read_only"],
            "other_config": dict(f["other_config"]),
            "xenstore_data": dict(f["xenstore_data"]), "sm_config": {},
            "tags": list(f["tags"])}


class Move:
    """One VM's move to another pool, and what it made there."""

    def __init__(self, ctx, vm, remote, targets, vif_map, copy=False):
        self.ctx = ctx
        self.db = ctx.db
        self.vm = vm
        self.remote = remote
        self.targets = targets      # VDI here -> SR there
        # A copy: a new VM there (its snapshots not sent), this one stays.
        self.copy = copy
        self.networks = vifs_mapped(ctx.db, vm, vif_map, not copy)
        self.uuid = ctx.db.fields("VM", vm)["uuid"]
        self.copies = {}        # VDI here -> its copy there
        self.snapshots = {}     # VDI here -> (its VBD, its snapshot)
        self.imported = None    # the VM there
        self.imported_snapshots = []

    @defer.inlineCallbacks
    def copy_disks(self, running):
        """Each disk into a new VDI there (a running VM's from a snapshot,
        its writes since to follow: copy_changes); the task's progress
        counts the bytes copied (up to DISKS_PROGRESS)."""
        db, server = self.db, self.ctx.server
        disks = _disks(db, self.vm)
        # A snapshot's disk does not change: copied as it is.
        if not self.copy:
            disks += [(None, vdi) for _, vdi in _snapshot_disks(db,
                                                                 self.vm)]
        image = _image(db, self.vm)
        if image is not None:
            disks.append((None, image))
        total = sum(db.fields("VDI", v)["virtual_size"] for _, v in disks)
        done = 0
        for vbd, vdi in disks:
            self.ctx.check_cancelled()
            copy = yield self.remote.call(
                "VDI.create", _new_vdi(db, vdi, self.targets[vdi]))
            self.copies[vdi] = copy
            source = vdi
            if running and vbd is not None:
                source = yield server.forwarder.storage.snapshot_vdi(
                    self.ctx, vdi)
                self.snapshots[vdi] = (vbd, source)
            yield self.remote.upload_disk(server.storage, source, copy)
            done += db.fields("VDI", vdi)["virtual_size"]
            if self.ctx.task is not None:
                server.tasks.set_progress(
                    self.ctx.task, DISKS_PROGRESS * done / max(1, total))

    @defer.inlineCallbacks
    def copy_changes(self):
        """What the (now paused) guest wrote since the snapshots."""
        for vdi, (vbd, snapshot) in sorted(self.snapshots.items()):
            self.ctx.check_cancelled()
            # The guest is paused: its own use of the disk holds still.
            yield self.remote.upload_disk(self.ctx.server.storage, vdi,
                                          self.copies[vdi], base=snapshot,
                                          beside=[vbd])

    def forget_snapshots(self):
        snapshots = [s for _, s in self.snapshots.values()]
        self.snapshots = {}
        return live_copy.destroy_quietly(self.ctx, snapshots, "snapshot")

    @defer.inlineCallbacks
    def import_vm(self):
        self.ctx.check_cancelled()
        document = _metadata(self.ctx, self.vm, self.copies, self.networks,
                             snapshots=not self.copy)
        made = yield self.remote.import_metadata(document,
                                                 restore=not self.copy)
        self.imported = made[0] if self.copy else \
            (yield self.remote.call("VM.get_by_uuid", self.uuid))
        self.imported_snapshots = yield self.remote.call("VM.get_snapshots",
                                                         self.imported)

    def send_memory(self):
        self.ctx.check_cancelled()
        params = {"paused": "false", "session_id": self.remote.session}
        return sender.hand_over(self.ctx, self.vm, self.remote.address,
                                params, None)

    @defer.inlineCallbacks
    def undo(self):
        """Destroy what was made there (best effort, logged)."""
        steps = []
        if self.imported is not None:
            steps += [("VM.destroy", s) for s in self.imported_snapshots]
            steps.append(("VM.destroy", self.imported))
        steps += [("VDI.destroy", copy) for copy in self.copies.values()]
        for method, ref in steps:
            try:
                yield self.remote.call(method, ref)
            except XenAPIError as e:
                log.warn("undoing a move to another pool: {m} {ref}: {e}",
                         m=method, ref=ref, e=e)

    @defer.inlineCallbacks
    def move_messages(self):
        """The VM's messages sent there and removed here, as XAPI sends
        them (each made anew there: its time is the time it arrives).
        A message that cannot be moved is left, and the move goes on."""
        ctx = self.ctx
        master = hosts.master(ctx)
        try:
            if master == ctx.server.host_ref:
                found = ctx.server.messages.records(
                    lambda r: r["cls"] == "VM" and r["obj_uuid"] == self.uuid)
            else:
                found = yield pool_calls.call_on(
                    ctx, master, "message.get",
                    ["VM", self.uuid, DateTime.from_timestamp(0)], False)
            moved = []
            for ref, record in sorted(found.items(),
                                      key=lambda m: str(m[1]["timestamp"])):
                yield self.remote.call("message.create", record["name"],
                                       str(record["priority"]), "VM",
                                       self.uuid, record["body"])
                moved.append(ref)
            if moved and master == ctx.server.host_ref:
                yield ctx.server.messages.destroy(moved)
            elif moved:
                yield pool_calls.call_on(ctx, master, "message.destroy_many",
                                     [moved], False)
        except XenAPIError as e:
            log.warn("the messages of VM {uuid} not moved: {e}",
                     uuid=self.uuid, e=e)

    @defer.inlineCallbacks
    def send_rrd(self):
        """A VM that ran here: its RRD to the host it runs on there, as
        XAPI sends it (its history goes on there); one that cannot be
        sent is lost, logged, and the move goes on."""
        metrics = getattr(self.ctx.server, "metrics", None)
        if metrics is None:
            return
        owner = yield metrics.run(metrics.store.release, VM_RRD, self.uuid,
                                  True)
        if owner is None:
            return
        try:
            body = yield metrics.run(rrd_storage.to_xml, owner.rrd)
            yield transfer.put(self.ctx.server.reactor, self.remote.address,
                               None, self.uuid, body, False,
                               session=self.remote.session)
        except Exception as e:
            log.warn("the RRD of VM {uuid} not sent: {e}", uuid=self.uuid,
                     e=e)

    @defer.inlineCallbacks
    def remove_here(self):
        """The VM is the other pool's: gone from here, and its disks."""
        ctx = self.ctx
        yield self.move_messages()
        for snapshot in _snapshots(ctx.db, self.vm):
            vm_config.delete_vm(ctx, snapshot)
        vm_config.delete_vm(ctx, self.vm)
        for vdi in self.copies:
            yield ctx.server.forwarder.storage.destroy_vdi(ctx, vdi)


@defer.inlineCallbacks
def migrate_send(ctx, vm, dest, vdi_map, vif_map, options):
    """The VM (marked migrate_send) moved to the other pool: its ref
    there."""
    db = ctx.db
    remote = RemotePool(ctx.server.reactor, dest)
    targets = yield assert_remote(ctx, vm, remote, vdi_map, vif_map,
                                  options)
    copy = copying(options)
    move = Move(ctx, vm, remote, targets, vif_map, copy)
    try:
        running = db.fields("VM", vm)["power_state"] == "Running"
        if running:
            yield _running(ctx, move)
        else:
            yield move.copy_disks(False)
            yield move.import_vm()
    except BaseException:
        yield move.undo()
        raise
    finally:
        yield move.forget_snapshots()
    if running:
        yield move.send_rrd()
    if not copy:
        yield move.remove_here()
    return move.imported


def _running(ctx, move):
    xen = ctx.server.xenops
    vm, uuid = move.vm, move.uuid
    source = ctx.server.host_ref

    @defer.inlineCallbacks
    def steps():
        yield move.copy_disks(True)
        yield move.import_vm()
        yield xen.call("pause", uuid)
        try:
            yield move.copy_changes()
            yield move.send_memory()
        except BaseException:
            try:
                yield xen.call("unpause", uuid)
            except Exception as e:
                log.warn("VM {uuid} not unpaused: {e}", uuid=uuid, e=e)
            raise

    def failed(failure):
        failure.trap(MigrationError)
        raise XenAPIError("VM_MIGRATE_FAILED", vm, source, move.remote.host,
                          failure.value.reason)
    return xen.vm_change(vm, steps, task=ctx.task, errors=failed)


"""
Commands on the devices of VMs and on disks: vbd-plug/-unplug and
vif-plug/-unplug (--force: at once; vbd-unplug timeout= waits for a guest
that refuses the detach at first), vdi-clone, vdi-snapshot, vdi-copy and
vdi-resize, each the API call XAPI's CLI makes; new disks print their
uuid.  Copies run as tasks, so a terminal shows their progress.
"""

from twisted.internet import defer
from twisted.internet.task import deferLater

from txxapi.cli.generic import Command, map_params, on_uuid, print_uuid
from txxapi.cli.objects import bytes_of
from txxapi.cli.records import NULL, Failure
from txxapi.errors import XenAPIError

DETACH_POLL = 5.0


def _unplug(cls):
    @defer.inlineCallbacks
    def run(cli):
        ref = yield cli.call(cls + ".get_by_uuid", cli.params["uuid"])
        yield cli.call(cls + (".unplug_force" if cli.params.flag("force")
                              else ".unplug"), ref)
    return run


@defer.inlineCallbacks
def vbd_unplug(cli):
    p = cli.params
    vbd = yield cli.call("VBD.get_by_uuid", p["uuid"])
    try:
        timeout = float(p.get("timeout", "0"))
    except ValueError:
        raise Failure("Failed to parse parameter 'timeout': expecting a "
                      "float")
    start = cli.server.reactor.seconds()
    try:
        yield cli.call("VBD.unplug_force" if p.flag("force")
                       else "VBD.unplug", vbd)
    except XenAPIError as e:
        if e.code != "DEVICE_DETACH_REJECTED":
            raise
        # The guest said no for now: wait for it to let go.
        while cli.server.reactor.seconds() - start < timeout:
            yield deferLater(cli.server.reactor, DETACH_POLL, lambda: None)
            attached = yield cli.call("VBD.get_currently_attached", vbd)
            if not attached:
                return
        raise


@defer.inlineCallbacks
def vdi_clone(cli):
    p = cli.params
    vdi = yield cli.call("VDI.get_by_uuid", p["uuid"])
    new = yield cli.run_task("VDI.clone", vdi,
                             map_params(p, "driver-params"))
    if "new-name-label" in p:
        yield cli.call("VDI.set_name_label", new, p["new-name-label"])
    if "new-name-description" in p:
        yield cli.call("VDI.set_name_description", new,
                       p["new-name-description"])
    yield print_uuid(cli, "VDI", new)


@defer.inlineCallbacks
def vdi_snapshot(cli):
    vdi = yield cli.call("VDI.get_by_uuid", cli.params["uuid"])
    new = yield cli.run_task("VDI.snapshot", vdi,
                             map_params(cli.params, "driver-params"))
    yield print_uuid(cli, "VDI", new)


@defer.inlineCallbacks
def vdi_copy(cli):
    p = cli.params
    vdi = yield cli.call("VDI.get_by_uuid", p["uuid"])
    base = NULL
    if "base-vdi-uuid" in p:
        base = yield cli.call("VDI.get_by_uuid", p["base-vdi-uuid"])
    if ("sr-uuid" in p) == ("into-vdi-uuid" in p):
        raise Failure("Please specify one but not both of: a destination "
                      "sr-uuid (I will create a fresh VDI); or a destination "
                      "into-vdi-uuid (I will copy the blocks into this VDI)")
    sr = into = NULL
    if "sr-uuid" in p:
        sr = yield cli.call("SR.get_by_uuid", p["sr-uuid"])
    else:
        into = yield cli.call("VDI.get_by_uuid", p["into-vdi-uuid"])
    new = yield cli.run_task("VDI.copy", vdi, sr, base, into)
    yield print_uuid(cli, "VDI", new)


@defer.inlineCallbacks
def vdi_resize(cli):
    p = cli.params
    vdi = yield cli.call("VDI.get_by_uuid", p["uuid"])
    size = bytes_of("disk-size", p["disk-size"])
    online = p.get("online") == "true"
    yield cli.call("VDI.resize_online" if online else "VDI.resize", vdi,
                   size)


def commands():
    return [
        Command("vbd-plug", on_uuid("VBD.plug"), reqd=["uuid"],
                help="Attaches the VBD to its running VM."),
        Command("vbd-unplug", vbd_unplug, reqd=["uuid"],
                optn=["timeout", "force"],
                help="Detaches the VBD from its running VM (--force: "
                     "without the guest's consent; timeout= seconds to "
                     "wait for a guest that refuses at first)."),
        Command("vif-plug", on_uuid("VIF.plug"), reqd=["uuid"],
                help="Attaches the VIF to its running VM."),
        Command("vif-unplug", _unplug("VIF"), reqd=["uuid"], optn=["force"],
                help="Detaches the VIF from its running VM."),
        Command("vdi-clone", vdi_clone, reqd=["uuid"],
                optn=["driver-params:", "new-name-label",
                      "new-name-description"],
                help="Clones the disk; prints the new disk's uuid."),
        Command("vdi-snapshot", vdi_snapshot, reqd=["uuid"],
                optn=["driver-params:"],
                help="Snapshots the disk; prints the snapshot's uuid."),
        Command("vdi-copy", vdi_copy, reqd=["uuid"],
                optn=["sr-uuid", "base-vdi-uuid", "into-vdi-uuid"],
                help="Copies the disk to a new disk on sr-uuid=, or its "
                     "blocks into the disk into-vdi-uuid= (base-vdi-uuid=: "
                     "only what differs from that disk); prints the uuid."),
        Command("vdi-resize", vdi_resize, reqd=["uuid", "disk-size"],
                optn=["online"],
                help="Grows the disk to disk-size= (a size with an optional "
                     "unit, e.g. 10GiB)."),
    ]

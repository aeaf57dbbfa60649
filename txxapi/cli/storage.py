"""
SR and PBD commands: sr-create (an SR and its PBDs; device-config keys
ending in -filename read their value from a file of the client's),
sr-probe, sr-introduce, sr-destroy, sr-forget, sr-scan, pbd-create,
pbd-plug and pbd-unplug.  Each is the
API call XAPI's CLI makes, so the storage layer's checks and errors
apply unchanged.
"""

from twisted.internet import defer

from txxapi.cli.generic import Command, map_params, on_uuid, print_uuid
from txxapi.cli.objects import bytes_of
from txxapi.cli.records import Failure
from txxapi.cli import protocol as P

FILENAME_SUFFIX = "-filename"


@defer.inlineCallbacks
def master_of(cli):
    pools = yield cli.call("pool.get_all")
    master = yield cli.call("pool.get_master", pools[0])
    return master


@defer.inlineCallbacks
def host_param(cli, default_master=True):
    """The host of host-uuid=, else the master where that is meant (a
    single host, or ``default_master``)."""
    if "host-uuid" in cli.params:
        host = yield cli.call("host.get_by_uuid", cli.params["host-uuid"])
        return host
    hosts = yield cli.call("host.get_all")
    if len(hosts) == 1 or default_master:
        master = yield master_of(cli)
        return master
    raise Failure("Required parameter not found: host-uuid")


@defer.inlineCallbacks
def _device_config(cli):
    config = {}
    for key, value in map_params(cli.params, "device-config").items():
        if key.endswith(FILENAME_SUFFIX):
            content = yield cli.load(value)
            if content is None:
                cli.conn.send(P.print_stderr("File not found: %s" % value))
                raise Failure("File not found")
            key, value = key[:-len(FILENAME_SUFFIX)], content
        config[key] = value
    return config


@defer.inlineCallbacks
def sr_create(cli):
    p = cli.params
    shared = p.flag("shared")
    host = yield host_param(cli, default_master=shared)
    try:
        size = bytes_of("physical-size", p.get("physical-size", "0"))
    except Exception:
        size = 0    # as XAPI: an unreadable size is none
    config = yield _device_config(cli)
    sr = yield cli.call("SR.create", host, config, size,
                        p["name-label"], p.get("name-description", ""),
                        p["type"], p.get("content-type", ""), shared,
                        map_params(p, "sm-config"))
    yield print_uuid(cli, "SR", sr)


@defer.inlineCallbacks
def sr_probe(cli):
    p = cli.params
    host = yield host_param(cli)
    text = yield cli.call("SR.probe", host, map_params(p, "device-config"),
                          p["type"], map_params(p, "sm-config"))
    cli.lines([text])


@defer.inlineCallbacks
def sr_introduce(cli):
    p = cli.params
    yield cli.call("SR.introduce", p["uuid"], p["name-label"],
                   p.get("name-description", ""), p["type"],
                   p.get("content-type", ""),
                   p.flag("shared"),
                   map_params(p, "sm-config"))
    cli.lines([p["uuid"]])


@defer.inlineCallbacks
def pbd_create(cli):
    p = cli.params
    host = yield cli.call("host.get_by_uuid", p["host-uuid"])
    sr = yield cli.call("SR.get_by_uuid", p["sr-uuid"])
    pbd = yield cli.call("PBD.create", {
        "host": host, "SR": sr,
        "device_config": map_params(p, "device-config"),
        "other_config": {}})
    yield print_uuid(cli, "PBD", pbd)


def commands():
    return [
        Command("sr-create", sr_create, reqd=["name-label", "type"],
                optn=["name-description", "host-uuid", "device-config:",
                      "shared", "physical-size", "content-type",
                      "sm-config:"],
                help="Creates an SR and its PBDs (device-config:key=value "
                     "pairs; key-filename=FILE reads the value from a "
                     "file); prints its uuid."),
        Command("sr-scan", on_uuid("SR.scan", task=True), reqd=["uuid"],
                help="Brings the SR's VDIs in the database in line with its "
                     "storage."),
        Command("sr-destroy", on_uuid("SR.destroy"), reqd=["uuid"],
                help="Destroys the SR and its contents."),
        Command("sr-forget", on_uuid("SR.forget"), reqd=["uuid"],
                help="Drops the SR from the database, leaving its storage "
                     "as it is."),
        Command("sr-probe", sr_probe, reqd=["type"],
                optn=["host-uuid", "device-config:", "sm-config:"],
                help="Asks the storage driver what it finds with this "
                     "device-config; prints its answer."),
        Command("sr-introduce", sr_introduce,
                reqd=["name-label", "type", "uuid"],
                optn=["name-description", "shared", "content-type",
                      "sm-config:"],
                help="Records an SR that exists on storage under this uuid "
                     "(with no PBDs yet); prints the uuid."),
        Command("pbd-create", pbd_create, reqd=["host-uuid", "sr-uuid"],
                optn=["device-config:"],
                help="Makes the record that lets the host attach the SR; "
                     "prints its uuid."),
        Command("pbd-plug", on_uuid("PBD.plug"), reqd=["uuid"],
                help="Attaches the SR to the PBD's host."),
        Command("pbd-unplug", on_uuid("PBD.unplug"), reqd=["uuid"],
                help="Detaches the SR from the PBD's host."),
    ]

"""
vm-export, vm-import, vdi-export and vdi-import: the bytes do not go
through the CLI connection.  The server makes a task, tells the client to
GET /export or /export_raw_vdi (HttpGet) or PUT /import or
/import_raw_vdi (HttpPut) with its session and the task in the query,
waits for the client's answer and for the task the data handler
finishes, then reports as XAPI's CLI does.
"""

from urllib.parse import quote

from twisted.internet import defer

from txxapi.cli import protocol as P
from txxapi.cli.connection import ExitWithError, result_of
from txxapi.cli.generic import Command
from txxapi.cli.records import CliFailure, Failure, NULL
from txxapi.cli.select import do_op
from txxapi.errors import XenAPIError

_COMPRESSION = {"true": "gzip", "gzip": "gzip", "zstd": "zstd",
                "false": "false"}


def _query(pairs):
    return "&".join("%s=%s" % (k, quote(str(v), safe=":")) for k, v in pairs)


@defer.inlineCallbacks
def _transfer(cli, command, task, label):
    """Send HttpGet/HttpPut, wait for the client and the task; the task's
    record.  A client that could not reach the handler fails the task if
    the handler never took it (progress still -1)."""
    cli.conn.send(command)
    answer = yield cli.response()
    if answer == P.FAILED:
        progress = yield cli.call("task.get_progress", task)
        if progress < 0:
            yield cli.call("task.set_status", task, "failure")
    record = yield cli.wait_task(task)
    if record["status"] == "success":
        if answer != P.OK:
            cli.stderr("%s failed, unknown error." % label)
            raise ExitWithError(1)
        return record
    if record["status"] == "failure":
        if not record["error_info"]:
            cli.stderr("%s failed, unknown error" % label)
            raise ExitWithError(1)
        raise XenAPIError(*record["error_info"])
    cli.stderr("%s cancelled" % label)
    raise ExitWithError(1)


@defer.inlineCallbacks
def _with_task(cli, label, description, fn):
    task = yield cli.call("task.create", label, description)
    try:
        yield cli.call("task.set_progress", task, -1.0)
        result = yield fn(task)
    finally:
        yield cli.call("task.destroy", task).addErrback(lambda f: None)
    return result


@defer.inlineCallbacks
def vm_export(cli):
    filename = cli.params["filename"]
    compression = cli.params.get("compress", "false").lower()
    if compression not in _COMPRESSION:
        raise Failure("Unknown compression algorithm: %s" % compression)
    preserve = cli.params.flag("preserve-power-state")
    metadata = cli.params.flag("metadata")
    count = [0]

    @defer.inlineCallbacks
    def op(vm, record):
        count[0] += 1
        name = filename if count[0] == 1 else "%s%d" % (filename, count[0])

        def go(task):
            query = [("session_id", cli.session), ("task_id", task),
                     ("ref", vm),
                     ("use_compression", _COMPRESSION[compression]),
                     ("preserve_power_state", str(preserve).lower()),
                     ("export_snapshots",
                      str(cli.params.flag("include-snapshots")).lower())]
            path = "/export_metadata" if metadata else "/export"
            return _transfer(cli, P.http_get(name, path + "?" +
                                             _query(query)), task, "Export")
        yield _with_task(cli, "Export of VM", record["uuid"], go)
        if name:
            cli.message("Export succeeded")
    yield do_op(cli, "vm", op, ["filename", "metadata", "compress",
                                "preserve-power-state", "include-snapshots",
                                "excluded-device-types"])


@defer.inlineCallbacks
def _import_sr(cli):
    if "sr-uuid" in cli.params:
        sr = yield cli.call("SR.get_by_uuid", cli.params["sr-uuid"])
        return sr
    pools = yield cli.call("pool.get_all")
    sr = NULL
    if pools:
        sr = yield cli.call("pool.get_default_SR", pools[0])
    if sr == NULL or not cli.server.db.exists("SR", sr):
        raise CliFailure("No SR specified and Pool default SR is null")
    return sr


@defer.inlineCallbacks
def _print_uuids(cli, vms):
    uuids = []
    for vm in vms:
        uuid = yield cli.call("VM.get_uuid", vm)
        uuids.append(uuid)
    cli.message(",".join(uuids))


@defer.inlineCallbacks
def vm_import(cli):
    if "url" in cli.params and "filename" in cli.params:
        cli.stderr("Invalid arguments. The 'url' and 'filename' parameters "
                   "should not both be specified.")
        raise ExitWithError(1)
    if "url" in cli.params:
        # The host fetches it (VM.import).
        sr = yield _import_sr(cli)
        vms = yield cli.call("VM.import", cli.params["url"], sr,
                             cli.params.flag("preserve"),
                             cli.params.flag("force"))
        yield _print_uuids(cli, vms)
        return
    filename = cli.params["filename"]
    if filename.lower().endswith("ova.xml"):
        filename = filename[:-len("ova.xml")]
    sr = yield _import_sr(cli)
    metadata = cli.params.flag("metadata")

    def go(task):
        query = [("session_id", cli.session), ("task_id", task),
                 ("restore", str(cli.params.flag("preserve")).lower()),
                 ("force", str(cli.params.flag("force")).lower()),
                 ("dry_run", str(cli.params.flag("dry-run")).lower()),
                 ("sr_id", sr)]
        path = "/import_metadata" if metadata else "/import"
        return _transfer(cli, P.http_put(filename, path + "?" +
                                         _query(query)), task, "VM import")
    record = yield _with_task(cli, "VM import", "", go)
    yield _print_uuids(cli, result_of(record["result"]) or [])


@defer.inlineCallbacks
def _track(cli, label, command_of):
    """A transfer whose outcome is the task's, as XAPI's
    track_http_operation tells it: nothing printed on success, else the
    task's error (INTERNAL_ERROR or CLIENT_ERROR without one)."""
    @defer.inlineCallbacks
    def go(task):
        cli.conn.send(command_of(task))
        answer = yield cli.response()
        if answer != P.OK:
            progress = yield cli.call("task.get_progress", task)
            if progress < 0:    # the handler never took the task
                yield cli.call("task.set_status", task, "failure")
        record = yield cli.wait_task(task)
        if answer == P.OK and record["status"] == "success":
            return record
        if record["error_info"]:
            raise XenAPIError(*record["error_info"])
        raise XenAPIError("INTERNAL_ERROR" if answer == P.OK
                          else "CLIENT_ERROR")
    yield _with_task(cli, label, "", go)


def _vdi_transfer(path, label, make, extra):
    @defer.inlineCallbacks
    def run(cli):
        vdi = yield cli.call("VDI.get_by_uuid", cli.params["uuid"])
        filename = cli.params["filename"]

        def command_of(task):
            query = [("session_id", cli.session), ("task_id", task),
                     ("vdi", vdi)] + [(k, cli.params[k]) for k in extra
                                      if k in cli.params]
            return make(filename, path + "?" + _query(query))
        yield _track(cli, label, command_of)
    return run


def commands():
    return [
        Command("vdi-import", _vdi_transfer("/import_raw_vdi", "VDI import",
                                            P.http_put, ["format"]),
                reqd=["uuid", "filename"], optn=["format", "progress"],
                help="Writes a file of the client's into the VDI (format= "
                     "raw, vhd or qcow2)."),
        Command("vdi-export", _vdi_transfer("/export_raw_vdi", "VDI export",
                                            P.http_get, ["format", "base"]),
                reqd=["uuid", "filename"],
                optn=["format", "base", "progress"],
                help="Saves the VDI's data to a file on the client (format= "
                     "raw, vhd or qcow2; base= a VDI to send the "
                     "difference from)."),
        Command("vm-export", vm_export, reqd=["filename"],
                optn=["preserve-power-state", "compress", "metadata",
                      "include-snapshots"], standard=True, selectors="vm",
                help="Exports the selected VMs to XVA files on the client."),
        Command("vm-import", vm_import,
                optn=["filename", "url", "sr-uuid", "preserve", "force",
                      "metadata", "dry-run"],
                standard=True,
                help="Imports VMs from an XVA file on the client, or one "
                     "the host fetches from a URL; prints their uuids."),
    ]

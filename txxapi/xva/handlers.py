"""
The XVA handlers, on the data path machinery of /import_raw_vdi and
/export_raw_vdi (txxapi.http.vdi_transfer): the same credentials, task
bookkeeping, flow control and endings.

* GET /export?ref=|uuid=[&use_compression=true|gzip|zstd]
  [&preserve_power_state=true]: the VM marked ``export`` (Halted or
  Suspended only: VM_BAD_POWER_STATE otherwise), 200 with the task, then
  the XVA until the connection closes.
* PUT /import?sr_id=|sr_uuid=[&restore=true][&force=true]: the XVA read
  as it arrives; the task's result is the set of VMs made.
* GET /export_metadata?ref=|uuid=|all=true[&include_vhd_parents=true]
  [&export_snapshots=false][&include_dom0=false]
  [&excluded_device_types=vif,vbd,...]: a tar of ova.xml alone, sent
  whole with a Content-Length.
* PUT /import_metadata[&restore=true][&force=true][&vdi:<uuid>=<uuid>]
  [&live=true]: VMs from an ova.xml, linked to VDIs that exist already
  (live: a VM moving here from another pool, txxapi.xva.restore).

An export or an import whose disks another host serves is answered 302
there (txxapi.redirect).
"""

import time

from twisted.internet import defer

from txxapi import operations
from txxapi.errors import XenAPIError
from txxapi.http import responses
from txxapi.http.auth import Refused
from txxapi.http.vdi_transfer import Download, Transfer, Upload
from txxapi.redirect import owners
from txxapi.values import DateTime
from txxapi.xva import codecs, ova, streams, tar

DISPOSITION = 'Content-Disposition: attachment; filename="export.xva"'
CONTENT_TYPE = "content-type: application/octet-stream"


def _flag(params, name, default=False):
    value = params.query.get(name)
    return default if value is None else value.lower() == "true"


def _vm_of(db, params):
    """The VM named by ``ref`` or ``uuid`` (query only, as XAPI reads
    them)."""
    ref = params.query.get("ref")
    if ref is not None:
        db.fields("VM", ref)
        return ref
    return db.by_uuid("VM", params.query.get("uuid", ""))


def _document(server, walk, snapshot_metadata, preserve_power_state):
    db = server.db
    objs = ova.objects(db, walk, snapshot_metadata, preserve_power_state)
    return ova.document(db, server.host_ref, objs, DateTime.now())


class Export(Download):
    realm = "VM.export"
    action = "get_export"
    label = "VM.export"

    @defer.inlineCallbacks
    def _prepare(self):
        server, db = self.server, self.db
        self.caller = yield self._authenticate()
        vm = _vm_of(db, self.params)
        preserve = _flag(self.params, "preserve_power_state")
        algorithm = codecs.compression_of(
            self.params.query.get("use_compression", ""))
        walk = ova.Walk(db)
        walk.vm(vm, preserve_power_state=preserve)
        disks = streams.disks_to_stream(db, walk, vm, preserve)
        srs = [db.fields("VDI", vdi)["SR"] for _, vdi, _ in disks]
        owners.to_exporter(server, self.request, vm, srs)
        for sr in srs:
            server.storage.assert_plugged(sr)
        self._begin_task()
        head = tar.member(ova.FILENAME,
                          _document(server, walk, False, preserve),
                          int(time.time()))
        stream = streams.ExportStream(server.storage, head, disks,
                                      algorithm)
        # Marked for the export's life: a running VM is refused here.
        server.forwarder.marker.marked(self._context(),
                                       [("VM", vm, "export")],
                                       lambda: stream.released)
        try:
            yield stream.open()
        except Exception:
            yield stream.close()
            raise
        if self.done:
            yield stream.close()
            return
        self._send_head([CONTENT_TYPE, DISPOSITION])
        self.session = stream
        self.size = max(1, stream.size)
        server.tasks.set_canceller(self.task, self._cancel)
        self.request.channel.registerProducer(self, True)
        self._registered = True
        self._read()


class ExportMetadata(Transfer):
    """The whole tar is made first, then sent with its length; a failure
    before that is XAPI's 500."""

    realm = "VM.export_metadata"
    action = "get_export_metadata"
    label = "VM.export_metadata"

    def __init__(self, server, request):
        Transfer.__init__(self, server, request)
        d = defer.maybeDeferred(self._prepare)
        d.addErrback(self._fail)

    def _vms(self):
        db, params = self.db, self.params
        if not _flag(params, "all"):
            return [_vm_of(db, params)]
        dom0 = _flag(params, "include_dom0", True)
        out = []
        for vm in db.refs("VM"):
            f = db.fields("VM", vm)
            default = f["is_default_template"] or (
                f["is_a_template"]
                and f["other_config"].get("default_template") == "true")
            if not default and (dom0 or not f["is_control_domain"]):
                out.append(vm)
        return out

    @defer.inlineCallbacks
    def _prepare(self):
        self.caller = yield self._authenticate()
        params = self.params
        vms = self._vms()
        excluded = [x.strip().lower() for x in params.query.get(
            "excluded_device_types", "").split(",") if x.strip()]
        self._begin_task()
        ctx = self._context()
        for vm in vms:
            operations.check(ctx, "VM", vm, "metadata_export")
        walk = ova.Walk(self.db)
        snapshots = _flag(params, "export_snapshots", True)
        for vm in vms:
            walk.vm(vm, snapshots, True,
                    _flag(params, "include_vhd_parents"), excluded)
        body = streams.metadata_tar(_document(self.server, walk, snapshots,
                                              True))
        self.headers_sent = True
        self.transport.write(responses.header_lines([
            "HTTP/1.0 200 OK", "Connection: close",
            "Cache-Control: no-cache, no-store", "task-id: " + self.task,
            CONTENT_TYPE, "Content-Length: %d" % len(body), DISPOSITION])
            + body)
        self._succeed()


class Import(Upload):
    realm = "VM.import"
    action = "put_import"
    label = "VM.import"
    metadata = False

    def connection_lost(self):
        # A client may close once it has sent the whole body: the import
        # goes on, its outcome is on the task.
        if not self.done and not self._complete:
            self._fail(XenAPIError("IMPORT_ERROR_PREMATURE_EOF"),
                       respond=False)

    def _refuse(self, error, response):
        self.server.tasks.fail(self.task, error)
        raise Refused(response)

    def _named_sr(self):
        db, params = self.db, self.params
        sr = params.get("sr_id")
        if sr is not None:
            db.fields("SR", sr)
        elif params.get("sr_uuid") is not None:
            sr = db.by_uuid("SR", params.get("sr_uuid"))
        else:
            sr = db.fields("pool", self.server.pool_ref)["default_SR"]
            if not db.exists("SR", sr):
                raise XenAPIError("DEFAULT_SR_NOT_FOUND", sr)
        return sr

    def _redirect(self):
        """To a host with the SR plugged, before the task is taken: an SR
        that is not there is the task's error, once it is."""
        try:
            sr = self._named_sr()
        except XenAPIError:
            return
        owners.to_sr(self.server, self.request, sr)

    def _import_sr(self):
        db, sr = self.db, self._named_sr()
        self.server.storage.assert_plugged(sr)
        if db.fields("SR", sr)["content_type"] == "iso":
            self._refuse(XenAPIError("SR_OPERATION_NOT_SUPPORTED", sr),
                         responses.bad_request(self.version))
        return sr

    def _stream(self, ctx):
        return streams.ImportStream(
            ctx, self._import_sr(), _flag(self.params, "restore"),
            _flag(self.params, "force"))

    @defer.inlineCallbacks
    def _prepare(self):
        self.caller = yield self._authenticate()
        self._redirect()
        self._begin_task()
        if self.request.requestHeaders.hasHeader(b"transfer-encoding"):
            self._refuse(XenAPIError("IMPORT_ERROR_CANNOT_HANDLE_CHUNKED"),
                         responses.forbidden(self.version))
        stream = self._stream(self._context())
        if self.expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._send_head([CONTENT_TYPE])
        self.session = stream
        self.server.tasks.set_canceller(self.task, self._cancel)
        self._pump()


class ImportMetadata(Import):
    realm = "VM.import_metadata"
    action = "put_import_metadata"
    label = "VM.metadata_import"

    def _redirect(self):
        pass    # no SR: served where it is asked

    def _stream(self, ctx):
        params = self.params
        vdi_map = {k[4:]: v for k, v in params.query.items()
                   if k.startswith("vdi:") and len(k) > 4}
        return streams.ImportStream(
            ctx, None, _flag(params, "restore"), _flag(params, "force"),
            metadata=True, vdi_map=vdi_map, live=_flag(params, "live"),
            dry_run=_flag(params, "dry_run"))

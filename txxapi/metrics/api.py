"""
host/VM/SR.get_data_sources, query_data_source, record_data_source and
forget_data_source_archives, answered from this host's RRDs on the
metrics threads; host.backup_rrds, which schedules a backup of the
host's RRDs (to the master from a slave, to its own disk on the
master) ``delay`` seconds later and answers at once, as XAPI's does.  A VM's must be running (the ``data_source_op``
operation); a name the RRD does not know fails as XAPI's rrdd fails it,
with INTERNAL_ERROR naming the missing source.
"""

from twisted.logger import Logger

from txxapi.api.registry import implements
from txxapi.errors import XenAPIError
from txxapi.impl.vm_lifecycle import operation_error
from txxapi.metrics.rrd import NoArchive, UnknownSource
from txxapi.metrics.store import HOST, SR, VM, DatasourceMissing

log = Logger()

CLASSES = {"host": HOST, "VM": VM, "SR": SR}


def _owner(ctx, cls, ref, op=True):
    """The store's kind and uuid of an object; a VM's checked for
    data_source_op."""
    fields = ctx.db.fields(cls, ref)
    if cls == "VM" and op:
        error = operation_error(ref, fields, "data_source_op")
        if error is not None:
            raise error
    return CLASSES[cls], fields["uuid"]


def _call(ctx, fn, *args):
    def failed(f):
        f.trap(UnknownSource, DatasourceMissing, NoArchive)
        e = f.value
        if isinstance(e, UnknownSource):
            text = 'Rrd.Invalid_data_source("%s")' % e.args[0]
        elif isinstance(e, NoArchive):
            text = "Rrd.No_RRA_Available"
        else:
            text = "Rrd_interface.Rrdd_error(Datasource_missing(%s))" % e
        raise XenAPIError("INTERNAL_ERROR", text)
    return ctx.server.metrics.run(fn, *args).addErrback(failed)


def _register(cls):
    store = lambda ctx: ctx.server.metrics.store  # noqa: E731

    @implements(cls + ".get_data_sources")
    def get_data_sources(ctx, self):
        kind, uuid = _owner(ctx, cls, self, op=False)
        return _call(ctx, store(ctx).data_sources, kind, uuid)

    @implements(cls + ".query_data_source")
    def query_data_source(ctx, self, data_source):
        kind, uuid = _owner(ctx, cls, self)
        return _call(ctx, store(ctx).query, kind, uuid, data_source)

    @implements(cls + ".record_data_source")
    def record_data_source(ctx, self, data_source):
        kind, uuid = _owner(ctx, cls, self)
        return _call(ctx, store(ctx).record, kind, uuid,
                     data_source).addCallback(lambda _: "")

    @implements(cls + ".forget_data_source_archives")
    def forget_data_source_archives(ctx, self, data_source):
        kind, uuid = _owner(ctx, cls, self)
        return _call(ctx, store(ctx).forget, kind, uuid,
                     data_source).addCallback(lambda _: "")


for _cls in CLASSES:
    _register(_cls)


@implements("host.backup_rrds")
def backup_rrds(ctx, host, delay):
    ctx.db.fields("host", host)
    metrics = ctx.server.metrics

    def backup():
        d = metrics.handover.backup() if metrics.handover.is_slave \
            else metrics.save()
        d.addErrback(lambda f: log.failure("host.backup_rrds", f))
    ctx.server.reactor.callLater(max(0.0, delay), backup)
    return ""

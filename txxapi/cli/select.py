"""
Selectors: the objects a VM, host or SR command acts on, picked as XAPI's
CLI picks them.  Every parameter the command does not take itself is a
filter on the printed fields; the pseudo-field ``vm=`` (``host=``,
``sr=``) matches a uuid or name-label; several matches need
``--multiple``; with none given, all objects match.
"""

from twisted.internet import defer

from txxapi.cli.connection import MultipleFailure
from txxapi.cli.generic import all_records, filter_records, list_filters
from txxapi.cli.records import BY_PREFIX, Failure
from txxapi.errors import XenAPIError

_NONE = {"vm": "No matching VMs found", "host": "No matching hosts found",
         "sr": "No matching hosts found"}
_SEVERAL = {"vm": "Multiple matches VMs found",
            "host": "Multiple matching hosts found",
            "sr": "Multiple matching SRs found"}
_ONE_AT_A_TIME = {"vm": "one VM", "host": "one host", "sr": "one SR"}


def _named(kind, record, value):
    if record["uuid"] == value or record["name_label"] == value:
        return True
    return kind == "host" and record.get("hostname") == value


@defer.inlineCallbacks
def select(cli, kind, ignore=(), include_control=False,
           include_templates=False):
    """[(ref, record)] of the objects the command line selects."""
    cc = BY_PREFIX[kind]
    pairs = yield all_records(cli, cc)
    filters = []
    if kind == "vm":
        if not include_control:
            filters.append(("is-control-domain", "false"))
        if not include_templates:
            filters.append(("is-a-template", "false"))
    value = cli.params.get(kind)
    if value is not None:
        pairs = [(ref, r) for ref, r in pairs if _named(kind, r, value)]
    filters += list_filters(cli.params, tuple(ignore) + (kind,))
    return filter_records(cc, pairs, filters, cli.view)


def error_text(e):
    if isinstance(e, XenAPIError):
        return "%s: [ %s ]" % (e.code, "; ".join(e.params))
    return str(e)


@defer.inlineCallbacks
def do_op(cli, kind, op, ignore=(), multiple=True, include_control=False,
          include_templates=False, every=False):
    """Run ``op(ref, record)`` (a Deferred) on the selected objects; the
    list of results.  ``every``: several need no --multiple."""
    pairs = yield select(cli, kind, ignore, include_control,
                         include_templates)
    if not pairs:
        raise Failure(_NONE[kind])
    if len(pairs) == 1:
        result = yield op(*pairs[0])
        return [result]
    if not (multiple and (every or cli.params.flag("multiple"))):
        if multiple:
            raise Failure("%s. --multiple required to complete the "
                          "operation" % _SEVERAL[kind])
        raise Failure("%s. Operation can only be performed on %s at a time"
                      % (_SEVERAL[kind], _ONE_AT_A_TIME[kind]))
    results, failures = [], []
    for ref, record in pairs:
        try:
            result = yield op(ref, record)
            results.append(result)
        except (XenAPIError, Failure) as e:
            failures.insert(0, (record["uuid"], error_text(e)))
    if failures:
        raise MultipleFailure(failures)
    return results


@defer.inlineCallbacks
def by_uuid_or_name(cli, cls, value, what):
    """The one object of ``cls`` whose uuid or name-label is ``value``."""
    pairs = yield all_records(cli, BY_PREFIX[what])
    found = [ref for ref, r in pairs
             if r["uuid"] == value or r.get("name_label") == value]
    if not found:
        raise Failure("%s %s not found" % (what.capitalize(), value))
    return found[0]

"""
The per-class commands every class gets, generated from the datamodel:
``<class>-list``, ``-param-list``, ``-param-get``, ``-param-set``,
``-param-add``, ``-param-remove``, ``-param-clear``.  They read records
with ``get_all_records``/``get_record`` and change them with the class's
setters and map/set calls, so RBAC and every check of the API apply.
Filtering compares the printed values, as XAPI's CLI does.
"""

from twisted.internet import defer

from txxapi.cli.connection import STANDARD
from txxapi.cli.records import (
    CLASSES, NULL, Failure, MissingParameter, format_value, parse_value)
from txxapi.db.memory import RecordMap


class Command:
    """A command of the table: ``run(cli)`` returns a Deferred.  A
    ``local`` command is one of XAPI's emergency commands: run on the
    host it was sent to, never by the master, as a local session of that
    host (session.slave_local_login_with_password), so that it works on a
    slave whose master is gone."""

    def __init__(self, name, run, reqd=(), optn=(), help="", standard=False,
                 selectors=None, local=False):
        self.name = name
        self.local = local
        self.run = run
        self.reqd = list(reqd)
        self.optn = list(optn)
        self.help = help
        self.standard = standard
        self.selectors = selectors   # "vm", "host", "sr" or None


def on_uuid(call, key="uuid", task=False):
    """A command that makes one call on the object the parameter ``key``
    names by uuid (the class is the call's); a long one (``task``) as an
    Async call whose task is waited for."""
    cls = call.split(".", 1)[0]

    @defer.inlineCallbacks
    def run(cli):
        ref = yield cli.call(cls + ".get_by_uuid", cli.params[key])
        if task:
            yield cli.run_task(call, ref)
        else:
            yield cli.call(call, ref)
    return run


@defer.inlineCallbacks
def print_uuid(cli, cls, ref):
    """What a creation command prints: the new object's uuid."""
    uuid = yield cli.call(cls + ".get_uuid", ref)
    cli.lines([uuid])


def map_params(params, name):
    """The ``name:key=value`` parameters, as a map."""
    prefix = name + ":"
    return {k[len(prefix):]: v for k, v in params.items
            if k.startswith(prefix) and len(k) > len(prefix)}


def as_pairs(result):
    """get_all_records' answer as [(ref, record)]."""
    if isinstance(result, RecordMap):
        result = result.to_dict()
    return list(result.items())


def field_key(field):
    return "%s (%s)" % (field.name, field.marker)


def _matches(cc, record, key, value, view):
    field, sub = cc.lookup(key)
    if sub is None:
        return field.text(record, view) == value
    if field.kind == "map":
        m = field.value(record)
        return sub in m and format_value(field.field.type.value, m[sub],
                                         view) == value
    if sub != "contains":
        raise Failure("Invalid syntax for set filtering (should be "
                      "set-param:contains=key)")
    return value in [field.member_text(v, view) for v in field.value(record)]


def filter_records(cc, pairs, filters, view):
    for key, value in filters:
        if not pairs:
            return pairs
        pairs = [(ref, r) for ref, r in pairs
                 if _matches(cc, r, key, value, view)]
    return pairs


def list_filters(params, ignore=()):
    """The command line's filters: every parameter but the standard ones,
    ``params=`` and those the command takes itself."""
    return [(k, v) for k, v in params.items
            if k.split(":", 1)[0] not in STANDARD + ("params",) + tuple(ignore)
            and not k.startswith("database:")]


def selected_fields(cc, params):
    chosen = params.get("params")
    if chosen == "all":
        return cc.fields
    names = chosen.split(",") if chosen is not None else cc.defaults
    return [f for f in cc.fields if f.name in names]


def printed(fields, record, view):
    return [(field_key(f), f.text(record, view)) for f in fields]


@defer.inlineCallbacks
def all_records(cli, cc):
    result = yield cli.call(cc.cls.name + ".get_all_records")
    return as_pairs(result)


@defer.inlineCallbacks
def record_by_uuid(cli, cc, uuid):
    ref = yield cli.call(cc.cls.name + ".get_by_uuid", uuid)
    record = yield cli.call(cc.cls.name + ".get_record", ref)
    return ref, record


def make_list(cc):
    @defer.inlineCallbacks
    def run(cli):
        pairs = yield all_records(cli, cc)
        everything = pairs
        pairs = filter_records(cc, pairs, cc.filters + list_filters(
            cli.params), cli.view)
        if cli.params.flag("all"):
            pairs = everything
        fields = selected_fields(cc, cli.params)
        cli.table([printed(fields, r, cli.view) for _, r in pairs])
    return run


def make_param_list(cc):
    @defer.inlineCallbacks
    def run(cli):
        _, record = yield record_by_uuid(cli, cc, cli.params["uuid"])
        cli.table([printed(cc.fields, record, cli.view)])
    return run


def _field(cc, name):
    field = cc.by_name.get(name)
    if field is None:
        raise MissingParameter(name)
    return field


def _on_field(fn):
    """make(cc) of a command on one field (param-name=) of the object
    named by uuid=: ``fn(cli, ref, record, field)``."""
    def make(cc):
        @defer.inlineCallbacks
        def run(cli):
            ref, record = yield record_by_uuid(cli, cc, cli.params["uuid"])
            field = _field(cc, cli.params["param-name"])
            yield fn(cli, ref, record, field)
        return run
    return make


@_on_field
def make_param_get(cli, ref, record, field):
    key = cli.params.get("param-key")
    if key is not None and field.kind == "map":
        m = field.value(record)
        if key not in m:
            raise Failure("Key %s not found in map" % key)
        cli.lines([format_value(field.field.type.value, m[key], cli.view)])
    else:
        cli.lines([field.text(record, cli.view)])


@defer.inlineCallbacks
def typed(cli, name, t, text):
    """A command-line value in the API's type; a reference is given by its
    uuid (empty for none)."""
    if t.kind == "ref":
        if text == "":
            return NULL
        ref = yield cli.call(t.cls + ".get_by_uuid", text)
        return ref
    return parse_value(name, t, text)


def make_param_set(cc):
    @defer.inlineCallbacks
    def run(cli):
        ref, record = yield record_by_uuid(cli, cc, cli.params["uuid"])
        for k, v in cli.params.items:
            if k in ("uuid",) + STANDARD:
                continue
            field, key = cc.lookup(k)
            if key is None and field.kind != "normal":
                if field.add:
                    raise Failure("Field '%s' is a map or set. use the "
                                  "'name:key=value' syntax." % k)
                raise Failure("Field '%s' is read-only." % k)
            if field.kind == "set":
                raise Failure("Cannot param-set on set fields")
            if field.kind == "map":
                if not field.add:
                    raise Failure("Map field '%s' is read-only."
                                  % field.name)
                t = field.field.type
                value = yield typed(cli, k, t.value, v)
                if key in field.value(record):
                    yield cli.call(field.remove, ref, key)
                yield cli.call(field.add, ref, key, value)
                continue
            if field.setter is None:
                raise Failure("Field '%s' is read-only." % k)
            value = yield typed(cli, k, field.field.type, v)
            yield cli.call(field.setter, ref, value)
    return run


@_on_field
@defer.inlineCallbacks
def make_param_add(cli, ref, record, field):
    if field.kind == "normal":
        raise Failure("Can only add to parameters of type Set or Map")
    if not field.add:
        raise Failure("Parameter is read-only")
    t = field.field.type
    if field.kind == "set":
        if "param-key" not in cli.params:
            raise Failure("When adding a key to a set, use the syntax: "
                          "*-param-add param-name=<name> param-key=<key>")
        value = yield typed(cli, "param-key", t.elem,
                            cli.params["param-key"])
        yield cli.call(field.add, ref, value)
        return
    skip = ("uuid", "param-name", "param-key") + STANDARD
    for k, v in cli.params.items:
        if k not in skip:
            value = yield typed(cli, k, t.value, v)
            yield cli.call(field.add, ref, k, value)


@_on_field
@defer.inlineCallbacks
def make_param_remove(cli, ref, record, field):
    key = cli.params["param-key"]
    if field.kind == "normal":
        raise Failure("Can only remove from parameters of type Set or Map")
    if not field.remove:
        raise Failure("Cannot remove parameters from read-only map")
    current = field.value(record)
    if field.kind == "set":
        shown = [field.member_text(v, cli.view) for v in current]
        if key not in shown:
            raise Failure("Key %s is not in the set" % key)
        yield cli.call(field.remove, ref, current[shown.index(key)])
        return
    if key not in current:
        raise Failure("Key %s is not in map" % key)
    yield cli.call(field.remove, ref, key)


@_on_field
@defer.inlineCallbacks
def make_param_clear(cli, ref, record, field):
    if field.kind != "normal" and field.remove:
        for item in list(field.value(record)):
            yield cli.call(field.remove, ref, item)
    elif field.setter is not None and field.field.type.kind == "string":
        yield cli.call(field.setter, ref, "")
    elif field.setter is not None:
        raise Failure("Cannot clear this parameter")
    else:
        raise Failure("Can only clear RW parameters")


def commands_of(cc):
    """The generic commands of one CLI class, as XAPI generates them:
    param-set only if something is settable, param-add/-remove only if a
    map or set can be added to, param-clear only if something clears."""
    name = cc.prefix
    fields = cc.fields
    settable = [f.name for f in fields if f.setter] + \
        [f.name + ":" for f in fields if f.kind == "map" and f.add]
    addable = [f.name for f in fields if f.kind != "normal" and f.add]
    clearable = [f.name for f in fields
                 if f.setter or f.kind != "normal"]
    sets = [f.name + ":contains" for f in fields if f.kind == "set"]
    out = [
        Command(name + "-list", make_list(cc),
                optn=["params", "database:"] + [f.name for f in fields]
                + sets,
                help="Lists all the %s, filtering on the optional "
                     "arguments." % cc.plural,
                standard=name in ("vm", "network", "sr")),
        Command(name + "-param-list", make_param_list(cc), reqd=["uuid"],
                optn=["database:"],
                help="Lists all the parameters of the object with this "
                     "uuid."),
        Command(name + "-param-get", make_param_get(cc),
                reqd=["uuid", "param-name"], optn=["param-key", "database:"],
                help="Prints one parameter of the object; param-key picks "
                     "one key of a map."),
    ]
    if settable:
        out.append(Command(name + "-param-set", make_param_set(cc),
                           reqd=["uuid"], optn=settable,
                           help="Sets parameters of the object; "
                                "map-param:key=value sets one key of a "
                                "map."))
    if addable:
        out.append(Command(name + "-param-add", make_param_add(cc),
                           reqd=["uuid", "param-name"], optn=["param-key"],
                           help="Adds to a set (param-key=<member>) or to a "
                                "map (key=value pairs)."))
        out.append(Command(name + "-param-remove", make_param_remove(cc),
                           reqd=["uuid", "param-name", "param-key"],
                           help="Removes a member of a set or a key of a "
                                "map."))
    if clearable:
        out.append(Command(name + "-param-clear", make_param_clear(cc),
                           reqd=["uuid", "param-name"],
                           help="Clears the parameter (one of %s)."
                                % ",".join(clearable)))
    return out


def generic_commands():
    return [c for cc in CLASSES for c in commands_of(cc)]

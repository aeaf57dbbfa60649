"""
Values answered to many calls at once, encoded once for all of them.

When a change wakes a thousand event.from watchers that share a token
position and a subscription, they all get the same reply object.  The
event hub marks such replies as shared while it answers the woken calls
(``sharing``), and the RPC endpoints encode a marked value once per wire
format and reuse the bytes.  Outside that window nothing is marked and
every value is encoded as usual, so a value that changes later can never
be answered from a stale encoding.

A record that get_record answers (txxapi.db.memory.Record) names the
state it was built from; its encoding is kept and reused for as long as
that state is what the record shows (``encoded_record``).
"""

from contextlib import contextmanager

_marked = {}   # id(value) -> (value, {wire format: bytes})
# (wire format, table name, ref) -> (field dict, computed set fields,
# bytes), within a bound on the bytes kept.
_records = {}
RECORD_BYTES = 8 << 20
_record_bytes = [0]


@contextmanager
def sharing():
    """Within this block, values passed to ``share`` are encoded once."""
    try:
        yield
    finally:
        _marked.clear()


def share(value):
    """Mark value (kept alive while marked, so its id stays its own)."""
    _marked.setdefault(id(value), (value, {}))
    return value


def is_shared(value):
    entry = _marked.get(id(value))
    return entry is not None and entry[0] is value


def encoded(value, wire, encode, *args):
    """encode(value, *args), computed once per wire format (any hashable
    key naming what else the bytes depend on), for a marked value; None
    for any other value."""
    entry = _marked.get(id(value))
    if entry is None or entry[0] is not value:
        return None
    cache = entry[1]
    body = cache.get(wire)
    if body is None:
        body = cache[wire] = encode(value, *args)
    return body


def encoded_record(value, wire, encode):
    """encode(value) of a Record (any value whose ``source`` is (table,
    ref, field dict)), reusing the bytes of the last one of the same row
    while its field dict is the same object and its computed set fields
    are equal; None for any other value."""
    source = getattr(value, "source", None)
    if source is None:
        return None
    table, ref, fields = source
    views = [value[v[0]] for v in table.views]
    key = (wire, table.name, ref)
    entry = _records.get(key)
    if entry is not None and entry[0] is fields and entry[1] == views:
        return entry[2]
    body = encode(dict(value))
    if entry is not None:
        _record_bytes[0] -= len(entry[2])
    elif _record_bytes[0] + len(body) > RECORD_BYTES:
        _records.clear()
        _record_bytes[0] = 0
    _records[key] = (fields, views, body)
    _record_bytes[0] += len(body)
    return body

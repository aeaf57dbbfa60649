"""
Values answered to many calls at once, encoded once for all of them.

When a change wakes a thousand event.from watchers that share a token
position and a subscription, they all get the same reply object.  The
event hub marks such replies as shared while it answers the woken calls
(``sharing``), and the RPC endpoints encode a marked value once per wire
format and reuse the bytes.  Outside that window nothing is marked and
every value is encoded as usual, so a value that changes later can never
be answered from a stale encoding.
"""

from contextlib import contextmanager

_marked = {}   # id(value) -> (value, {wire format: bytes})


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

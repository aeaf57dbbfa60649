"""
The small typed objects etcd requests take and return, and their JSON.

The v3 gateway speaks protobuf's JSON mapping: bytes (keys, values) are
base64, 64-bit integers are decimal strings, and a field at its zero value
is left out (a missing "revision" is 0, a missing "value" is b"").
"""

import base64
from dataclasses import dataclass, field
from typing import ClassVar, List, Optional, Tuple

__all__ = [
    "Header", "KeyValue", "RangeResult", "PutResult", "DeleteResult",
    "TxnResult", "Lease", "Member", "Status", "WatchEvent",
    "Compare", "Txn", "Put", "Range", "Delete",
    "to_bytes", "b64", "unb64", "prefix_end",
]


def to_bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def b64(value):
    return base64.b64encode(to_bytes(value)).decode("ascii")


def unb64(text):
    return base64.b64decode(text) if text else b""


def _int(obj, name):
    return int(obj.get(name) or 0)


def prefix_end(prefix):
    """The range_end that makes [prefix, end) every key starting with
    prefix: the prefix with its last byte below 0xff incremented (b"\\0",
    meaning "to the end of the keyspace", for an empty or all-0xff one)."""
    key = bytearray(to_bytes(prefix))
    while key:
        if key[-1] < 0xff:
            key[-1] += 1
            return bytes(key)
        key.pop()
    return b"\0"


# -- results ------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0

    @classmethod
    def parse(cls, obj):
        obj = obj or {}
        return cls(_int(obj, "cluster_id"), _int(obj, "member_id"),
                   _int(obj, "revision"), _int(obj, "raft_term"))


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def parse(cls, obj):
        return cls(unb64(obj.get("key")), unb64(obj.get("value")),
                   _int(obj, "create_revision"), _int(obj, "mod_revision"),
                   _int(obj, "version"), _int(obj, "lease"))


def _kv_or_none(obj):
    return KeyValue.parse(obj) if obj else None


class _Revisioned:
    @property
    def revision(self):
        """The store's revision when the request ran (after a write: the
        write's own revision)."""
        return self.header.revision


@dataclass(frozen=True)
class RangeResult(_Revisioned):
    header: Header
    kvs: Tuple[KeyValue, ...] = ()
    count: int = 0
    more: bool = False

    @classmethod
    def parse(cls, obj):
        return cls(Header.parse(obj.get("header")),
                   tuple(KeyValue.parse(kv) for kv in obj.get("kvs") or ()),
                   _int(obj, "count"), bool(obj.get("more")))


@dataclass(frozen=True)
class PutResult(_Revisioned):
    header: Header
    prev_kv: Optional[KeyValue] = None

    @classmethod
    def parse(cls, obj):
        return cls(Header.parse(obj.get("header")),
                   _kv_or_none(obj.get("prev_kv")))


@dataclass(frozen=True)
class DeleteResult(_Revisioned):
    header: Header
    deleted: int = 0
    prev_kvs: Tuple[KeyValue, ...] = ()

    @classmethod
    def parse(cls, obj):
        return cls(Header.parse(obj.get("header")), _int(obj, "deleted"),
                   tuple(KeyValue.parse(kv)
                         for kv in obj.get("prev_kvs") or ()))


_RESPONSE_TYPES = {"response_range": RangeResult, "response_put": PutResult,
                   "response_delete_range": DeleteResult}


@dataclass(frozen=True)
class TxnResult(_Revisioned):
    header: Header
    succeeded: bool
    responses: Tuple[object, ...] = ()   # RangeResult / PutResult / ...

    @classmethod
    def parse(cls, obj):
        responses = []
        for item in obj.get("responses") or ():
            # An empty sub-response ({} for a put with nothing to say) still
            # names its kind; fall back to a header-less put.
            (kind, body), = item.items() if item else (("response_put", {}),)
            responses.append(_RESPONSE_TYPES[kind].parse(body))
        return cls(Header.parse(obj.get("header")),
                   bool(obj.get("succeeded")), tuple(responses))


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int
    header: Header = field(default_factory=Header)


@dataclass(frozen=True)
class Member:
    id: int
    name: str = ""
    peer_urls: Tuple[str, ...] = ()
    client_urls: Tuple[str, ...] = ()
    is_learner: bool = False

    @classmethod
    def parse(cls, obj):
        return cls(_int(obj, "ID"), obj.get("name") or "",
                   tuple(obj.get("peerURLs") or ()),
                   tuple(obj.get("clientURLs") or ()),
                   bool(obj.get("isLearner")))


@dataclass(frozen=True)
class Status:
    header: Header
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    is_learner: bool
    errors: Tuple[str, ...]

    @property
    def member_id(self):
        return self.header.member_id

    @classmethod
    def parse(cls, obj):
        return cls(Header.parse(obj.get("header")), obj.get("version", ""),
                   _int(obj, "dbSize"), _int(obj, "leader"),
                   _int(obj, "raftIndex"), _int(obj, "raftTerm"),
                   bool(obj.get("isLearner")), tuple(obj.get("errors") or ()))


@dataclass(frozen=True)
class WatchEvent:
    type: str             # "put" or "delete"
    kv: KeyValue
    prev_kv: Optional[KeyValue] = None

    @classmethod
    def parse(cls, obj):
        return cls("delete" if obj.get("type") == "DELETE" else "put",
                   KeyValue.parse(obj.get("kv") or {}),
                   _kv_or_none(obj.get("prev_kv")))


# -- requests -----------------------------------------------------------------

class _Request:
    KIND: ClassVar[str]

    def txn_op(self):
        return {self.KIND: self.body()}


def key_range(key, prefix=False, range_end=None):
    """The request fields naming key, or every key under it (prefix)."""
    body = {"key": b64(key)}
    if prefix:
        range_end = prefix_end(key)
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return body


@dataclass(frozen=True)
class Range(_Request):
    """A range request (a get, or a prefix listing)."""
    KIND: ClassVar[str] = "request_range"
    key: object
    prefix: bool = False
    limit: int = 0
    revision: int = 0
    keys_only: bool = False
    count_only: bool = False
    serializable: bool = False

    def body(self):
        body = key_range(self.key, self.prefix)
        for name in ("limit", "revision", "keys_only", "count_only",
                     "serializable"):
            value = getattr(self, name)
            if value:
                body[name] = value
        return body


@dataclass(frozen=True)
class Put(_Request):
    KIND: ClassVar[str] = "request_put"
    key: object
    value: object
    lease: int = 0
    prev_kv: bool = False

    def body(self):
        body = {"key": b64(self.key), "value": b64(self.value)}
        if self.lease:
            body["lease"] = str(self.lease)
        if self.prev_kv:
            body["prev_kv"] = True
        return body


@dataclass(frozen=True)
class Delete(_Request):
    KIND: ClassVar[str] = "request_delete_range"
    key: object
    prefix: bool = False
    prev_kv: bool = False

    def body(self):
        body = key_range(self.key, self.prefix)
        if self.prev_kv:
            body["prev_kv"] = True
        return body


class Compare:
    """One condition of a transaction, written as a comparison:
    ``Compare.create_revision(key) == 0``, ``Compare.value(key) == b"x"``,
    ``Compare.mod_revision(key) < rev``, ``Compare.lease(key) == lease``."""

    _FIELDS = {"version": ("VERSION", "version"),
               "create_revision": ("CREATE", "create_revision"),
               "mod_revision": ("MOD", "mod_revision"),
               "value": ("VALUE", "value"),
               "lease": ("LEASE", "lease")}

    def __init__(self, target, key, result=None, operand=None):
        self.target, self.key = target, key
        self.result, self.operand = result, operand

    def _with(self, result, operand):
        return Compare(self.target, self.key, result, operand)

    def __eq__(self, other):
        return self._with("EQUAL", other)

    def __ne__(self, other):
        return self._with("NOT_EQUAL", other)

    def __lt__(self, other):
        return self._with("LESS", other)

    def __gt__(self, other):
        return self._with("GREATER", other)

    __hash__ = None

    def body(self):
        if self.result is None:
            raise ValueError("a Compare needs an operator (==, !=, <, >)")
        target, name = self._FIELDS[self.target]
        operand = (b64(self.operand) if self.target == "value"
                   else str(int(self.operand)))
        return {"key": b64(self.key), "target": target,
                "result": self.result, name: operand}

    def __repr__(self):
        return "Compare.%s(%r) %s %r" % (self.target, self.key, self.result,
                                         self.operand)


for _name in Compare._FIELDS:
    setattr(Compare, _name,
            staticmethod(lambda key, _t=_name: Compare(_t, key)))


class Txn:
    """A transaction: if every compare holds, run the success operations,
    else the failure ones.  Built by chaining::

        Txn().when(Compare.create_revision(k) == 0) \\
             .then(Put(k, v, lease=lease)).otherwise(Range(k))
    """

    def __init__(self):
        self.compares: List[Compare] = []
        self.success: list = []
        self.failure: list = []

    def when(self, *compares):
        self.compares.extend(compares)
        return self

    def then(self, *ops):
        self.success.extend(ops)
        return self

    def otherwise(self, *ops):
        self.failure.extend(ops)
        return self

    def body(self):
        return {"compare": [c.body() for c in self.compares],
                "success": [op.txn_op() for op in self.success],
                "failure": [op.txn_op() for op in self.failure]}

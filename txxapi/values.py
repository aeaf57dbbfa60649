"""
Python representations of XenAPI values shared by every layer.

Values are kept as plain Python objects so that the database, the codecs and
the implementation modules agree without conversion:

  string, uuid, enum, ref  -> str
  int                      -> int     (64-bit; XML-RPC carries it as text)
  int32 (only event.from's valid_ref_counts) -> Int32
  float                    -> float
  bool                     -> bool
  datetime                 -> DateTime, a str in XAPI's "YYYYMMDDTHH:MM:SSZ" form
  set                      -> list
  map, record              -> dict

Stored values are never mutated in place: writers replace them.  That lets
readers (snapshots, event batches, threads) hold on to them safely.
"""

import calendar
import re
import time
import uuid as _uuid

NULL_REF = "OpaqueRef:NULL"
REF_PREFIX = "OpaqueRef:"


class DateTime(str):
    """A XenAPI datetime, held in XAPI's wire form: 20240315T08:09:10Z."""

    __slots__ = ()

    @classmethod
    def from_timestamp(cls, seconds):
        return cls(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(seconds)))

    @classmethod
    def now(cls):
        return cls.from_timestamp(time.time())

    def timestamp(self):
        return calendar.timegm(time.strptime(self, "%Y%m%dT%H:%M:%SZ"))


EPOCH = DateTime("19700101T00:00:00Z")

_DATETIME_FORMS = re.compile(
    r"^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(?:\.\d+)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(text):
    """Accept XAPI's form and RFC 3339 (with dashes, offsets); a missing
    zone means UTC.  Returns a DateTime or raises ValueError."""
    m = _DATETIME_FORMS.match(text.strip())
    if not m:
        raise ValueError("not a datetime: %r" % (text,))
    y, mo, d, h, mi, s, zone = m.groups()
    fields = (int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0)
    seconds = calendar.timegm(fields)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return DateTime.from_timestamp(seconds)


class Int32(int):
    """An int the XML-RPC writer emits as <i4> rather than as text."""

    __slots__ = ()


def new_uuid():
    return str(_uuid.uuid4())


def new_ref():
    return REF_PREFIX + str(_uuid.uuid4())

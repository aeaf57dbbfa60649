import math
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from txxapi.db import redolog
from txxapi.db.redolog import (
    RedoLog, RedoLogCorrupt, RedoLogError, decode_payload, encode_record,
    list_segments, replay, segment_name)
from txxapi.values import DateTime, Int32

ROOT = Path(__file__).resolve().parents[1]


class ThreadReactor:
    """Stands in for the reactor: callFromThread queues the call, and the
    test thread (playing the reactor thread) runs queued calls on demand."""

    def __init__(self):
        self.calls = queue.SimpleQueue()

    def callFromThread(self, f, *args, **kw):
        self.calls.put((f, args, kw))

    def run_until(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting")
            try:
                f, args, kw = self.calls.get(timeout=left)
            except queue.Empty:
                continue
            f(*args, **kw)

    def result(self, d, timeout=5.0):
        box = []
        d.addBoth(box.append)
        self.run_until(lambda: box, timeout)
        return box[0]


@pytest.fixture
def reactor():
    return ThreadReactor()


def same(a, b):
    """Equality that also insists on identical types (DateTime is not str,
    Int32 is not int, bool is not int) and treats NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        bk = {(type(k), k): k for k in b}
        return all((type(k), k) in bk and same(a[k], b[bk[type(k), k]])
                   for k in a)
    return a == b


def roundtrip(record, encode):
    return decode_payload(encode(record))


ENCODERS = [redolog.encode_payload_stdlib]
if redolog.encode_payload_orjson is not None:
    ENCODERS.append(redolog.encode_payload_orjson)


def rec(gen, op="mod", table="VM", ref="OpaqueRef:x", fields=None):
    if fields is None and op != "del":
        fields = {"name_label": "vm-%d" % gen}
    return (gen, op, table, ref, fields)


# ---------------------------------------------------------------- codec

SAMPLE = {
    "s": "plain",
    "u": "ünïcødé ☃",
    "empty": "",
    "dt": DateTime("20240315T08:09:10Z"),
    "i": 42,
    "neg": -(1 << 63),
    "u64": (1 << 64) - 1,
    "big": 1 << 80,
    "i32": Int32(-7),
    "f": 1.5,
    "negzero": -0.0,
    "nan": float("nan"),
    "inf": float("inf"),
    "t": True,
    "fa": False,
    "none": None,
    "set": ["a", DateTime("19700101T00:00:00Z"), Int32(1)],
    "map": {"k": "v", "when": DateTime("20000101T00:00:00Z")},
    "intmap": {0: 0.5, 1: 1.25},
    "dtkey": {DateTime("20240101T00:00:00Z"): "x"},
    "nulkey": {"\0d": "not a datetime"},
    "nulkey2": {"\0m": [], "other": 1},
    "surrogate": "bad\ud800",
    "nested": [{"a": [Int32(3), {"b": DateTime("20240101T00:00:00Z")}]}],
}


@pytest.mark.parametrize("encode", ENCODERS)
def test_codec_roundtrip_all_types(encode):
    for op, fields in [("add", SAMPLE), ("mod", {"x": 1}), ("del", None),
                       ("touch", {})]:
        record = (17, op, "VM", "OpaqueRef:abc", fields)
        assert same(roundtrip(record, encode), record)
    for key, value in SAMPLE.items():
        record = (1, "mod", "VM", "OpaqueRef:a", {key: value})
        assert same(roundtrip(record, encode), record), key


def test_codec_fast_path_is_plain_json():
    if redolog.encode_payload_orjson is None:
        pytest.skip("orjson not installed")
    enc = redolog.encode_payload_orjson
    assert enc(rec(1)).startswith(b"[")
    assert enc(rec(1, op="del")).startswith(b"[")
    tagged = enc(rec(1, fields={"t": DateTime("20240101T00:00:00Z")}))
    assert tagged.startswith(b"T[")


def test_codec_encoders_agree():
    # Either encoder's payload decodes with either parser.
    import json
    record = (5, "add", "VM", "OpaqueRef:a", SAMPLE)
    for encode in ENCODERS:
        payload = encode(record)
        assert same(decode_payload(payload, loads=json.loads), record)


values = st.recursive(
    st.none() | st.booleans() | st.text()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.builds(DateTime, st.text(max_size=20))
    | st.builds(Int32, st.integers(min_value=-(1 << 31),
                                   max_value=(1 << 31) - 1)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers()
                      | st.builds(DateTime, st.text(max_size=5)),
                      inner, max_size=4),
    max_leaves=10)


@settings(max_examples=60, deadline=None, database=None)
@given(fields=st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_codec_roundtrip_property(fields):
    record = (3, "add", "host", "OpaqueRef:h", fields)
    for encode in ENCODERS:
        assert same(roundtrip(record, encode), record)


def test_codec_rejects_unknown_types():
    with pytest.raises(TypeError):
        encode_record((1, "mod", "VM", "r", {"x": object()}))


# ------------------------------------------------------ append / replay


def test_append_wait_replay(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    assert log.last_generation is None
    records = [rec(g, fields={"n": g, "when": DateTime.from_timestamp(g)})
               for g in range(1, 51)]
    for r in records:
        log.append(r)
    assert reactor.result(log.wait_durable(50)) == 50
    assert log.durable_generation == 50
    # Already durable: says so, and a wait fires at once, without the
    # writer.
    assert log.is_durable(10) and log.is_durable(50)
    d = log.wait_durable(10)
    assert d.called
    log.append(rec(51))
    assert log.is_durable(50) and not log.is_durable(51)
    assert not log.is_durable(60)   # 51 is below it and not yet on disk
    assert reactor.result(log.wait_durable(51)) == 51
    assert log.is_durable(60)
    assert reactor.result(log.close()) == 51
    got = list(replay(str(tmp_path), 0))[:50]
    assert len(got) == 50 and all(map(same, got, records))
    assert [r[0] for r in replay(str(tmp_path), 45)] == [46, 47, 48, 49, 50,
                                                         51]
    assert list_segments(str(tmp_path)) == [(1, segment_name(1))]


def test_wait_for_unappended_generation(tmp_path, reactor):
    # Waiting on a generation beyond the last append (e.g. a skipped touch)
    # waits only for what was appended.
    log = RedoLog(str(tmp_path), reactor=reactor)
    assert log.is_durable(99)           # nothing appended at all
    assert log.wait_durable(99).called
    log.append(rec(5))
    assert reactor.result(log.wait_durable(9)) == 9
    reactor.result(log.close())


def test_generation_order_enforced(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    log.append(rec(5))
    with pytest.raises(ValueError):
        log.append(rec(5))
    with pytest.raises(ValueError):
        log.append((6, "bogus", "VM", "r", {}))
    reactor.result(log.close())
    with pytest.raises(RedoLogError):
        log.append(rec(7))


def test_waiters_fire_in_generation_order(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    fired = []
    for g in range(1, 21):
        log.append(rec(g))
    for g in (20, 3, 11, 1):
        log.wait_durable(g).addCallback(fired.append)
    reactor.result(log.close())
    assert fired == [1, 3, 11, 20]


def test_reopen_continues(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    for g in range(1, 11):
        log.append(rec(g))
    reactor.result(log.close())
    log = RedoLog(str(tmp_path), reactor=reactor)
    assert log.last_generation == 10
    with pytest.raises(ValueError):
        log.append(rec(10))
    log.append(rec(11))
    reactor.result(log.close())
    assert [r[0] for r in replay(str(tmp_path))] == list(range(1, 12))
    assert len(list_segments(str(tmp_path))) == 1


def test_directory_lock(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    with pytest.raises(RedoLogError):
        RedoLog(str(tmp_path), reactor=reactor)
    reactor.result(log.close())
    reactor.result(RedoLog(str(tmp_path), reactor=reactor).close())


# --------------------------------------------------------- group commit


def test_group_commit_groups(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    for g in range(1, 1001):
        log.append(rec(g))
    ds = [log.wait_durable(g) for g in range(1, 1001)]
    reactor.run_until(lambda: all(d.called for d in ds))
    assert log.stats["records"] == 1000
    assert log.stats["fsyncs"] < 100, log.stats
    reactor.result(log.close())


def test_no_group_commit_syncs_each(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor, group_commit=False)
    for g in range(1, 51):
        log.append(rec(g))
    reactor.result(log.wait_durable(50))
    assert log.stats["fsyncs"] == 50
    reactor.result(log.close())


# ------------------------------------------------------------ torn tail


def _write_log(path, reactor, gens):
    log = RedoLog(str(path), reactor=reactor)
    for g in gens:
        log.append(rec(g))
    reactor.result(log.close())
    (first, name), = list_segments(str(path))
    return path / name


def _damage_tail_cut(seg):
    size = seg.stat().st_size
    os.truncate(seg, size - 3)


def _damage_tail_crc(seg):
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # last payload byte: its CRC no longer matches
    seg.write_bytes(bytes(data))


def _damage_tail_header(seg):
    with open(seg, "ab") as f:
        f.write(b"\x00\x00\x01")  # a few bytes of the next header


def _damage_tail_zeros(seg):
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)  # size grew, data never arrived


@pytest.mark.parametrize("damage,lost", [
    (_damage_tail_cut, 1), (_damage_tail_crc, 1),
    (_damage_tail_header, 0), (_damage_tail_zeros, 0)])
def test_torn_tail(tmp_path, reactor, damage, lost):
    seg = _write_log(tmp_path, reactor, range(1, 21))
    damage(seg)
    good = 20 - lost
    assert [r[0] for r in replay(str(tmp_path))] == list(range(1, good + 1))
    log = RedoLog(str(tmp_path), reactor=reactor)
    assert log.last_generation == good
    log.append(rec(good + 1))
    log.append(rec(good + 2))
    reactor.result(log.close())
    assert [r[0] for r in replay(str(tmp_path))] == list(
        range(1, good + 3))


def test_torn_only_record_removes_segment(tmp_path, reactor):
    seg = _write_log(tmp_path, reactor, [7])
    os.truncate(seg, 5)
    log = RedoLog(str(tmp_path), reactor=reactor)
    assert log.last_generation is None
    assert not seg.exists()
    log.append(rec(8))
    reactor.result(log.close())
    assert list_segments(str(tmp_path)) == [(8, segment_name(8))]


def test_corruption_in_older_segment_is_an_error(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    for g in range(1, 11):
        log.append(rec(g))
    log.rotate()
    for g in range(11, 21):
        log.append(rec(g))
    reactor.result(log.close())
    first = tmp_path / segment_name(1)
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x55
    first.write_bytes(bytes(data))
    with pytest.raises(RedoLogCorrupt):
        list(replay(str(tmp_path)))
    # Truncated older segment: also not explainable by a crash.
    first.write_bytes(bytes(data[:-2]))
    with pytest.raises(RedoLogCorrupt):
        list(replay(str(tmp_path)))


# ------------------------------------------------------------- rotation


def test_rotate_and_drop_through(tmp_path, reactor):
    d = str(tmp_path)
    log = RedoLog(d, reactor=reactor)
    for g in range(1, 11):
        log.append(rec(g))
    assert log.rotate() == 10
    for g in range(11, 21):
        log.append(rec(g))
    reactor.result(log.wait_durable(20))
    assert [s[0] for s in list_segments(d)] == [1, 11]
    # 11.. is the open segment: never dropped.
    assert reactor.result(log.drop_through(15)) == [segment_name(1)]
    assert [r[0] for r in replay(d, 0)] == list(range(11, 21))

    # Snapshot boundary above the last record; drop right after rotate
    # (the writer keeps them in order).
    assert log.rotate(25) == 25
    with pytest.raises(ValueError):
        log.append(rec(25))
    assert reactor.result(log.drop_through(25)) == [segment_name(11)]
    assert list_segments(d) == []
    log.append(rec(26))
    reactor.result(log.close())
    assert [r[0] for r in replay(d)] == [26]
    assert [r[0] for r in replay(d, 26)] == []


def test_drop_through_keeps_newer(tmp_path, reactor):
    d = str(tmp_path)
    log = RedoLog(d, reactor=reactor)
    for g in range(1, 6):
        log.append(rec(g))
    log.rotate()
    for g in range(6, 9):
        log.append(rec(g))
    log.rotate()
    assert reactor.result(log.drop_through(3)) == []
    assert reactor.result(log.drop_through(5)) == [segment_name(1)]
    assert reactor.result(log.drop_through(8)) == [segment_name(6)]
    reactor.result(log.close())


# ----------------------------------------------------------- real crash

RECORD_SRC = textwrap.dedent('''
    from txxapi.values import DateTime, Int32

    def make_record(g):
        fields = {
            "name_label": "vm-%d" % g + "x" * (g * 37 % 300),
            "generation": g,
            "when": DateTime.from_timestamp(1700000000 + g),
            "count": Int32(g % 1000),
            "ratio": g / 7.0,
            "other_config": {"k%d" % i: str(i * g) for i in range(g % 5)},
            "vcpus": {i: float(i) for i in range(g % 3)},
        }
        if g % 10 == 0:
            return (g, "del", "VM", "OpaqueRef:%d" % (g - 1), None)
        return (g, "add" if g % 2 else "mod", "VM", "OpaqueRef:%d" % g,
                fields)
''')

CHILD_SRC = RECORD_SRC + textwrap.dedent('''
    import sys
    from twisted.internet import reactor
    from txxapi.db.redolog import RedoLog

    log = RedoLog(sys.argv[1])
    counter = [log.last_generation or 0]

    def step(_=None):
        counter[0] += 1
        g = counter[0]
        log.append(make_record(g))
        d = log.wait_durable(g)
        d.addCallback(done)

    def done(g):
        sys.stdout.write("%d\\n" % g)
        sys.stdout.flush()
        step()

    def start():
        for _ in range(8):  # eight concurrent writers
            step()

    reactor.callWhenRunning(start)
    reactor.run()
''')


def test_crash_kill_9(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD_SRC)
    logdir = tmp_path / "log"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(logdir)],
                            stdout=subprocess.PIPE, cwd=str(ROOT), env=env)
    printed = []
    try:
        deadline = time.monotonic() + 20
        while len(printed) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert len(printed) >= 400, "child stopped early"

    ns = {}
    exec(RECORD_SRC, ns)
    got = list(replay(str(logdir)))
    gens = [r[0] for r in got]
    assert gens == list(range(1, len(gens) + 1))
    assert max(printed) <= len(gens)
    for r in got:
        assert same(r, ns["make_record"](r[0]))

    # The log opens for append after the crash and carries on.
    r = ThreadReactor()
    log = RedoLog(str(logdir), reactor=r)
    assert log.last_generation == len(gens)
    log.append(ns["make_record"](len(gens) + 1))
    r.result(log.close())
    assert [x[0] for x in replay(str(logdir), len(gens) - 1)] == [
        len(gens), len(gens) + 1]


def test_writer_failure_fails_waiters(tmp_path, reactor, monkeypatch):
    def broken(fd):
        raise OSError(5, "simulated EIO")

    monkeypatch.setattr(redolog.writer, "_fsync_data", broken)
    log = RedoLog(str(tmp_path), reactor=reactor)
    log.append(rec(1))
    failure = reactor.result(log.wait_durable(1))
    assert failure.check(RedoLogError)
    assert not log.is_durable(1)     # never on disk
    with pytest.raises(RedoLogError):
        log.append(rec(2))
    assert reactor.result(log.wait_durable(1)).check(RedoLogError)
    assert reactor.result(log.close()).check(RedoLogError)


def test_segments_are_private(tmp_path, reactor):
    log = RedoLog(str(tmp_path / "log"), reactor=reactor)
    log.append(rec(1))
    reactor.result(log.close())
    [(_, name)] = list_segments(str(tmp_path / "log"))
    path = tmp_path / "log" / name
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o700
    # A segment an older version left world-readable is made private.
    path.chmod(0o644)
    reactor.result(RedoLog(str(tmp_path / "log"), reactor=reactor).close())
    assert path.stat().st_mode & 0o777 == 0o600


def test_append_reports_frame_size(tmp_path, reactor):
    log = RedoLog(str(tmp_path), reactor=reactor)
    sizes = [log.append(rec(g)) for g in range(1, 11)]
    reactor.result(log.close())
    assert sizes == [len(encode_record(rec(g))) for g in range(1, 11)]
    assert sum(sizes) == redolog.log_bytes(str(tmp_path))

"""
The XVA format's parts in process, against archives Python's tarfile,
gzip and zstandard make: the tar reader fed a byte at a time and with
pax and GNU long-name headers, the decoder on concatenated gzip members
and zstd frames, chunk offsets worked out from gaps (keep-alive chunks
included), the exporter's chunk plan and keep-alive, and ova.xml's
refusals (the old <appliance> directory form among them).
"""

import gzip
import io
import os
import tarfile

import pytest
import zstandard

from txxapi.errors import XenAPIError
from txxapi.xva import chunks, codecs, ova, tar

MIB = 1 << 20


def members_via_reader(data, step):
    reader = tar.TarReader(4 * MIB)
    out = []
    for at in range(0, len(data), step):
        reader.feed(data[at:at + step])
        while True:
            got = reader.next()
            if got is None or got == tar.TarReader.END:
                break
            out.append(got)
        if reader.ended:
            break
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_the_reader_takes_what_tarfile_writes(fmt):
    long = "Ref:1/" + "x" * 150
    files = [("ova.xml", b"<value/>"), ("Ref:1/00000000", os.urandom(1000)),
             ("Ref:1/00000000.xxhash", b"0123456789ABCDEF")]
    if fmt != tarfile.USTAR_FORMAT:
        files.append((long, b"long name"))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    assert members_via_reader(data, 1) == files
    assert members_via_reader(data, 100000) == files


def test_our_headers_are_read_by_tarfile():
    data = tar.member("ova.xml", b"abc", 12345) + tar.member(
        "Ref:0/00000001", b"x" * 600) + tar.END_OF_ARCHIVE
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        got = [(m.name, m.mtime, t.extractfile(m).read()) for m in t]
    assert got == [("ova.xml", 12345, b"abc"),
                   ("Ref:0/00000001", 0, b"x" * 600)]


def test_damaged_and_oversized_headers_are_refused():
    block = bytearray(tar.header("ova.xml", 3))
    block[0] ^= 1
    reader = tar.TarReader(MIB)
    reader.feed(bytes(block))
    with pytest.raises(tar.TarError):
        reader.next()
    reader = tar.TarReader(10)
    reader.feed(tar.header("big", 11))
    with pytest.raises(tar.TarError):
        reader.next()


def decoded(data, step=7000):
    d = codecs.Decoder()
    out = b"".join(b"".join(d.decode(data[at:at + step]))
                   for at in range(0, len(data), step))
    return out + b"".join(d.finish()), d.algorithm


def test_the_decoder_finds_the_compression_by_its_magic():
    plain = os.urandom(100000) + bytes(300000)
    assert decoded(plain) == (plain, None)
    twice = gzip.compress(plain[:1000]) + gzip.compress(plain[1000:])
    assert decoded(twice) == (plain, "gzip")
    frames = zstandard.ZstdCompressor().compress(plain[:5]) + \
        zstandard.ZstdCompressor().compress(plain[5:])
    assert decoded(frames, 3) == (plain, "zstd")
    assert decoded(b"ab") == (b"ab", None)
    with pytest.raises(codecs.DecodeError):
        decoded(b"\x1f\x8b" + b"\0" * 100)


def test_decompression_comes_out_in_bounded_pieces():
    bomb = gzip.compress(bytes(64 * MIB))
    pieces = list(codecs.Decoder().decode(bomb))
    assert sum(map(len, pieces)) == 64 * MIB
    assert max(map(len, pieces)) <= codecs.MAX_OUTPUT


def test_round_trip_through_the_compressors():
    data = os.urandom(50000) * 3
    for algorithm in ("gzip", "zstd"):
        c = codecs.compressor(algorithm)
        packed = c.compress(data[:1000]) + c.compress(data[1000:]) + \
            c.flush()
        assert decoded(packed) == (data, algorithm)


def sink_writes(sink, members):
    writes = []
    for name, data in members:
        writes += sink.take(name, data)
    return writes


def with_checksums(prefix, numbered):
    out = []
    for number, data in numbered:
        name = chunks.chunk_name(prefix, number)
        out += [(name, data), (name + ".xxhash",
                               chunks.xxhash_of(data).encode())]
    return out


def test_offsets_come_from_gaps_not_numbers():
    a, b, c = b"a" * MIB, b"b" * MIB, b"c" * 10
    # Chunk 3 is a keep-alive (empty): the numbers after it shift by one.
    sink = chunks.DiskSink("Ref:4", 5 * MIB + 10)
    writes = sink_writes(sink, with_checksums(
        "Ref:4", [(0, a), (2, b), (3, b""), (6, c)]))
    assert [(off, len(d)) for off, d in writes] == [
        (0, MIB), (2 * MIB, MIB), (5 * MIB, 10)]
    assert sink.complete


def test_chunks_out_of_order_or_misnamed_are_refused():
    sink = chunks.DiskSink("Ref:4", 3 * MIB)
    sink_writes(sink, with_checksums("Ref:4", [(1, b"x")]))
    with pytest.raises(XenAPIError) as e:
        sink.take("Ref:4/00000001", b"y")
    assert e.value.code == "IMPORT_ERROR"
    with pytest.raises(XenAPIError):
        chunks.DiskSink("Ref:4", MIB).take("Ref:5/00000000", b"")
    sink = chunks.DiskSink("Ref:4", MIB)
    sink.take("Ref:4/00000000", b"z")
    with pytest.raises(XenAPIError) as e:
        sink.take("Ref:4/00000000.md5", b"00")
    assert "checksum file" in e.value.description[1]
    forced = chunks.DiskSink("Ref:4", MIB, force=True)
    forced.take("Ref:4/00000000", b"z")
    forced.take("Ref:4/00000000.checksum", b"0" * 40)


def test_the_plan_keeps_the_first_and_last_chunks():
    size = 10 * MIB + 5
    assert chunks.chunks_to_read([], size) == [0, 10]
    assert chunks.chunks_to_read([(3 * MIB - 1, 2)], size) == [0, 2, 3, 10]
    assert chunks.chunks_to_read([(0, size)], size) == list(range(11))
    assert chunks.chunks_to_read([], 0) == []


class _Raw:
    format, read_only, vdi_uuid = "raw", True, "x"

    def __init__(self, path):
        self.path = path


def test_members_leave_out_zero_chunks_and_keep_the_connection(tmp_path):
    path = tmp_path / "disk"
    with open(path, "wb") as f:
        f.truncate(6 * MIB)
        f.seek(MIB)
        f.write(bytes(MIB))          # allocated, but zero
        f.write(b"\1" * MIB)
    ticks = iter(range(0, 1000, 6))     # six "seconds" a look
    data = b"".join(chunks.members(_Raw(str(path)), "Ref:9", 6 * MIB,
                                   clock=lambda: next(ticks)))
    got = [(m.name, m.size) for m in tarfile.open(fileobj=io.BytesIO(
        data + tar.END_OF_ARCHIVE)) if not m.name.endswith(".xxhash")]
    # The first and last always; chunk 1 (zeros) never; keep-alives
    # (empty) before the others, each taking a number.
    assert got[0] == ("Ref:9/00000000", MIB) and got[-1][1] == MIB
    assert [size for _, size in got[1:-1]] in ([0, MIB], [0, 0, MIB])
    sink = chunks.DiskSink("Ref:9", 6 * MIB)
    with tarfile.open(fileobj=io.BytesIO(data + tar.END_OF_ARCHIVE)) as t:
        writes = sink_writes(sink, [(m.name, t.extractfile(m).read())
                                    for m in t])
    assert sink.complete
    image = bytearray(6 * MIB)
    for off, d in writes:
        image[off:off + len(d)] = d
    assert bytes(image) == open(path, "rb").read()


def test_ova_xml_refusals():
    with pytest.raises(XenAPIError) as e:
        ova.parse(b'<appliance version="0.1"><vm name="x"/></appliance>')
    assert e.value.code == "IMPORT_ERROR"
    with pytest.raises(XenAPIError):
        ova.parse(b"<value><struct></struct></value>")
    with pytest.raises(XenAPIError):
        ova.parse(b"<!DOCTYPE x [<!ENTITY a 'b'>]><value>&a;</value>")
    header = ova.parse(
        b"<value><struct><member><name>version</name><value><struct>"
        b"<member><name>xapi_major</name><value>99</value></member>"
        b"<member><name>xapi_minor</name><value><int>1</int></value>"
        b"</member></struct></value></member><member><name>objects</name>"
        b"<value><array><data/></array></value></member></struct></value>")
    assert (header.major, header.minor, header.export_vsn) == (99, 1, 0)

"""
Whole-stream compression of an XVA, as XAPI offers it: gzip or zstd on
export (use_compression=true|gzip|zstd), and on import the stream's
first bytes decide (zstd's magic, gzip's, else a plain tar).

Decompression is bounded: the input goes in slices, so a small hostile
upload cannot expand into a huge buffer at once.
"""

import zlib

import zstandard

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
# gzip at level 1, as a backup stream is mostly judged by its speed.
GZIP_LEVEL = 1
ZSTD_LEVEL = 3
# Most bytes one decompression call may produce.
MAX_OUTPUT = 8 << 20
# zstd has no output bound per call: compressed input goes in slices
# whose worst case expansion stays bounded.
ZSTD_SLICE = 4096


def compression_of(value):
    """The algorithm a use_compression value asks for (None: none)."""
    return {"true": "gzip", "gzip": "gzip", "zstd": "zstd"}.get(value)


class _Plain:
    def compress(self, data):
        return data

    def flush(self):
        return b""


class _Gzip:
    def __init__(self):
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + 15)

    def compress(self, data):
        return self._z.compress(data)

    def flush(self):
        return self._z.flush()


class _Zstd:
    def __init__(self):
        self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

    def compress(self, data):
        return self._z.compress(data)

    def flush(self):
        return self._z.flush()


def compressor(algorithm):
    """compress(bytes) -> bytes and flush() -> bytes for the algorithm."""
    return {None: _Plain, "gzip": _Gzip, "zstd": _Zstd}[algorithm]()


class DecodeError(Exception):
    pass


class Decoder:
    """Undoes whatever compression the stream has, found from its first
    bytes.  decode(data) yields the plain bytes in bounded pieces."""

    def __init__(self):
        self._head = b""
        self._kind = None
        self._z = None
        self.algorithm = None

    def decode(self, data):
        if self._kind is None:
            self._head += data
            if len(self._head) < len(ZSTD_MAGIC):
                return
            data, self._head = self._head, b""
            self._start(data)
        yield from self._run(data)

    def finish(self):
        """Whatever is left at the end of the input (a stream shorter
        than a magic number is taken as plain)."""
        if self._kind is None and self._head:
            data, self._head = self._head, b""
            self._start(data)
            yield from self._run(data)

    def _run(self, data):
        if self._kind == "plain":
            if data:
                yield data
        elif self._kind == "gzip":
            yield from self._gunzip(data)
        else:
            yield from self._unzstd(data)

    def _start(self, data):
        if data.startswith(ZSTD_MAGIC):
            self._kind = self.algorithm = "zstd"
            self._z = zstandard.ZstdDecompressor().decompressobj(
                read_across_frames=True)
        elif data.startswith(GZIP_MAGIC):
            self._kind = self.algorithm = "gzip"
            self._z = zlib.decompressobj(16 + 15)
        else:
            self._kind = "plain"

    def _gunzip(self, data):
        z = self._z
        try:
            while True:
                if z.eof:
                    # Another gzip member may follow (concatenated gzip).
                    data = z.unused_data + data
                    if not data:
                        return
                    z = self._z = zlib.decompressobj(16 + 15)
                out = z.decompress(data, MAX_OUTPUT)
                data = z.unconsumed_tail
                if out:
                    yield out
                if not data and not z.eof:
                    return
        except zlib.error as e:
            raise DecodeError("gzip: %s" % e)

    def _unzstd(self, data):
        view = memoryview(data)
        try:
            for at in range(0, len(view), ZSTD_SLICE):
                out = self._z.decompress(view[at:at + ZSTD_SLICE])
                if out:
                    yield out
        except zstandard.ZstdError as e:
            raise DecodeError("zstd: %s" % e)

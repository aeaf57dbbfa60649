"""
A disk inside an XVA: members ``Ref:N/%08d`` of 1 MiB, each followed by
its checksum member (``.xxhash``: 16 upper-case hex digits of XXH64, as
XAPI writes now; ``.checksum``: 40 hex digits of SHA-1, as older XAPI and
other tools write).

Export (members): the chunks that may hold data are read (the image's
allocation map says which), all-zero ones are left out, the first and the
last are always written.  After KEEPALIVE seconds without a member, an
empty chunk goes out so that firewalls keep the connection, and the
numbers after it shift by one, as XAPI's do.

Import (DiskSink): a chunk's offset comes from the gap since the previous
number (missing numbers are zero chunks of the first chunk's length),
never from its number alone, as XAPI computes it.
"""

import ctypes
import ctypes.util
import hashlib
import time

import xxhash

from txstorage import transfer
from txstorage.vhd import is_zero
from txxapi.errors import XenAPIError
from txxapi.xva import tar

CHUNK = 1 << 20
KEEPALIVE = 5.0
XXHASH, SHA1 = ".xxhash", ".checksum"


def _xxh64():
    """XXH64 of bytes: the system's libxxhash through ctypes where there
    is one, since a foreign call lets go of the GIL while it hashes (the
    xxhash module holds it), so the reactor goes on sending meanwhile."""
    path = ctypes.util.find_library("xxhash")
    try:
        native = ctypes.CDLL(path).XXH64 if path else None
    except (OSError, AttributeError):
        native = None
    if native is None:
        return xxhash.xxh64_intdigest
    native.restype = ctypes.c_ulonglong
    native.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_ulonglong)
    return lambda data: native(bytes(data), len(data), 0)


_XXH64 = _xxh64()


def xxhash_of(data):
    return "%016X" % _XXH64(data)


def sha1_of(data):
    return hashlib.sha1(data).hexdigest()


DIGESTS = {XXHASH: xxhash_of, SHA1: sha1_of}


def chunk_name(prefix, number):
    return "%s/%08d" % (prefix, number)


def chunk_members(name, data, checksum=XXHASH):
    """The tar bytes of one chunk and its checksum member."""
    digest = DIGESTS[checksum](data).encode()
    return (tar.header(name, len(data)), data,
            tar.padding(len(data)) + tar.member(name + checksum, digest))


def chunks_to_read(extents, size):
    """Indices of the chunks that may hold data, with the first and the
    last chunk always among them, in order."""
    if size <= 0:
        return []
    last = (size - 1) // CHUNK
    wanted = {0, last}
    for start, length in extents:
        if length <= 0 or start >= size:
            continue
        end = min(start + length, size)
        wanted.update(range(start // CHUNK, (end - 1) // CHUNK + 1))
    return sorted(wanted)


def members(attach_info, prefix, size, clock=time.monotonic,
            keepalive=KEEPALIVE):
    """The members of one disk of ``size`` bytes: an iterator of byte
    strings, to run on a thread (it reads the image).  A chunk's data goes
    out as it was read; the small pieces around it (the checksum member,
    the next header) are joined."""
    reader = transfer.open_raw_reader(attach_info)
    try:
        plan = chunks_to_read(
            transfer.allocated_extents(attach_info, reader.entries), size)
        last = len(plan) - 1
        readable = reader.size
        requests = []
        for idx in plan:
            offset = idx * CHUNK
            requests.append((offset, max(0, min(CHUNK, size - offset,
                                                 readable - offset))))
        pieces = reader.iter_pieces(r for r in requests if r[1] > 0)
        shift = 0
        sent = clock()
        small = b""                 # bytes waiting to go before the data
        for pos, idx in enumerate(plan):
            offset, n = requests[pos]
            length = min(CHUNK, size - offset)
            data = next(pieces) if n > 0 else b""
            if len(data) < length:
                data = bytes(data) + bytes(length - len(data))
            edge = pos == 0 or pos == last
            if not edge and clock() - sent > keepalive:
                yield small + b"".join(chunk_members(
                    chunk_name(prefix, idx + shift), b""))
                small = b""
                shift += 1
                sent = clock()
            if edge or not is_zero(data):
                head, data, tail = chunk_members(
                    chunk_name(prefix, idx + shift), data)
                yield small + head
                yield data
                small = tail
                sent = clock()
        if small:
            yield small
    finally:
        reader.close()


class DiskSink:
    """The chunks of one disk as they come out of the tar: checks their
    names and checksums and turns them into (offset, data) writes."""

    def __init__(self, prefix, size, force=False):
        self.prefix = prefix + "/"
        self.size = size
        self.force = force
        self.offset = 0
        self._last = -1
        self._first_length = None
        self._chunk = None          # (name, data) waiting for its checksum
        self.computed = {}          # chunk name -> checksum (old formats)

    @property
    def complete(self):
        return self._chunk is None and self.offset >= self.size

    def take(self, name, data):
        """One member of this disk: a list of (offset, data) writes."""
        if self._chunk is None:
            return self._take_chunk(name, data)
        self._take_checksum(name, data)
        return []

    def _take_chunk(self, name, data):
        suffix = name[len(self.prefix):]
        if not name.startswith(self.prefix) or not suffix.isdigit():
            raise XenAPIError(
                "IMPORT_ERROR",
                "Invalid XVA file: expected a chunk of %s, found %s"
                % (self.prefix[:-1], name))
        number = int(suffix)
        if number <= self._last:
            raise XenAPIError(
                "IMPORT_ERROR",
                "Invalid XVA file: chunk %s after chunk %d" % (name,
                                                               self._last))
        if self._first_length is None:
            self._first_length = len(data)
        skipped = (number - self._last - 1) * self._first_length
        self._last = number
        at = self.offset + skipped
        self.offset = at + len(data)
        self._chunk = (name, data)
        return [(at, data)] if data else []

    def _take_checksum(self, name, digest):
        chunk, data = self._chunk
        self._chunk = None
        ext = name[len(chunk):]
        if not name.startswith(chunk) or ext not in DIGESTS:
            raise XenAPIError(
                "IMPORT_ERROR",
                "Expected to find a supported inline checksum file, "
                "instead found a file called: %s" % name)
        computed = DIGESTS[ext](data)
        self.computed[chunk] = computed
        given = digest.decode("ascii", "replace").strip()
        if given.lower() != computed.lower() and not self.force:
            raise XenAPIError(
                "IMPORT_ERROR",
                "Block %s checksum failed: original = %s; recomputed = %s"
                % (chunk, given, computed))

"""
The tar container of an XVA: ustar headers written for the exporter, and
an incremental reader for the importer that takes the stream in pieces
as they arrive and hands out whole members (an XVA's members are small:
ova.xml, 1 MiB chunks, 16-byte checksums), never seeking.
"""

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
_ZERO_BLOCK = bytes(BLOCK)


class TarError(Exception):
    """A stream that is not a tar archive, or a damaged one."""


def header(name, size, mtime=0, mode=0o644):
    """The 512-byte ustar header of a regular file."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise TarError("member name too long: %r" % name)
    buf = bytearray(BLOCK)
    buf[0:len(raw)] = raw
    buf[100:108] = b"%07o\0" % mode
    buf[108:116] = b"%07o\0" % 0
    buf[116:124] = b"%07o\0" % 0
    buf[124:136] = b"%011o\0" % size
    buf[136:148] = b"%011o\0" % mtime
    buf[148:156] = b" " * 8
    buf[156:157] = b"0"
    buf[257:265] = b"ustar\x0000"
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def padding(size):
    """The zero bytes that round a member's data up to a block."""
    return bytes(-size % BLOCK)


def member(name, data, mtime=0):
    """A whole member: header, data and padding, as one piece."""
    return header(name, len(data), mtime) + data + padding(len(data))


def _number(field):
    """A numeric header field: octal text, or GNU base-256 for large
    values."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError("bad number in a tar header: %r" % bytes(field))


def parse_header(block):
    """(name, size, typeflag) of a header block; TarError if it is not
    one."""
    stored = _number(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise TarError("tar header checksum mismatch")
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return (name.decode("utf-8", "replace"), _number(block[124:136]),
            block[156:157])


def _pax_records(data):
    """The key=value records of a pax extended header."""
    out = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise TarError("bad pax header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarError("bad pax header")
        record = data[space + 1:pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8",
                                                           "replace")
        if length <= 0:
            raise TarError("bad pax header")
        pos += length
    return out


class TarReader:
    """Feed it the archive's bytes in any pieces; next() returns the next
    (name, data) member once all of it is in, None while more is needed,
    and END at the end-of-archive block.  Members larger than
    ``max_member`` are refused (the archive is hostile or not an XVA)."""

    END = ("", None)

    def __init__(self, max_member):
        self.max_member = max_member
        self._buf = bytearray()
        self._pos = 0
        self._pending = None        # (name, size, flag) of the next data
        self._long_name = None
        self._pax = {}
        self.ended = False

    def feed(self, data):
        if self._pos > (1 << 20) and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self):
        return len(self._buf) - self._pos

    def _take(self, n):
        if self.buffered < n:
            return None
        start = self._pos
        self._pos += n
        return self._buf, start

    def next(self):
        while not self.ended:
            if self._pending is None:
                got = self._take(BLOCK)
                if got is None:
                    return None
                buf, at = got
                block = bytes(buf[at:at + BLOCK])
                if block == _ZERO_BLOCK:
                    self.ended = True
                    return self.END
                name, size, flag = parse_header(block)
                if size > self.max_member:
                    raise TarError("tar member %s too large (%d bytes)"
                                   % (name, size))
                self._pending = (name, size, flag)
            name, size, flag = self._pending
            if self.buffered < size + len(padding(size)):
                return None
            start = self._pos
            data = bytes(self._buf[start:start + size])
            self._pos += size + len(padding(size))
            self._pending = None
            if flag in (b"x", b"g", b"L"):
                self._meta(flag, data)
                continue
            if flag not in (b"0", b"\0", b"7"):
                # Directories, links and the like carry no data of ours.
                continue
            if self._long_name is not None:
                name, self._long_name = self._long_name, None
            if self._pax:
                name = self._pax.pop("path", name)
                self._pax = {}
            return name, data
        return self.END

    def _meta(self, flag, data):
        if flag == b"L":
            self._long_name = data.split(b"\0", 1)[0].decode("utf-8",
                                                             "replace")
        elif flag == b"x":
            self._pax = _pax_records(data)

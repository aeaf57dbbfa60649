"""
The thin CLI protocol between ``xe`` and the server's /cli handler, as
XAPI's cli_protocol states it: a banner (the prefix, then major and minor
as little-endian int32s) each way, then framed messages.  A frame is an
int32 length and a payload; the payload starts with a tag (Command,
Response, Blob) and a subtag.  Strings are an int32 length and bytes;
lists an int32 count and items.  The bytes of a blob chunk follow its
frame unframed.

Both sides of the package use this module; the encoders and the decoder
are plain functions of bytes.
"""

import struct

PREFIX = b"XenSource thin CLI protocol"
MAJOR, MINOR = 0, 2
BANNER = PREFIX + struct.pack("<ii", MAJOR, MINOR)

# A request header of this package's xe (XAPI's ignores it): the
# client's stderr is a terminal, so long commands draw their task's
# progress there.  A client without it gets XAPI's output exactly.
TERMINAL_HEADER = b"x-xe-terminal"

# Message tags.
COMMAND, RESPONSE, BLOB = 9, 10, 11
# Command subtags.
PRINT, LOAD, PROMPT, EXIT = 0, 1, 3, 4
HTTP_GET, HTTP_PUT, ERROR, DEBUG, PRINT_STDERR, HTTP_CONNECT = (
    12, 13, 14, 15, 16, 17)
# Response subtags.
OK, FAILED, WAIT = 5, 6, 18
# Blob subtags.
CHUNK, END = 7, 8


class ProtocolError(Exception):
    pass


def _int(n):
    return struct.pack("<i", n)


def _string(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return _int(len(s)) + s


def frame(payload):
    return _int(len(payload)) + payload


def command(subtag, *parts):
    return frame(_int(COMMAND) + _int(subtag) + b"".join(parts))


def print_(text):
    return command(PRINT, _string(text))


def print_stderr(text):
    return command(PRINT_STDERR, _string(text))


def debug(text):
    return command(DEBUG, _string(text))


def load(filename):
    return command(LOAD, _string(filename))


def http_get(filename, path):
    return command(HTTP_GET, _string(filename), _string(path))


def http_put(filename, path):
    return command(HTTP_PUT, _string(filename), _string(path))


def http_connect(path):
    return command(HTTP_CONNECT, _string(path))


def prompt():
    return command(PROMPT)


def exit_(code):
    return command(EXIT, _int(code))


def error(code, params):
    return command(ERROR, _string(code), _int(len(params)),
                   *[_string(p) for p in params])


def response(subtag):
    return frame(_int(RESPONSE) + _int(subtag))


def chunk(length):
    """The frame that announces ``length`` raw bytes."""
    return frame(_int(BLOB) + _int(CHUNK) + _int(length))


def end():
    return frame(_int(BLOB) + _int(END))


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def int(self):
        if self.pos + 4 > len(self.data):
            raise ProtocolError("truncated message")
        (n,) = struct.unpack_from("<i", self.data, self.pos)
        self.pos += 4
        return n

    def string(self):
        n = self.int()
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("truncated string")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", "replace")


def decode(payload):
    """A frame's payload as a tuple: (COMMAND, subtag, *args),
    (RESPONSE, subtag) or (BLOB, CHUNK, length) / (BLOB, END)."""
    r = _Reader(payload)
    tag, sub = r.int(), r.int()
    if tag == RESPONSE and sub in (OK, FAILED, WAIT):
        return (tag, sub)
    if tag == BLOB and sub == CHUNK:
        return (tag, sub, r.int())
    if tag == BLOB and sub == END:
        return (tag, sub)
    if tag != COMMAND:
        raise ProtocolError("unknown tag %d/%d" % (tag, sub))
    if sub in (PRINT, PRINT_STDERR, DEBUG, LOAD, HTTP_CONNECT):
        return (tag, sub, r.string())
    if sub in (HTTP_GET, HTTP_PUT):
        return (tag, sub, r.string(), r.string())
    if sub == PROMPT:
        return (tag, sub)
    if sub == EXIT:
        return (tag, sub, r.int())
    if sub == ERROR:
        code = r.string()
        return (tag, sub, code, [r.string() for _ in range(r.int())])
    raise ProtocolError("unknown command %d" % sub)


def parse_banner(data):
    """(major, minor) of a banner's bytes, or ProtocolError."""
    if len(data) != len(BANNER) or not data.startswith(PREFIX):
        raise ProtocolError("not a thin CLI banner")
    return struct.unpack_from("<ii", data, len(PREFIX))

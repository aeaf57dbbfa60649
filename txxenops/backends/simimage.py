"""
The simulator's suspend images and migration streams.

Both carry one frame: a header line "<magic> <version> <length>\n" then
<length> bytes of JSON.  Images are written in place (the target may be a
block device) and any bytes after the frame are ignored.  On a migration
stream the frame is followed by the receiver's READY, the guest's memory
(simmemory), its OK and the sender's GO.
"""

import json
import os

from txxenops.errors import MigrationError

IMAGE_MAGIC = b"TXXENOPS-SIM-IMAGE"
IMAGE_VERSION = 1
MAX_IMAGE = 64 * 1024 * 1024


def _frame(image):
    payload = json.dumps(image).encode()
    return b"%s %d %d\n" % (IMAGE_MAGIC, IMAGE_VERSION, len(payload)) + \
        payload


def _parse_header(line):
    parts = line.split()
    if len(parts) != 3 or parts[0] != IMAGE_MAGIC:
        raise ValueError("not a simulator domain image")
    if int(parts[1]) != IMAGE_VERSION:
        raise ValueError("image version %s unsupported" % parts[1].decode())
    length = int(parts[2])
    if not 0 < length <= MAX_IMAGE:
        raise ValueError("bad image length %d" % length)
    return length


def write_image(fd, image):
    """The image's frame, written sequentially to the descriptor ``fd``."""
    view = memoryview(_frame(image))
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 65536))
        if not chunk:
            raise ValueError("truncated image")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_image(fd):
    """The image framed at the descriptor's position; reads nothing past
    it (a pipe's writer may have more to say)."""
    line = bytearray()
    while len(line) < 128 and not line.endswith(b"\n"):
        c = os.read(fd, 1)
        if not c:
            break
        line += c
    length = _parse_header(bytes(line))
    return json.loads(_read_exact(fd, length))


def send_frame(sock, image):
    sock.sendall(_frame(image))


def _recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise ValueError("stream ended early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_line(sock, limit=4096):
    """One line from ``sock`` without reading past it (the rest of the
    stream belongs to the next step of the protocol)."""
    out = bytearray()
    while len(out) < limit:
        c = sock.recv(1)
        if not c:
            raise ValueError("stream ended early")
        if c == b"\n":
            return bytes(out)
        out += c
    raise ValueError("line too long")


def read_frame(sock):
    length = _parse_header(read_line(sock, 128))
    return json.loads(_recv_exact(sock, length))


def expect(sock, uuid, wanted):
    reply = read_line(sock)
    if reply != wanted:
        raise MigrationError(uuid, "peer: %s" % reply.decode(
            "utf-8", "replace"))


def send_error(sock, error):
    try:
        sock.sendall(b"ERROR %s: %s\n" % (
            type(error).__name__.encode(),
            str(error).replace("\n", " ").encode("utf-8", "replace")))
    except OSError:
        pass

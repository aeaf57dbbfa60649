"""
The libxl backend's suspend image: a line with magic, version and header
length, a JSON header (what the domain was and how it was configured), then
libxl's save stream.
"""

import json
import os

from txxenops.errors import ImageError

MAGIC = b"TXXENOPS-LIBXL-IMAGE"
VERSION = 1
MAX_HEADER = 1024 * 1024


def write_header(fd, uuid, header):
    """Write the image's first line and the JSON ``header`` to ``fd``;
    libxl's stream goes after them."""
    payload = json.dumps(header).encode()
    try:
        _write_all(fd, b"%s %d %d\n" % (MAGIC, VERSION, len(payload))
                   + payload)
    except OSError as e:
        raise ImageError(uuid, "cannot write the image: %s"
                         % (e.strerror or e))


def read_header(fd, uuid):
    """The JSON header of a suspend image; leaves ``fd`` at the libxl
    stream that follows it."""
    try:
        return _read_header(fd, uuid)
    except OSError as e:
        raise ImageError(uuid, "cannot read the image: %s"
                         % (e.strerror or e))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_header(fd, uuid):
    line = b""
    while not line.endswith(b"\n") and len(line) < 128:
        c = os.read(fd, 1)
        if not c:
            break
        line += c
    parts = line.split()
    if len(parts) != 3 or parts[0] != MAGIC:
        raise ImageError(uuid, "not a libxl backend suspend image")
    if parts[1] != b"%d" % VERSION:
        raise ImageError(uuid, "image version %s unsupported"
                         % parts[1].decode())
    length = int(parts[2])
    if not 0 < length <= MAX_HEADER:
        raise ImageError(uuid, "bad image header length %d" % length)
    payload = b""
    while len(payload) < length:
        chunk = os.read(fd, length - len(payload))
        if not chunk:
            raise ImageError(uuid, "truncated image")
        payload += chunk
    try:
        return json.loads(payload)
    except ValueError as e:
        raise ImageError(uuid, "bad image header: %s" % e)

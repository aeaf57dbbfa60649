"""
The simulated guest's memory on a migration stream.  After the domain's
state frame and the receiver's readiness, the sender streams one byte per
KiB of the guest's actual memory (so a stream grows with its guest as a
real one does, at 1/1024 of the size), in chunks, with content derived
from the VM's uuid: the receiver checks every chunk, so a stream cut or
mangled on its way is an ImageError, never a guest resumed from garbage.
Both sides work in constant memory.
"""

import hashlib

SCALE = 1024
CHUNK = 64 * 1024


def stream_size(memory_actual):
    return max(0, int(memory_actual)) // SCALE


def _pattern(uuid):
    digest = hashlib.sha256(uuid.encode()).digest()
    return digest * (CHUNK // len(digest))


def send(sock, uuid, size, cancelled):
    """Stream ``size`` bytes of the guest's memory; stops early (returns
    False) once ``cancelled()``."""
    pattern = memoryview(_pattern(uuid))
    left = size
    while left:
        if cancelled():
            return False
        n = min(left, CHUNK)
        sock.sendall(pattern[:n])
        left -= n
    return True


def receive(sock, uuid, size):
    """Read and check ``size`` bytes of the guest's memory; ValueError
    when they are not what was sent."""
    pattern = _pattern(uuid)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    left = size
    while left:
        want = min(left, CHUNK)
        got = 0
        while got < want:
            n = sock.recv_into(view[got:want])
            if not n:
                raise ValueError("the memory stream ended early")
            got += n
        if view[:want] != pattern[:want]:
            raise ValueError("the memory stream is corrupt")
        left -= want

"""
The server end of an RFC 6455 websocket carrying a console stream: the
payload of the client's data frames goes to the console as it arrives
(a large frame is never held whole), console bytes go back as one frame
per read; binary frames, or text frames of base64 under the ``base64``
subprotocol.  Pings are answered, a close is answered and ends the
relay, fragmented messages are followed.
"""

import base64
import hashlib
import struct

from txxapi.console.relay import Side, end

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
MAX_CONTROL = 125
PROTOCOL_ERROR = 1002


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def choose_subprotocol(offered):
    """``binary`` when offered, else ``base64`` when offered, else none
    (a browser drops a connection that names one it did not offer)."""
    names = [p.strip() for p in offered.split(",")] if offered else []
    for name in ("binary", "base64"):
        if name in names:
            return name
    return None


def upgrade_response(key, subprotocol):
    lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Accept: " +
             accept_key(key)]
    if subprotocol:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


class WebSocketSide(Side):
    """The client's end of the relay, speaking websocket frames."""

    def __init__(self, subprotocol):
        self.text = subprotocol == "base64"
        self.head = b""
        self.remaining = 0        # payload bytes left in the current frame
        self.mask = b""
        self.offset = 0
        self.opcode = None        # the current frame's
        self.message = None       # the opcode of the message being read
        self.control = b""
        self.carry = b""          # base64 text not yet a multiple of 4
        self.closing = False

    # -- console -> client ---------------------------------------------------

    def send(self, data):
        if self.closed or self.closing:
            return
        if self.text:
            self.transport.write(frame(TEXT, base64.b64encode(data)))
        else:
            self.transport.write(frame(BINARY, data))

    def close(self, code=1000):
        if self.closed or self.transport is None:
            return
        if not self.closing:
            self.closing = True
            self.transport.write(frame(CLOSE, struct.pack(">H", code)))
        end(self.transport)

    # -- client -> console ---------------------------------------------------

    def dataReceived(self, data):
        while data and not self.closing:
            if self.remaining == 0 and self.opcode is None:
                data = self._read_head(data)
                continue
            take = data[:self.remaining]
            data = data[len(take):]
            self._payload(self._unmask(take))
            self.remaining -= len(take)
            if self.remaining == 0:
                self._frame_done()

    def _read_head(self, data):
        buf = self.head + data
        if len(buf) < 2:
            self.head = buf
            return b""
        first, second = buf[0], buf[1]
        if not second & 0x80 or first & 0x70:
            # Client frames must be masked; no extension was agreed.
            self.close(PROTOCOL_ERROR)
            return b""
        need = 2 + {126: 2, 127: 8}.get(second & 0x7F, 0) + 4
        if len(buf) < need:
            self.head = buf
            return b""
        self.head = b""
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", buf[2:4])[0]
        elif length == 127:
            length = struct.unpack(">Q", buf[2:10])[0]
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        if opcode >= CLOSE and (length > MAX_CONTROL or not fin):
            self.close(PROTOCOL_ERROR)
            return b""
        if opcode in (TEXT, BINARY):
            if self.message is not None:
                self.close(PROTOCOL_ERROR)
                return b""
            self.message = opcode
        elif opcode == CONTINUATION:
            if self.message is None:
                self.close(PROTOCOL_ERROR)
                return b""
        elif opcode not in (CLOSE, PING, PONG):
            self.close(PROTOCOL_ERROR)
            return b""
        self.opcode, self.fin = opcode, fin
        self.mask, self.offset = buf[need - 4:need], 0
        self.remaining = length
        if length == 0:
            self._frame_done()
        return buf[need:]

    def _unmask(self, data):
        n = len(data)
        if not n:
            return data
        start = self.offset % 4
        key = (self.mask[start:] + self.mask[:start]) * (n // 4 + 1)
        self.offset += n
        return (int.from_bytes(data, "big") ^
                int.from_bytes(key[:n], "big")).to_bytes(n, "big")

    def _payload(self, data):
        if self.opcode >= CLOSE:
            self.control += data
        elif self.peer is not None:
            if self.message == TEXT and self.text:
                data = self.carry + data
                cut = len(data) - len(data) % 4
                data, self.carry = data[:cut], data[cut:]
                try:
                    data = base64.b64decode(data, validate=True)
                except ValueError:
                    self.close(PROTOCOL_ERROR)
                    return
            if data:
                self.peer.send(data)

    def _frame_done(self):
        opcode, payload = self.opcode, self.control
        self.opcode, self.control = None, b""
        if opcode == PING:
            self.transport.write(frame(PONG, payload))
        elif opcode == CLOSE:
            code = payload[:2] if len(payload) >= 2 else b"\x03\xe8"
            self.closing = True
            self.transport.write(frame(CLOSE, code))
            end(self.transport)
        elif opcode in (TEXT, BINARY, CONTINUATION) and self.fin:
            self.message = None

"""
Consoles for simulated domains: one loopback TCP port per domain speaking
enough RFB (VNC) for a client to connect and see a picture, the way qemu's
VNC server would for an HVM guest.

Implemented: RFB 3.3, 3.7 and 3.8 handshakes with security type None,
ServerInit, SetPixelFormat (any true-colour format of 8/16/32 bpp),
SetEncodings, FramebufferUpdateRequest answered with one Raw rectangle
(incremental requests get nothing, as the picture never changes),
KeyEvent, PointerEvent and ClientCutText (read and ignored).  Unknown client
messages end the connection, as the protocol requires.

All consoles of a backend share one selector thread.
"""

import logging
import selectors
import socket
import struct
import threading

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 320, 240
# 32 bpp, depth 24, little endian, true colour, 8 bits per channel.
SERVER_FORMAT = (32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
# Colour bars, so a client shows something recognisable.
BARS = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
        (192, 0, 192), (192, 0, 0), (0, 0, 192), (16, 16, 16)]

_MSG_FIXED = {0: 20, 3: 10, 4: 8, 5: 6}   # type -> total length


def _pixel_rows(fmt):
    """The framebuffer encoded in pixel format ``fmt``, one bytes per row."""
    bpp, _depth, big, _tc, rmax, gmax, bmax, rsh, gsh, bsh = fmt
    size = bpp // 8
    order = "big" if big else "little"
    encoded = [((r * rmax // 255) << rsh | (g * gmax // 255) << gsh
                | (b * bmax // 255) << bsh).to_bytes(size, order)
               for r, g, b in BARS]
    bar_w = WIDTH // len(BARS)
    top = b"".join(encoded[min(x // bar_w, len(BARS) - 1)]
                   for x in range(WIDTH))
    bottom = encoded[-1] * WIDTH
    return [top] * (HEIGHT * 3 // 4) + [bottom] * (HEIGHT - HEIGHT * 3 // 4)


class _Connection:
    def __init__(self, sock, key, name):
        self.sock = sock
        self.key = key
        self.name = name.encode("utf-8", "replace")[:255]
        self.inbuf = b""
        self.outbuf = bytearray(b"RFB 003.008\n")
        self.stage = "version"
        self.version = 8
        self.format = SERVER_FORMAT
        self.rows = None
        self.closing = False

    def feed(self, data):
        """Consume client bytes; False once the connection should close."""
        self.inbuf += data
        while True:
            n = self._step()
            if n is None:
                return not self.closing
            self.inbuf = self.inbuf[n:]

    def _step(self):
        """Handle one complete client message at the head of inbuf; return
        its length, or None if more bytes are needed."""
        buf = self.inbuf
        if self.stage == "version":
            if len(buf) < 12:
                return None
            if not buf.startswith(b"RFB 003."):
                self.closing = True
                return None
            try:
                minor = int(buf[8:11])
            except ValueError:
                minor = 3
            # 3.8 and anything newer speak 3.8; 3.4-3.6 are treated as 3.3.
            self.version = 8 if minor >= 8 else 7 if minor == 7 else 3
            if self.version == 3:
                self.outbuf += struct.pack(">I", 1)
                self.stage = "init"
            else:
                self.outbuf += b"\x01\x01"
                self.stage = "security"
            return 12
        if self.stage == "security":
            if len(buf) < 1:
                return None
            if buf[0] != 1:
                if self.version == 8:
                    reason = b"only security type None is offered"
                    self.outbuf += struct.pack(">II", 1, len(reason)) + reason
                self.closing = True
                return None
            if self.version == 8:
                self.outbuf += struct.pack(">I", 0)
            self.stage = "init"
            return 1
        if self.stage == "init":
            if len(buf) < 1:
                return None
            self.outbuf += struct.pack(">HH", WIDTH, HEIGHT)
            self.outbuf += struct.pack(">BBBBHHHBBBxxx", *SERVER_FORMAT)
            self.outbuf += struct.pack(">I", len(self.name)) + self.name
            self.stage = "normal"
            return 1
        if not buf:
            return None
        kind = buf[0]
        if kind in _MSG_FIXED:
            n = _MSG_FIXED[kind]
            if len(buf) < n:
                return None
            if kind == 0:
                self._set_format(buf[4:20])
            elif kind == 3:
                self._update(*struct.unpack(">BHHHH", buf[1:10]))
            return n
        if kind == 2:
            if len(buf) < 4:
                return None
            n = 4 + 4 * struct.unpack(">H", buf[2:4])[0]
            return n if len(buf) >= n else None
        if kind == 6:
            if len(buf) < 8:
                return None
            n = 8 + struct.unpack(">I", buf[4:8])[0]
            return n if len(buf) >= n else None
        self.closing = True
        return None

    def _set_format(self, raw):
        fmt = struct.unpack(">BBBBHHHBBBxxx", raw)
        if fmt[0] in (8, 16, 32) and fmt[4] and fmt[5] and fmt[6]:
            self.format = fmt
            self.rows = None
        else:
            self.closing = True

    def _update(self, incremental, x, y, w, h):
        if incremental:
            return
        x, y = min(x, WIDTH), min(y, HEIGHT)
        w, h = min(w, WIDTH - x), min(h, HEIGHT - y)
        if self.rows is None:
            self.rows = _pixel_rows(self.format)
        size = self.format[0] // 8
        self.outbuf += struct.pack(">BxH", 0, 1)
        self.outbuf += struct.pack(">HHHHi", x, y, w, h, 0)
        for row in self.rows[y:y + h]:
            self.outbuf += row[x * size:(x + w) * size]


class ConsoleServer:
    """Listening sockets and connections of every console, served by one
    thread started on first use."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self._lock = threading.Lock()
        self._commands = []
        self._thread = None
        self._sel = None
        self._wake = None
        self._listeners = {}     # key -> listening socket
        self._stopped = False

    def open(self, key, name, port=0):
        """Start serving a console for ``key``; returns its TCP port.  A
        wanted ``port`` is taken if free (to keep a console's address over
        a toolstack restart), else any free one."""
        sock = None
        for p in ([port, 0] if port else [0]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((self.host, p))
                break
            except OSError:
                sock.close()
                sock = None
        if sock is None:
            raise OSError("no port for the console of %s" % (key,))
        sock.listen(8)
        sock.setblocking(False)
        self._post(("add", key, sock, name))
        return sock.getsockname()[1]

    def close_console(self, key):
        self._post(("remove", key))

    def close(self):
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._post(("stop",))
            thread.join(5)

    def _post(self, command):
        with self._lock:
            if self._stopped and command[0] != "stop":
                if command[0] == "add":
                    command[2].close()
                return
            self._commands.append(command)
            if self._thread is None:
                self._sel = selectors.DefaultSelector()
                self._wake = socket.socketpair()
                self._wake[0].setblocking(False)
                self._sel.register(self._wake[0], selectors.EVENT_READ)
                self._thread = threading.Thread(
                    target=self._run, name="txxenops-consoles", daemon=True)
                self._thread.start()
            try:
                self._wake[1].send(b"x")
            except OSError:
                pass

    def _run(self):
        try:
            while self._serve_once():
                pass
        except Exception:
            log.exception("console server failed")
        finally:
            for s in list(self._sel.get_map().values()):
                s.fileobj.close()
            self._sel.close()
            self._wake[1].close()

    def _serve_once(self):
        for skey, events in self._sel.select():
            data = skey.data
            if data is None:
                try:
                    self._wake[0].recv(4096)
                except OSError:
                    pass
                if not self._run_commands():
                    return False
            elif data[0] == "listen":
                self._accept(skey.fileobj, data[1], data[2])
            else:
                self._service(data[1], events)
        return True

    def _run_commands(self):
        with self._lock:
            commands, self._commands = self._commands, []
        for command in commands:
            if command[0] == "stop":
                return False
            if command[0] == "add":
                _, key, sock, name = command
                old = self._listeners.pop(key, None)
                if old is not None:
                    self._drop_key(key, old)
                self._listeners[key] = sock
                self._sel.register(sock, selectors.EVENT_READ,
                                   ("listen", key, name))
            elif command[0] == "remove":
                sock = self._listeners.pop(command[1], None)
                if sock is not None:
                    self._drop_key(command[1], sock)
        return True

    def _drop_key(self, key, listener):
        self._sel.unregister(listener)
        listener.close()
        for skey in list(self._sel.get_map().values()):
            data = skey.data
            if data and data[0] == "conn" and data[1].key == key:
                self._drop(data[1])

    def _accept(self, listener, key, name):
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        conn = _Connection(sock, key, name)
        self._sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                           ("conn", conn))

    def _service(self, conn, events):
        try:
            if events & selectors.EVENT_READ:
                data = conn.sock.recv(65536)
                if not data or not conn.feed(data):
                    conn.closing = True
            if conn.outbuf:
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        if conn.closing and not conn.outbuf:
            self._drop(conn)
            return
        want = selectors.EVENT_READ
        if conn.outbuf:
            want |= selectors.EVENT_WRITE
        if self._sel.get_key(conn.sock).events != want:
            self._sel.modify(conn.sock, want, ("conn", conn))

    def _drop(self, conn):
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

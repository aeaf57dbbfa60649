"""
Consoles for simulated domains, on loopback TCP ports: per domain one
speaking enough RFB (VNC) for a client to connect and see the guest's
picture, the way qemu's VNC server would for an HVM guest, and one vt100
text console (a login prompt that echoes what is typed), as a PV guest's
serial console.

Implemented: RFB 3.3, 3.7 and 3.8 handshakes with security type None,
ServerInit, SetPixelFormat (any true-colour format of 8/16/32 bpp),
SetEncodings, FramebufferUpdateRequest answered with one Raw rectangle
(an incremental request waits until the picture changes: the guest's
state, its uptime in seconds, keys typed), KeyEvent (printable keys appear
on screen), PointerEvent and ClientCutText (read and ignored).  Unknown
client messages end the connection, as the protocol requires.

All consoles of a backend share one selector thread.
"""

import logging
import re
import selectors
import socket
import struct
import threading

from txxenops.backends.simscreen import HEIGHT, WIDTH, Screen, bar_rows, \
    panel_rows

log = logging.getLogger(__name__)

# 32 bpp, depth 24, little endian, true colour, 8 bits per channel.
SERVER_FORMAT = (32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
_MSG_FIXED = {0: 20, 3: 10, 4: 8, 5: 6}   # type -> total length
# Keysyms of the keys the picture follows.
_KEYS = {0xff08: "\b", 0xff0d: "\r", 0xff8d: "\r"}
OUTBUF_LIMIT = 1 << 20   # bytes queued for a client before reading stops
# What a text console acts on: a run of printable bytes, a line end, a
# backspace (the rest is dropped).
_TEXT_TOKENS = re.compile(rb"[\x20-\x7e]+|[\r\n]|[\x08\x7f]")
TICK = 0.5    # how often waiting incremental requests are looked at


class _Connection:
    def __init__(self, sock, key, screen):
        self.sock = sock
        self.key = key
        self.screen = screen
        self.name = screen.name.encode("utf-8", "replace")[:255]
        self.shown = None        # the picture last sent
        self.waiting = None      # an incremental request's rectangle
        self.inbuf = b""
        self.outbuf = bytearray(b"RFB 003.008\n")
        self.stage = "version"
        self.version = 8
        self.format = SERVER_FORMAT
        self.bars = None
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
            elif kind == 4:
                down, keysym = struct.unpack(">BxxI", buf[1:8])
                self._key(down, keysym)
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
            self.bars = None
        else:
            self.closing = True

    def _key(self, down, keysym):
        if not down:
            return
        if 32 <= keysym < 127:
            self.screen.key(chr(keysym))
        elif keysym in _KEYS:
            self.screen.key(_KEYS[keysym])

    def _update(self, incremental, x, y, w, h):
        if incremental and self.screen.picture() == self.shown:
            self.waiting = (x, y, w, h)    # answered once it changes
            return
        self._send_picture(x, y, w, h)

    def poll(self):
        """Answer a waiting incremental request if the picture changed."""
        if self.waiting is not None and \
                self.screen.picture() != self.shown:
            self._send_picture(*self.waiting)

    def _send_picture(self, x, y, w, h):
        self.waiting = None
        x, y = min(x, WIDTH), min(y, HEIGHT)
        w, h = min(w, WIDTH - x), min(h, HEIGHT - y)
        if self.bars is None:
            self.bars = bar_rows(self.format)
        self.shown = self.screen.picture()
        rows = self.bars + panel_rows(self.shown, self.format)
        size = self.format[0] // 8
        self.outbuf += struct.pack(">BxH", 0, 1)
        self.outbuf += struct.pack(">HHHHi", x, y, w, h, 0)
        for row in rows[y:y + h]:
            self.outbuf += row[x * size:(x + w) * size]


class _TextConnection:
    """A vt100 console: boot text and a login prompt; what is typed is
    echoed, and each line gets a new prompt."""

    def __init__(self, sock, key, screen):
        self.sock = sock
        self.key = key
        self.screen = screen
        self.prompt = ("\r\n%s login: " % screen.name).encode(
            "utf-8", "replace")
        self.outbuf = bytearray(
            b"\r\nSimulated guest console\r\n" + self.prompt)
        self.closing = False

    def feed(self, data):
        # A run of printable bytes is echoed whole: a byte at a time
        # holds a client that pastes megabytes for seconds.
        for token in _TEXT_TOKENS.findall(data):
            if token in (b"\r", b"\n"):
                self.outbuf += self.prompt
                self.screen.key("\r")
            elif token in (b"\b", b"\x7f"):
                self.outbuf += b"\b \b"
                self.screen.key("\b")
            else:
                self.outbuf += token
                self.screen.type_text(token.decode("ascii"))
        return True

    def poll(self):
        pass


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
        self._screens = {}       # key -> Screen
        self._stopped = False

    def screen(self, key, name):
        """The Screen of ``key``'s consoles (made on first use)."""
        with self._lock:
            screen = self._screens.get(key)
            if screen is None:
                screen = self._screens[key] = Screen(name)
            return screen

    def set_state(self, key, state):
        with self._lock:
            screen = self._screens.get(key)
        if screen is not None:
            screen.set_state(state)

    def open(self, key, name, port=0, protocol="rfb"):
        """Start serving a console (``protocol`` rfb or vt100) for
        ``key``; returns its TCP port.  A wanted ``port`` is taken if free
        (to keep a console's address over a toolstack restart), else any
        free one."""
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
        self._post(("add", (protocol, key), sock, self.screen(key, name)))
        return sock.getsockname()[1]

    def close_console(self, key):
        """Stop serving every console of ``key``."""
        with self._lock:
            self._screens.pop(key, None)
        for protocol in ("rfb", "vt100"):
            self._post(("remove", (protocol, key)))

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
        for skey, events in self._sel.select(TICK):
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
        for skey in list(self._sel.get_map().values()):
            data = skey.data
            if data and data[0] == "conn" and not data[1].outbuf:
                data[1].poll()
                if data[1].outbuf:
                    self._service(data[1], 0)
        return True

    def _run_commands(self):
        with self._lock:
            commands, self._commands = self._commands, []
        for command in commands:
            if command[0] == "stop":
                return False
            if command[0] == "add":
                _, key, sock, screen = command
                old = self._listeners.pop(key, None)
                if old is not None:
                    self._drop_key(key, old)
                self._listeners[key] = sock
                self._sel.register(sock, selectors.EVENT_READ,
                                   ("listen", key, screen))
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

    def _accept(self, listener, key, screen):
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        kind = _TextConnection if key[0] == "vt100" else _Connection
        conn = kind(sock, key, screen)
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
        # A client that does not read what it asked for is not read from
        # either, so a console's buffer stays bounded.
        want = selectors.EVENT_READ if len(conn.outbuf) < OUTBUF_LIMIT \
            else 0
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

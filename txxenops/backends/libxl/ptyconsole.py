"""
A PV guest's text console as a TCP port, as XAPI's vt100 consoles are
served: xenconsoled gives each guest console a pty; this opens it (raw,
so the bytes pass unchanged) for the client of a loopback port and
relays both ways.  One client at a time, as a serial line has one
user: a newer connection takes the console over and the older one is
closed.  Everything runs on plain threads: the backend is called on
threads, and the toolstack reaches the port like any console server's.
"""

import errno
import os
import select
import socket
import threading
import tty

POLL = 0.5      # how often a relay looks whether it was superseded


class PtyConsole:
    def __init__(self, path):
        self.path = path
        self._closed = False
        self._lock = threading.Lock()
        self._client = None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._listener.settimeout(POLL)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True,
                         name="pty-console-%d" % self.port).start()

    def close(self):
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        _shut(client)

    def _accept(self):
        try:
            while not self._closed:
                try:
                    conn, _ = self._listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                with self._lock:
                    if self._closed:
                        _shut(conn)
                        return
                    older, self._client = self._client, conn
                _shut(older)
                threading.Thread(target=self._relay, args=(conn,),
                                 daemon=True).start()
        finally:
            self._listener.close()

    def _current(self, conn):
        return not self._closed and self._client is conn

    def _relay(self, conn):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            _shut(conn)
            return
        try:
            tty.setraw(fd)
            conn.setblocking(True)
            while self._current(conn):
                ready, _, _ = select.select([conn, fd], [], [], POLL)
                if conn in ready:
                    data = conn.recv(65536)
                    if not data:
                        break
                    _write_all(fd, data)
                if fd in ready:
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        break
                    conn.sendall(data)
        except ValueError:
            pass        # superseded: the socket was closed under select
        except OSError as e:
            # EIO: xenconsoled closed the pty (the guest went away).
            if e.errno not in (errno.EIO, errno.EPIPE, errno.ECONNRESET,
                               errno.EBADF):
                raise
        finally:
            os.close(fd)
            with self._lock:
                if self._client is conn:
                    self._client = None
            _shut(conn)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], POLL)


def _shut(conn):
    if conn is None:
        return
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


class PtyConsoles:
    """The backend's console ports, one per guest, following its pty (a
    rebooted guest gets a new one)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_uuid = {}

    def port_for(self, uuid, path):
        with self._lock:
            older = self._by_uuid.get(uuid)
            if older is not None and older.path == path:
                return older.port
            console = self._by_uuid[uuid] = PtyConsole(path)
        if older is not None:
            older.close()
        return console.port

    def forget(self, uuid):
        with self._lock:
            console = self._by_uuid.pop(uuid, None)
        if console is not None:
            console.close()

    def close(self):
        with self._lock:
            consoles, self._by_uuid = list(self._by_uuid.values()), {}
        for console in consoles:
            console.close()

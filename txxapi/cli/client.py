"""
``xe``: the thin client of XAPI's CLI.  It sends its arguments to the
server's /cli, then does what the server tells it (print, read a file,
GET or PUT one over a second connection, prompt, exit), as XAPI's xe does.

Options as XAPI's client takes them (explicit > XE_EXTRA_ARGS > ~/.xe):
``-s`` ``-h`` server, ``-p`` port, ``-u`` user, ``-pw`` password, ``-pwf``
file (user on the first line, password on the second), ``--nossl``,
``--debug``; also ``--no-verify``, and ``socket=PATH`` (the server's local
Unix socket, <data-dir>/xapi; empty: none).  Run for 127.0.0.1 (no
``-s``), it tries that socket first and TCP after, as XAPI's client
tries /var/lib/xcp/xapi; files go over the same way.  TLS (never to
127.0.0.1, as XAPI's client) checks the server's certificate against the
system's store, else against the one pinned for that host and port on
first use (~/.xe_known_hosts); ``--no-verify`` checks nothing.  When
stderr is a terminal, sent and received files show a progress line, and
the request says so (TERMINAL_HEADER) for the server to draw the
progress of the tasks of long commands; Ctrl-C cancels the task on the
server (a transfer's by task.cancel, a command's as the server sees the
client go).  ``--bash-completion`` prints the bash
completion script (which asks the server, through xe, what to offer).
"""

import hashlib
import os
import socket
import ssl
import sys
import time
from urllib.parse import parse_qs, urlsplit

from txxapi import config
from txxapi.cli import protocol as P
from txxapi.cli.progress import Progress, is_terminal

HEARTBEAT = 300.0
BLOCK = 65536
KNOWN_HOSTS = ".xe_known_hosts"
LOCALHOST = "127.0.0.1"
COMPLETION = "completion.bash"


class Usage(Exception):
    pass


class ClientSideError(Exception):
    pass


class NotPermitted(Exception):
    pass


class Options:
    def __init__(self):
        self.server = LOCALHOST
        self.socket = config.local_socket_path(config.DEFAULTS)
        self.port = None
        self.username = "root"
        self.password = "null"
        self.passwordfile = ""
        self.ssl = True
        self.verify = True
        self.debug = False

    def port_for(self, tls):
        return self.port if self.port is not None else (443 if tls else 80)

    def set(self, key, value):
        """Set a client option; whether ``key`` is one."""
        if key == "server":
            self.server = value
        elif key == "port":
            self.port = parse_port(value)
        elif key == "username":
            self.username = value
        elif key == "password":
            self.password = value
        elif key == "passwordfile":
            self.passwordfile = value
        elif key == "nossl":
            self.ssl = value.lower() != "true"
        elif key == "noverify":
            self.verify = value.lower() != "true"
        elif key == "debug":
            self.debug = value.lower() == "true"
        elif key == "socket":
            self.socket = value
        elif key in ("debugonfail", "traceparent"):
            pass
        else:
            return False
        return True


def parse_port(text):
    try:
        port = int(text)
        if not 0 <= port <= 65535:
            raise ValueError(text)
        return port
    except ValueError:
        sys.stderr.write("Port number must be an integer (0-65535)\n")
        raise Usage()


_SWITCHES = {"-s": "server", "-h": "server", "-p": "port", "-u": "username",
             "-pw": "password", "-pwf": "passwordfile",
             "--traceparent": "traceparent"}
_FLAGS = {"--nossl": "nossl", "--debug": "debug",
          "--debug-on-fail": "debugonfail", "--no-verify": "noverify"}


def take_options(opts, args):
    """The arguments that are not client options (those set ``opts``)."""
    rest, args = [], list(args)
    while args:
        a = args.pop(0)
        if a in _FLAGS:
            opts.set(_FLAGS[a], "true")
        elif a in _SWITCHES and args:
            opts.set(_SWITCHES[a], args.pop(0))
        elif "=" in a and opts.set(*a.split("=", 1)):
            pass
        else:
            rest.append(a)
    return rest


def split_extra_args(text):
    """XE_EXTRA_ARGS: comma-separated; a backslash keeps a comma in."""
    out, current, i = [], "", 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current += text[i + 1]
            i += 2
            continue
        if c == ",":
            if current:
                out.append(current)
            current = ""
        else:
            current += c
        i += 1
    if current:
        out.append(current)
    return out


def read_rc(home):
    try:
        with open(os.path.join(home, ".xe")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pairs = []
    for line in lines:
        if not line:
            continue
        if "=" not in line:
            sys.stderr.write("Error parsing rc file. No defaults loaded\n")
            return []
        pairs.append(tuple(line.split("=", 1)))
    return pairs


def parse_args(argv, env):
    opts = Options()
    rc_rest = ["%s=%s" % kv for kv in read_rc(env.get("HOME", ""))
               if not opts.set(*kv)]
    extra_rest = take_options(opts, split_extra_args(
        env.get("XE_EXTRA_ARGS", "")))
    helped = any(a in ("-help", "--help") for a in argv)
    rest = take_options(opts, [a for a in argv
                                if a not in ("-help", "--help")])
    if helped:
        raise Usage()
    if opts.passwordfile:
        try:
            with open(opts.passwordfile) as f:
                lines = f.read().splitlines()
        except OSError:
            sys.stderr.write("Error opening password file '%s'\n"
                             % opts.passwordfile)
            raise SystemExit(1)
        if len(lines) < 2:
            sys.stderr.write("Error: password file format: expecting "
                             "username on the first line, password on the "
                             "second line\n")
            raise SystemExit(1)
        opts.username, opts.password = lines[0], lines[1]
    return opts, rest + extra_rest + rc_rest


def permitted_files(args):
    """Only files named on the command line may be read or written."""
    out = set()
    for a in args:
        if "=" in a:
            value = a.split("=", 1)[1]
            if value.strip():
                out.add(os.path.abspath(value))
    return out


def completion_script():
    """The bash completion of xe (completion.bash beside this module)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        COMPLETION)
    with open(path) as f:
        return f.read()


def usage():
    argv0 = os.path.basename(sys.argv[0])
    if argv0 in ("", "__main__.py"):
        argv0 = "xe"
    sys.stderr.write(
        "Usage: %s <cmd> [-s server] [-p port] ([-u username] [-pw password] "
        "or [-pwf <password file>]) [--no-verify] <other arguments>\n"
        "\nA full list of commands can be obtained by running \n\t%s help "
        "-s <server> -p <port>\n"
        "\nWithout -s, the local socket (socket=<path>, default %s) is "
        "tried first.\nBash completion: source <(%s --bash-completion)\n"
        % (argv0, argv0, Options().socket, argv0))


# -- connections -----------------------------------------------------------------

def _known_hosts_path():
    return os.path.join(os.path.expanduser("~"), KNOWN_HOSTS)


def _pinned(host, port):
    try:
        with open(_known_hosts_path()) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == "%s:%d" % (host, port):
                    return parts[1]
    except OSError:
        pass
    return None


def _pin(host, port, fingerprint):
    path = _known_hosts_path()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write("%s:%d %s\n" % (host, port, fingerprint))


class Connector:
    def __init__(self, opts):
        self.opts = opts
        self.tls = opts.ssl and opts.server != LOCALHOST

    def _tcp(self, host, port):
        host = host[1:-1] if host.startswith("[") else host
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise LookupError(host)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.connect(addr)
        return sock

    def _debug(self, text):
        if self.opts.debug:
            sys.stderr.write(text + "\n")

    def _local(self):
        """The local socket, or None when it cannot be reached."""
        self._debug("Connecting to Unix socket [%s]" % self.opts.socket)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.opts.socket)
            return sock
        except OSError:
            self._debug(" failed")
            sock.close()
            return None

    def connect(self, host=None):
        host = host or self.opts.server
        if host == LOCALHOST and self.opts.socket:
            sock = self._local()
            if sock is not None:
                return sock
        port = self.opts.port_for(self.tls)
        self._debug("Connecting via TCP to [%s] port [%d]" % (host, port))
        if not self.tls:
            return self._tcp(host, port)
        if not self.opts.verify:
            return _tls_context(False).wrap_socket(self._tcp(host, port),
                                                   server_hostname=host)
        try:
            return _tls_context(True).wrap_socket(
                self._tcp(host, port), server_hostname=host)
        except ssl.SSLCertVerificationError:
            pass
        sock = _tls_context(False).wrap_socket(self._tcp(host, port),
                                               server_hostname=host)
        seen = hashlib.sha256(sock.getpeercert(True)).hexdigest()
        pinned = _pinned(host, port)
        if pinned is None:
            _pin(host, port, seen)
            sys.stderr.write("The certificate of %s:%d is not trusted by "
                             "this system; its SHA-256 fingerprint %s is now "
                             "pinned in ~/%s.\n" % (host, port, seen,
                                                    KNOWN_HOSTS))
        elif pinned != seen:
            sock.close()
            raise ClientSideError(
                "the certificate of %s:%d (SHA-256 %s) is not the one pinned "
                "in ~/%s; use --no-verify to connect anyway"
                % (host, port, seen, KNOWN_HOSTS))
        return sock


def _tls_context(verify):
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def _parse_url(opts, url):
    if url.startswith("https://"):
        host, _, path = url[len("https://"):].partition("/")
        return host, "/" + path
    return opts.server, url


def _read_head(rfile):
    """(status code, headers) of an HTTP response."""
    line = rfile.readline().decode("latin-1")
    parts = line.split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ClientSideError("Bad response from HTTP server")
    headers = {}
    while True:
        h = rfile.readline().decode("latin-1")
        if h in ("\r\n", "\n", ""):
            break
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


# -- the protocol loop -----------------------------------------------------------

class Client:
    def __init__(self, opts, connector, permitted, stdout=None, stderr=None,
                 stdin=None):
        self.opts = opts
        self.connector = connector
        self.permitted = permitted
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self.inp = stdin or sys.stdin
        self.sock = None

    def debug(self, text):
        if self.opts.debug:
            self.err.write(text + "\n")
            self.err.flush()

    def send(self, data):
        self.sock.sendall(data)

    def run(self, args):
        self.sock = self.connector.connect()
        body = "\n".join(args + ["username=" + self.opts.username,
                                 "password=" + self.opts.password])
        body = body.encode("utf-8")
        terminal = b"%s: true\r\n" % P.TERMINAL_HEADER \
            if is_terminal(self.err) else b""
        self.send(b"POST /cli HTTP/1.0\r\nUser-agent: xe-cli/Unix/%d.%d\r\n"
                  b"%scontent-length: %d\r\n\r\n" % (
                      P.MAJOR, P.MINOR, terminal, len(body)) + body)
        self.rfile = self.sock.makefile("rb")
        banner = self.rfile.read(len(P.BANNER))
        if not banner:
            raise ConnectionError("no banner")
        if not banner.startswith(P.PREFIX):
            if banner[:4].upper() == b"HTTP":
                raise ServerInternalError()
            raise NotACliServer()
        major, minor = P.parse_banner(banner)
        self.debug("Server has protocol version %d.%d. Client has %d.%d"
                   % (major, minor, P.MAJOR, P.MINOR))
        if major != P.MAJOR:
            raise VersionMismatch("Server has protocol version %d.%d. Client "
                                  "has %d.%d" % (major, minor, P.MAJOR,
                                                 P.MINOR))
        self.send(P.BANNER)
        while True:
            msg = self._message()
            self.debug("Read: %r" % (msg,))
            if msg[0] != P.COMMAND:
                raise ClientSideError("Unexpected message from server")
            code = self._handle(msg[1], msg[2:])
            if code is not None:
                return code

    def _message(self):
        head = self.rfile.read(4)
        if len(head) < 4:
            raise EOFError()
        length = int.from_bytes(head, "little", signed=True)
        payload = self.rfile.read(length)
        if len(payload) < length:
            raise EOFError()
        return P.decode(payload)

    def _handle(self, sub, args):
        if sub == P.PRINT:
            self.out.write(args[0] + "\n")
            self.out.flush()
        elif sub == P.PRINT_STDERR:
            self.err.write(args[0])
            self.err.flush()
        elif sub == P.DEBUG:
            self.debug("debug from server: %s" % args[0])
        elif sub == P.EXIT:
            return args[0]
        elif sub == P.ERROR:
            self.err.write("Error code: %s\n" % args[0])
            self.err.write("Error parameters: %s\n" % ", ".join(args[1]))
            self.err.flush()
        elif sub == P.PROMPT:
            line = self.inp.readline().rstrip("\n").encode("utf-8")
            self.send(P.chunk(len(line)) + line + P.end())
        elif sub == P.LOAD:
            self._load(args[0])
        elif sub in (P.HTTP_GET, P.HTTP_PUT):
            return self._http(sub, *args)
        elif sub == P.HTTP_CONNECT:
            self.err.write("Consoles are not relayed by this client\n")
            self.send(P.response(P.FAILED))
        return None

    def _check_permitted(self, filename, cwd=False):
        allowed = set(self.permitted)
        if cwd:
            allowed.add(os.path.abspath(os.curdir))
        if os.path.abspath(filename) not in allowed:
            raise NotPermitted(
                "Blocked upload/download of the file %s, which was requested "
                "by the server. The file name was not present on the command "
                "line\n" % filename)

    def _load(self, filename):
        self._check_permitted(filename)
        try:
            f = open(filename, "rb")
        except OSError:
            self.send(P.response(P.FAILED))
            return
        with f:
            self.send(P.response(P.OK))
            size = os.fstat(f.fileno()).st_size
            self.send(P.chunk(size))
            while True:
                data = f.read(BLOCK)
                if not data:
                    break
                self.send(data)
            self.send(P.end())

    def _http(self, sub, filename, url):
        try:
            if sub == P.HTTP_PUT:
                self._check_permitted(filename)
                self._put(filename, url)
            else:
                self._get(filename, url)
            self.send(P.response(P.OK))
        except ClientSideError as e:
            self.send(P.response(P.FAILED))
            self.err.write("Operation failed. Error: %s\n" % e)
            return 1
        except KeyboardInterrupt:
            self._cancel(url)
            return 1
        except NotPermitted:
            raise
        except (OSError, ValueError) as e:
            self.debug("transfer failure: %s" % e)
            # The server finds out what went wrong and says so.
            self.send(P.response(P.FAILED))
        return None

    def _copy(self, read, write, progress):
        last = time.monotonic()
        while True:
            data = read(BLOCK)
            if not data:
                break
            write(data)
            progress.advance(len(data))
            if time.monotonic() - last >= HEARTBEAT:
                self.send(P.response(P.WAIT))
                last = time.monotonic()
        progress.finish()

    def _request(self, method, url, head=""):
        """A GET or PUT on a handler of the server, its redirects followed:
        (socket, its reader, headers) after a 200."""
        host, path = _parse_url(self.opts, url)
        sock = self.connector.connect(host)
        sock.sendall(("%s %s HTTP/1.0%s\r\n\r\n" % (method, path, head))
                     .encode("latin-1"))
        rfile = sock.makefile("rb")
        code, headers = _read_head(rfile)
        if code == 302:
            sock.close()
            return self._request(method, headers["location"], head)
        if code != 200:
            sock.close()
            raise OSError("Unhandled response code %d" % code)
        return sock, rfile, headers

    def _put(self, filename, url):
        if not os.path.exists(filename):
            raise ClientSideError("file '%s' does not exist" % filename)
        size = os.stat(filename).st_size if os.path.isfile(filename) \
            else None
        with open(filename, "rb") as f:
            sock, rfile, _ = self._request(
                "PUT", url, "" if size is None else
                "\r\nContent-length: %d" % size)
            with sock:
                self._copy(f.read, sock.sendall,
                           Progress(self.err, "Uploading", size))
                # The handler ends the connection once it has taken it all.
                while rfile.read(BLOCK):
                    pass

    def _get(self, filename, url):
        sock, rfile, headers = self._request("GET", url)
        with sock:
            if filename == "":
                out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
            else:
                self._check_permitted(filename, cwd=True)
                try:
                    fd = os.open(filename, os.O_WRONLY | os.O_CREAT |
                                 os.O_EXCL, 0o600)
                except OSError as e:
                    raise ClientSideError(str(e))
                out = os.fdopen(fd, "wb")
            with out:
                total = headers.get("content-length", "")
                self._copy(rfile.read, out.write, Progress(
                    self.err, "Downloading",
                    int(total) if total.isdigit() else None))

    def _cancel(self, url):
        """Ctrl-C during a transfer: cancel its task on the server with the
        session the server handed over, and say so."""
        query = parse_qs(urlsplit(url).query)
        session = query.get("session_id", [""])[0]
        task = query.get("task_id", [""])[0]
        self.err.write("\r\x1b[K")
        if not (session and task):
            self.err.write("Interrupted\n")
            return
        body = ("<?xml version='1.0'?><methodCall><methodName>task.cancel"
                "</methodName><params><param><value><string>%s</string>"
                "</value></param><param><value><string>%s</string></value>"
                "</param></params></methodCall>" % (session, task)).encode()
        try:
            sock = self.connector.connect(_parse_url(self.opts, url)[0])
            with sock:
                sock.sendall(b"POST / HTTP/1.0\r\nContent-Type: text/xml\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                _read_head(sock.makefile("rb"))
            self.err.write("Interrupted: the task on the server was asked "
                           "to cancel\n")
        except (OSError, ClientSideError) as e:
            self.err.write("Interrupted; the server's task could not be "
                           "cancelled: %s\n" % e)


class NotACliServer(Exception):
    pass


class ServerInternalError(Exception):
    pass


class VersionMismatch(Exception):
    pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "-version" in argv:
        print("ThinCLI protocol: %d.%d" % (P.MAJOR, P.MINOR))
        return 0
    if "--bash-completion" in argv:
        sys.stdout.write(completion_script())
        return 0
    status = 1
    err = sys.stderr
    opts = Options()
    try:
        opts, args = parse_args(argv, os.environ)
        if not args:
            raise Usage()
        client = Client(opts, Connector(opts), permitted_files(args))
        status = client.run(args)
    except Usage:
        status = 0
        usage()
    except NotACliServer:
        err.write("Failed to contact a running management agent.\n"
                  "Try specifying a server name and port.\n")
        usage()
    except VersionMismatch as e:
        err.write("Protocol version mismatch: %s.\nTry specifying a server "
                  "name and port on the command-line.\n" % e)
        usage()
    except LookupError:
        err.write("Host '%s' not found.\n" % opts.server)
    except NotPermitted as e:
        err.write("File not permitted: %s.\n" % e)
    except ClientSideError as e:
        err.write("Client Side error: %s.\n" % e)
    except ServerInternalError:
        err.write("Server internal error.\n")
    except ConnectionRefusedError:
        err.write("Error: Connection refused (calling connect )\n")
    except (EOFError, ConnectionResetError, BrokenPipeError):
        err.write("Lost connection to the server.\n")
    except ConnectionError:
        err.write("Unable to contact server. Please check server and port "
                  "settings.\n")
    except ssl.SSLError as e:
        err.write("Error: TLS: %s\n" % e)
    except OSError as e:
        err.write("Error: %s\n" % (e.strerror or e))
    except KeyboardInterrupt:
        err.write("\r\x1b[K" if is_terminal(err) else "\n")
        err.write("Interrupted: the server cancels the task the command "
                  "was waiting for, if any\n")
        status = 1
    return status


def console_main():
    sys.exit(main())

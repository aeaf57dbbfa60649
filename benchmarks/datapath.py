"""
Item 5: the data path, VDI export and import over HTTPS.  The ceilings:
curl downloading (export) and uploading (import, WebDAV PUT) the same
images from nginx over TLS on loopback, and through stunnel in front of
nginx's plain HTTP port (the deployment XAPI uses).  Images: a dense one
and a sparse one (2 GiB and 8 GiB; smaller with --quick).  The txxapi
side reports "not available yet" until /import_raw_vdi answers.
"""

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

from benchmarks import common

ITEM = "datapath"
MIB = 1 << 20
GIB = 1 << 30

NGINX_CONF = """\
%(user)s
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%(tls_port)d ssl;
        listen 127.0.0.1:%(plain_port)d;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        ssl_protocols TLSv1.2 TLSv1.3;
        root %(dir)s/www;
        client_max_body_size 0;
        dav_methods PUT;
    }
}
"""

STUNNEL_CONF = """\
foreground = yes
pid =
[https]
accept = 127.0.0.1:%(port)d
connect = 127.0.0.1:%(target)d
cert = %(cert)s
key = %(key)s
"""


def make_images(directory, dense_size, sparse_size):
    """A dense image (every block written, incompressible) and a sparse
    one (all holes but a little data at each end)."""
    dense = os.path.join(directory, "dense.img")
    block = os.urandom(4 * MIB)
    with open(dense, "wb") as f:
        for _ in range(dense_size // len(block)):
            f.write(block)
    sparse = os.path.join(directory, "sparse.img")
    with open(sparse, "wb") as f:
        f.write(block)
        f.truncate(sparse_size)
        f.seek(sparse_size - len(block))
        f.write(block)
    return {"dense": (dense, dense_size), "sparse": (sparse, sparse_size)}


def curl(args, timeout=600):
    """Run curl; its bytes per second (upload or download)."""
    out = subprocess.run(
        ["curl", "-sS", "-k", "--fail", "-o", "/dev/null", "-w",
         "%{speed_download} %{speed_upload}"] + args,
        capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError("curl %s: %s" % (" ".join(args), out.stderr))
    down, up = (float(x) for x in out.stdout.split())
    return max(down, up)


def best_of(n, fn):
    return max(fn() for _ in range(n))


class Daemon:
    """A helper server process stopped on exit."""

    def __init__(self, cmd, port, log_path):
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.port = port

    def __enter__(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited" % self.proc.args[0])
            try:
                with __import__("socket").create_connection(
                        ("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not listen" % self.proc.args[0])

    def __exit__(self, *exc):
        common.stop_process(self.proc)
        self.log.close()


def txxapi_available(server):
    """True once the server has an /import_raw_vdi handler."""
    try:
        urllib.request.urlopen(urllib.request.Request(
            server.https_url + "/import_raw_vdi", method="PUT", data=b""),
            timeout=10, context=common.insecure_context()).read()
        return True
    except urllib.error.HTTPError as e:
        return e.code != 404
    except OSError:
        return False


def txxapi_figures(server, work, images, cert, key):
    """{(direction, image, path): bytes/s} of txxapi over its own TLS and
    behind stunnel, and the server's peak RSS."""
    url = server.https_url
    session = common.login(url)
    sr = common.jsonrpc(url, "SR.get_by_name_label",
                        [session, "Local storage"])[0][0]
    tunnel_port = common.free_port()
    sconf = os.path.join(work, "stunnel-txxapi.conf")
    with open(sconf, "w") as f:
        f.write(STUNNEL_CONF % {"port": tunnel_port,
                                "target": server.http_port,
                                "cert": cert, "key": key})
    figures = {}
    with Daemon([shutil.which("stunnel4") or "stunnel", sconf], tunnel_port,
                os.path.join(work, "stunnel-txxapi.log")):
        for kind, (path, size) in images.items():
            vdi = common.jsonrpc(url, "VDI.create", [session, {
                "name_label": "bench " + kind, "name_description": "",
                "SR": sr, "virtual_size": str(size), "type": "user",
                "sharable": False, "read_only": False, "other_config": {},
                "xenstore_data": {}, "sm_config": {}, "tags": []}])[0]
            try:
                for via, base in (("txxapi TLS", url), (
                        "stunnel+txxapi", "https://127.0.0.1:%d"
                        % tunnel_port)):
                    query = "?session_id=%s&vdi=%s&format=raw" % (session,
                                                                  vdi)
                    figures[("import", kind, via)] = curl(
                        ["-T", path, base + "/import_raw_vdi" + query])
                    figures[("export", kind, via)] = curl(
                        [base + "/export_raw_vdi" + query])
            finally:
                common.jsonrpc(url, "VDI.destroy", [session, vdi])
    return figures, common.rss_mib(server.proc.pid, "VmHWM")


def ceilings(ctx, work, images, results, repeats):
    """nginx and stunnel figures: {(direction, image, path): bytes/s}."""
    for tool in ("nginx", "stunnel4", "curl"):
        if shutil.which(tool) is None and shutil.which(
                os.path.join("/usr/sbin", tool)) is None:
            results.unavailable(ITEM, "nginx/stunnel ceilings",
                                "%s is not installed (scripts/bench "
                                "installs it)" % tool)
            return {}
    cert = os.path.join(ctx.template(), "xapi-ssl.pem")
    key = os.path.join(ctx.template(), "xapi-ssl.key")
    www = os.path.join(work, "www")
    os.makedirs(www)
    for kind, (path, _) in images.items():
        os.link(path, os.path.join(www, os.path.basename(path)))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(work, sub))
    tls_port, plain_port, tunnel_port = (common.free_port() for _ in
                                         range(3))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF % {
            "user": "user root;" if os.geteuid() == 0 else "",
            "dir": work, "tls_port": tls_port, "plain_port": plain_port,
            "cert": cert, "key": key})
    sconf = os.path.join(work, "stunnel.conf")
    with open(sconf, "w") as f:
        f.write(STUNNEL_CONF % {"port": tunnel_port, "target": plain_port,
                                "cert": cert, "key": key})
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    figures = {}
    with Daemon([nginx, "-p", work, "-c", conf, "-e",
                 os.path.join(work, "nginx-error.log"), "-g",
                 "daemon off;"], tls_port,
                os.path.join(work, "nginx.log")), \
            Daemon([shutil.which("stunnel4") or "stunnel", sconf],
                   tunnel_port, os.path.join(work, "stunnel.log")):
        for via, port in (("nginx TLS", tls_port),
                          ("stunnel+nginx", tunnel_port)):
            base = "https://127.0.0.1:%d/" % port
            for kind, (path, size) in images.items():
                name = os.path.basename(path)
                figures[("export", kind, via)] = best_of(
                    repeats, lambda: curl([base + name]))
                figures[("import", kind, via)] = best_of(
                    repeats, lambda: curl(["-T", path,
                                           base + "up-" + name]))
    return figures


def run(ctx):
    dense = 256 * MIB if ctx.quick else 2 * GIB
    sparse = 1 * GIB if ctx.quick else 8 * GIB
    repeats = 1
    work = os.path.join(ctx.base, "datapath")
    os.makedirs(work)
    images = make_images(work, dense, sparse)
    results = ctx.results
    figures = ceilings(ctx, work, images, results, repeats)
    for (direction, kind, via), rate in sorted(figures.items()):
        size = images[kind][1]
        results.add(ITEM, "%s %s %s image, %s + curl" % (
            direction, "%g GiB" % (size / GIB), kind, via), rate / 1e9,
            "GB/s", figures[(direction, kind, "nginx TLS")] / 1e9,
            "nginx TLS")
    # A data dir of its own: the local SR lives inside it.
    server = common.LoadServer(os.path.join(work, "data"))
    server.start()
    try:
        idle = common.rss_mib(server.proc.pid)
        if not txxapi_available(server):
            results.unavailable(ITEM, "txxapi import/export",
                                common.NOT_AVAILABLE +
                                " (/import_raw_vdi answers 404)")
            return
        ours, peak = txxapi_figures(
            server, work, images, os.path.join(server.data_dir,
                                               "xapi-ssl.pem"),
            os.path.join(server.data_dir, "xapi-ssl.key"))
        for (direction, kind, via), rate in sorted(ours.items()):
            size = images[kind][1]
            ceiling = figures.get((direction, kind, "nginx TLS"))
            results.add(ITEM, "%s %s %s image, %s + curl" % (
                direction, "%g GiB" % (size / GIB), kind, via), rate / 1e9,
                "GB/s", ceiling / 1e9 if ceiling else None,
                "nginx TLS" if ceiling else None)
        results.add(ITEM, "txxapi peak RSS during the transfers", peak,
                    "MiB", idle, "idle server")
    finally:
        server.stop()
        for kind, (path, _) in images.items():
            os.unlink(path)

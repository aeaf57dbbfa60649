"""
A real Samba Active Directory domain controller for tests: provisioned
in a scratch directory, its accounts made before it starts, serving LDAP
(StartTLS with a certificate of a CA made here), Kerberos and its own DNS
on a loopback alias 127.0.N.5 (N = TXXAPI_TEST_NET) that it adds and
removes.  Needs root and Debian's samba packages.

Provisioning takes seconds, so a process provisions once, into a
template, and each DC after the first starts from a copy of it (only its
smb.conf names its directory).
"""

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.support.pool import TEST_NET
from tests.support.servers import RunningServer

REALM = "CORP.EXAMPLE.TEST"
DOMAIN = REALM.lower()
WORKGROUP = "CORP"
HOSTNAME = "dc1"
ADMIN_PASSWORD = "Adm1n-Pass!"
# The account enable_external_auth joins with.
ADMIN = {"user": "Administrator", "pass": ADMIN_PASSWORD}


# This process's provisioned domain (SambaDC.provision).
_template = None

# Run by samba's Python: the accounts of a JSON spec on stdin.
_ACCOUNTS = """
import json, sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB
spec = json.load(sys.stdin)
lp = LoadParm()
lp.load(spec["conf"])
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(),
           lp=lp)
for name, password, disabled in spec["users"]:
    db.newuser(name, password, givenname=name.capitalize())
    if disabled:
        db.disable_account("(sAMAccountName=%s)" % name)
for name, members in spec["groups"]:
    db.newgroup(name)
    if members:
        db.add_remove_group_members(name, members)
"""


def available():
    return os.geteuid() == 0 and shutil.which("samba") is not None and \
        shutil.which("samba-tool") is not None


class SambaDC:
    def __init__(self, base):
        self.base = base
        self.address = "127.0.%d.5" % TEST_NET
        self.target = os.path.join(base, "dc")
        self.conf = os.path.join(self.target, "etc", "smb.conf")
        self.ca_file = os.path.join(base, "tls", "ca.pem")
        self.proc = None
        self._alias = False

    @property
    def fqdn(self):
        return "%s.%s" % (HOSTNAME, DOMAIN)

    def tool(self, *args):
        return subprocess.run(["samba-tool"] + list(args) + ["-s", self.conf],
                              check=True, capture_output=True, text=True)

    def provision(self):
        """The domain, without accounts: a copy of this process's
        template, provisioned on first use."""
        global _template
        if _template is None:
            base = tempfile.mkdtemp(prefix="txxapi-samba-")
            atexit.register(shutil.rmtree, base, True)
            SambaDC(base)._provision()
            _template = base
        for part in (os.path.basename(self.target),
                     os.path.basename(os.path.dirname(self.ca_file))):
            shutil.copytree(os.path.join(_template, part),
                            os.path.join(self.base, part), symlinks=True)
        with open(self.conf) as f:
            text = f.read()
        with open(self.conf, "w") as f:
            f.write(text.replace(_template + "/", self.base + "/"))

    def _provision(self):
        subprocess.run([
            "samba-tool", "domain", "provision", "--realm=" + REALM,
            "--domain=" + WORKGROUP, "--server-role=dc",
            "--dns-backend=SAMBA_INTERNAL", "--adminpass=" + ADMIN_PASSWORD,
            "--targetdir=" + self.target, "--host-name=" + HOSTNAME,
            "--host-ip=" + self.address,
            "--option=interfaces=" + self.address,
            "--option=bind interfaces only=yes"],
            check=True, capture_output=True, text=True)
        key, cert = self._certificates()
        with open(self.conf) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            name = line.strip().split("=")[0].strip()
            # No forwarding out of the test, no logs outside it.
            if name in ("dns forwarder", "log file"):
                continue
            out.append(line)
            if line.strip() == "[global]":
                # Its logs and pid file in its directory: other DCs may
                # run on the machine.
                out += ["\tlog file = %s/log.%%m" % self.target,
                        "\tpid directory = " + self.target,
                        "\ttls enabled = yes", "\ttls keyfile = " + key,
                        "\ttls certfile = " + cert,
                        "\ttls cafile = " + self.ca_file]
        with open(self.conf, "w") as f:
            f.write("\n".join(out) + "\n")

    def _certificates(self):
        """A CA of the test's own and the DC's certificate, naming its
        host name and its address."""
        tls = os.path.dirname(self.ca_file)
        os.makedirs(tls, exist_ok=True)
        ca_key, key = os.path.join(tls, "ca.key"), os.path.join(tls, "dc.key")
        csr, cert = os.path.join(tls, "dc.csr"), os.path.join(tls, "dc.pem")
        ext = os.path.join(tls, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:%s,IP:%s\n" % (self.fqdn,
                                                       self.address))

        def openssl(*args):
            subprocess.run(["openssl"] + list(args), check=True,
                           capture_output=True)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                ca_key, "-out", self.ca_file, "-days", "2", "-subj",
                "/CN=txxapi test AD CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                "-out", csr, "-subj", "/CN=" + self.fqdn)
        openssl("x509", "-req", "-in", csr, "-CA", self.ca_file, "-CAkey",
                ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
                "-extfile", ext)
        os.chmod(key, 0o600)
        return key, cert

    # -- accounts (before start: written into the database itself) --------

    def accounts(self, users, groups=()):
        """Users ((name, password[, disabled])) and groups ((name,
        members)), in one run of samba's own Python (what samba-tool's
        commands do, without a process for each)."""
        spec = {"conf": self.conf,
                "users": [list(u) + [False] * (3 - len(u)) for u in users],
                "groups": [[name, list(members)] for name, members in groups]}
        subprocess.run(["/usr/bin/python3", "-c", _ACCOUNTS],
                       input=json.dumps(spec), check=True,
                       capture_output=True, text=True)

    # -- running ------------------------------------------------------------

    def start(self, timeout=60):
        subprocess.run(["ip", "addr", "add", self.address + "/32", "dev",
                        "lo"], check=False, capture_output=True)
        self._alias = True
        self.log = open(os.path.join(self.base, "samba.out"), "w")
        self.proc = subprocess.Popen(
            ["samba", "-i", "-M", "single", "-s", self.conf],
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("samba exited: see %s" % self.log.name)
            if all(self._listening(p) for p in (389, 53)):
                return
            time.sleep(0.2)
        raise RuntimeError("samba did not start in %d s" % timeout)

    def _listening(self, port):
        try:
            socket.create_connection((self.address, port), 0.5).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._alias:
            subprocess.run(["ip", "addr", "del", self.address + "/32", "dev",
                            "lo"], check=False, capture_output=True)
            self._alias = False


@contextlib.contextmanager
def running_dc(base, users, groups=()):
    """A DC with these accounts ((name, password[, disabled]) users and
    (name, members) groups), started, stopped afterwards."""
    dc = SambaDC(base)
    dc.provision()
    dc.accounts(users, groups)
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


def server_args(dc):
    """The options of a txxapi server that finds ``dc``."""
    return ["--ad-dns-server", dc.address, "--ad-ca-file", dc.ca_file]


@contextlib.contextmanager
def serving(base, users, groups=(), extra_args=()):
    """A DC (as running_dc) and a txxapi server that finds it, both
    started: (dc, server)."""
    with running_dc(base, users, groups) as dc:
        server = RunningServer(os.path.join(base, "data"),
                               extra_args=server_args(dc) + list(extra_args))
        server.start()
        try:
            yield dc, server
        finally:
            server.stop()


def computers(dc):
    """The names of the domain's computer accounts (NAME$)."""
    return dc.tool("computer", "list").stdout.split()

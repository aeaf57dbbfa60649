"""
This host's role in its pool, on disk as XAPI keeps it (pool.conf in the
data dir): ``master``, ``slave:<master address>`` or ``broken``.  It is
read once at start; changing role means rewriting the file and
restarting.  A missing file is a fresh host: the master of its own pool.
"""

import os

from txxapi.files import write_atomically

MASTER = "master"
SLAVE = "slave"
BROKEN = "broken"
FILE = "pool.conf"


class Role:
    def __init__(self, kind, master_address=None):
        self.kind = kind
        self.master_address = master_address

    @property
    def is_master(self):
        return self.kind == MASTER

    def text(self):
        if self.kind == SLAVE:
            return "%s:%s" % (SLAVE, self.master_address)
        return self.kind

    def __repr__(self):
        return "Role(%s)" % self.text()


def parse(text):
    text = text.strip()
    if text == MASTER or text == "":
        return Role(MASTER)
    if text.startswith(SLAVE + ":") and len(text) > len(SLAVE) + 1:
        # The address may hold ':' (IPv6): split on the first only.
        return Role(SLAVE, text.split(":", 1)[1])
    return Role(BROKEN)


def read(data_dir):
    path = os.path.join(data_dir, FILE)
    if not os.path.exists(path):
        return Role(MASTER)
    with open(path) as f:
        return parse(f.read())


def write(data_dir, role):
    write_atomically(os.path.join(data_dir, FILE), role.text() + "\n",
                     perms=0o644)

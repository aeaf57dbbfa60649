"""
The guest-tools ISO of the tools SR, made when it is missing: an ISO 9660
image (Rock Ridge and Joliet names) a guest mounts from its CD drive, laid
out as XCP-ng's (Linux/install.sh).  The guest agent itself comes from the
guest's distribution (xe-guest-utilities): install.sh installs it with the
guest's package manager.
"""

import io
import os
import tempfile

import pycdlib

FILE_NAME = "guest-tools.iso"
VOLUME_ID = "XCP-ng Tools"

README = """\
{product} guest tools
{underline}

The guest agent reports the guest's IP addresses, OS and memory to the
toolstack and lets it shut the guest down cleanly.

Linux: as root, run

    sh /mnt/Linux/install.sh

with this disc mounted on /mnt (mount /dev/cdrom /mnt).  It installs the
xe-guest-utilities package from your distribution and starts the agent.
"""

INSTALL_SH = """\
#!/bin/sh
# Installs the guest agent (xe-guest-utilities) from the distribution.
set -e
if command -v apt-get >/dev/null 2>&1; then
    apt-get install -y xe-guest-utilities
elif command -v dnf >/dev/null 2>&1; then
    dnf install -y xe-guest-utilities-latest || dnf install -y xe-guest-utilities
elif command -v yum >/dev/null 2>&1; then
    yum install -y xe-guest-utilities-latest || yum install -y xe-guest-utilities
elif command -v zypper >/dev/null 2>&1; then
    zypper --non-interactive install xe-guest-utilities
elif command -v apk >/dev/null 2>&1; then
    apk add xe-guest-utilities
else
    echo "no known package manager: install xe-guest-utilities by hand" >&2
    exit 1
fi
for service in xe-linux-distribution xe-guest-utilities; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl enable --now "$service" 2>/dev/null && break
    fi
done
echo "guest agent installed"
"""


def _add_file(iso, directory, name, text, mode):
    data = text.encode("utf-8")
    short = name.upper().replace("-", "_")
    iso.add_fp(io.BytesIO(data), len(data),
               "%s/%s;1" % (directory.upper(), short),
               rr_name=name, joliet_path="%s/%s" % (directory, name),
               file_mode=mode)


def build(path, product="XCP-ng"):
    """Write the tools ISO to ``path`` atomically (blocking)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", joliet=3,
            vol_ident=VOLUME_ID, app_ident_str="txxapi")
    try:
        title = "%s guest tools" % product
        _add_file(iso, "", "README.txt",
                  README.format(product=product, underline="=" * len(title)),
                  0o100444)
        iso.add_directory("/LINUX", rr_name="Linux", joliet_path="/Linux",
                          file_mode=0o40555)
        _add_file(iso, "/Linux", "install.sh", INSTALL_SH, 0o100555)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tools-",
                                   suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    finally:
        iso.close()


def ensure(directory, product="XCP-ng"):
    """The tools directory with its ISO in it; returns the ISO's path."""
    path = os.path.join(directory, FILE_NAME)
    if not os.path.isfile(path):
        build(path, product)
    return path

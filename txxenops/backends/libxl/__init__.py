"""
The libxl backend: real Xen, driven through libxenlight from dom0.

``open_backend()`` is what the toolstack calls for ``--backend libxl`` (and
tries first for ``auto``).  It fails fast with BackendUnavailable and a
precise reason when this is not a Xen control domain or when the compiled
cffi binding to libxenlight is not installed; only then does it create the
backend (which opens the libxl context).
"""

import importlib

from txxenops.errors import BackendUnavailable

PRIVCMD = "/dev/xen/privcmd"
CAPABILITIES = "/proc/xen/capabilities"
# The glue around the out-of-line cffi module (_libxl, built by _build.py
# from decl/ when libxen-dev is installed).
BINDING = "txxenops.backends.libxl.ffi"


def check_xen_host(privcmd=PRIVCMD, capabilities=CAPABILITIES):
    """Raise BackendUnavailable unless this is a Xen control domain."""
    try:
        with open(capabilities) as f:
            caps = f.read().split()
    except OSError as e:
        raise BackendUnavailable(
            "not running on Xen: cannot read %s (%s)"
            % (capabilities, e.strerror or e))
    if "control_d" not in caps:
        raise BackendUnavailable(
            "not a Xen control domain: %s does not list control_d"
            % capabilities)
    try:
        with open(privcmd, "rb"):
            pass
    except OSError as e:
        raise BackendUnavailable(
            "no access to the Xen hypercall interface %s (%s): is "
            "xen-privcmd loaded and are we root?" % (privcmd, e.strerror or e))


def load_binding(name=BINDING):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailable(
            "the compiled libxl binding %s is not installed (%s)" % (name, e))


def open_backend(**kwargs):
    """A LibxlBackend for this host, or BackendUnavailable saying why
    not."""
    check_xen_host()
    binding = load_binding()
    from txxenops.backends.libxl.backend import LibxlBackend
    return LibxlBackend(binding, **kwargs)

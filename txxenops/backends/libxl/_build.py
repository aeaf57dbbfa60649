"""
Build the cffi binding to libxenlight (out-of-line API mode).

The package build runs this through ``cffi_modules`` (see setup.py) when the
libxl headers are installed (Debian: libxen-dev); elsewhere the package
installs without it and the libxl backend reports itself unavailable.

Run it as a script to build the module into the source tree instead, for a
checkout used in place (the real-Xen test harness does)::

    python txxenops/backends/libxl/_build.py --inplace

Only cffi and the standard library may be imported here: the package build
runs this file in an isolated environment without the project installed.
"""

import os
import shutil
import sys
import sysconfig
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "txxenops.backends.libxl._libxl"
INCLUDE_DIRS = ("/usr/include", "/usr/local/include")
LIBRARIES = ["xenlight", "xentoollog", "xenstore"]


def _read(name):
    with open(os.path.join(HERE, "decl", name)) as f:
        return f.read()


def find_headers():
    """The directory holding libxl.h, or None when libxen-dev is missing.
    LIBXL_INCLUDE_DIR overrides the search (for a Xen built elsewhere)."""
    dirs = [os.environ["LIBXL_INCLUDE_DIR"]] \
        if os.environ.get("LIBXL_INCLUDE_DIR") else INCLUDE_DIRS
    for d in dirs:
        if os.path.exists(os.path.join(d, "libxl.h")):
            return d
    return None


def make_builder():
    ffibuilder = FFI()
    ffibuilder.cdef(_read("libxl.h"))
    ffibuilder.cdef(_read("xenstore.h"))
    ffibuilder.cdef(_read("shim.h"))
    include = find_headers()
    ffibuilder.set_source(
        MODULE, _read("shim.c"),
        libraries=LIBRARIES,
        include_dirs=[include] if include and include != "/usr/include"
        else [],
        # Pin the 4.17 API so that libxl's compatibility macros do not
        # rename the functions declared in decl/libxl.h.
        define_macros=[("LIBXL_API_VERSION", "0x041300")])
    return ffibuilder


ffibuilder = make_builder()


def build_inplace(verbose=False):
    """Compile into a scratch directory and copy only the extension module
    next to this file.  Returns its path."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = os.path.join(HERE, "_libxl" + suffix)
    with tempfile.TemporaryDirectory(prefix="txxenops-cffi-") as tmp:
        built = ffibuilder.compile(tmpdir=tmp, verbose=verbose)
        shutil.copyfile(built, target + ".tmp")
        os.replace(target + ".tmp", target)
    return target


if __name__ == "__main__":
    if find_headers() is None:
        sys.exit("libxl.h not found: install libxen-dev")
    if "--inplace" in sys.argv[1:]:
        print(build_inplace(verbose="-v" in sys.argv[1:]))
    else:
        ffibuilder.compile(verbose=True)

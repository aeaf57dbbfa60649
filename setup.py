"""Kept for the twistd plugin cache refresh after installation, and to
build the libxl binding (txxenops/backends/libxl/_build.py) where Xen's
headers are installed."""

import os
import runpy

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
LIBXL_BUILD = "txxenops/backends/libxl/_build.py"


def cffi_modules():
    """The binding needs Debian's libxen-dev; without it the package still
    installs and the libxl backend says why it is unavailable."""
    try:
        build = runpy.run_path(os.path.join(HERE, LIBXL_BUILD))
    except ImportError as e:
        print("not building the libxl binding: %s" % e)
        return []
    if build["find_headers"]() is None:
        print("not building the libxl binding: libxl.h not found "
              "(install libxen-dev)")
        return []
    return [LIBXL_BUILD + ":ffibuilder"]


setup(cffi_modules=cffi_modules())

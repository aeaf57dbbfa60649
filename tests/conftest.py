import os
import sys
import tempfile

# The suite starts hundreds of server and `xe` processes: each would
# compile every module of the project again where the environment asks
# for no bytecode files.  They are cached outside the tree instead, for
# this process and every one it starts.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
if not os.environ.get("PYTHONPYCACHEPREFIX"):
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(
        tempfile.gettempdir(), "txxapi-pycache-%d" % os.getuid())
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]

# Parallel workers (pytest-xdist) each take a loopback net of their own
# (127.0.N.x, netns and bridge names): set before tests.support.pool reads
# it.  Worker gwK runs on net TXXAPI_TEST_NET + K.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw"):
    os.environ["TXXAPI_TEST_NET"] = str(
        int(os.environ.get("TXXAPI_TEST_NET", "0")) + int(_worker[2:]))

import pytest  # noqa: E402

from tests.support.servers import serving  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server for the tests of a module."""
    yield from serving(tmp_path_factory, "xapi")


@pytest.fixture
def xapi(server):
    """A logged-in XenAPI SDK session (over HTTPS)."""
    session = server.session()
    yield session
    try:
        session.xenapi.session.logout()
    except Exception:
        pass


@pytest.fixture
def x(xapi):
    """The SDK's call proxy of that session: x.VM.get_all() and so on."""
    return xapi.xenapi

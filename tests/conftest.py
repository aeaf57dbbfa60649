import os

import pytest

from tests.support.servers import RunningServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server for the tests of a module."""
    base = tmp_path_factory.mktemp("xapi")
    s = RunningServer(os.path.join(str(base), "data"))
    s.start()
    yield s
    s.stop()


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

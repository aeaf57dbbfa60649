import pytest

from tests.support.servers import serving


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

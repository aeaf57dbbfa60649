"""
The local Unix socket (<data-dir>/xapi, as XAPI's /var/lib/xcp/xapi): the
whole HTTP API on it, its callers trusted as root (a login still needed,
its password unchecked), ``xe`` run with no -s using it, and the XenAPI
SDK's Unix-socket transport (the one ``xapi_local()`` uses) reaching it.
"""

import os
import socket
import stat
import xmlrpc.client

import pytest
import XenAPI

from tests.support.servers import read_head, serving
from tests.support.xe import local_socket, raw_cli, run_xe


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serving(tmp_path_factory, "clilocal")


def sdk_path(server):
    """The socket as the SDK's transport can name it: it reads the URL's
    host with '_' for '/', so a path with '_' is reached by a link."""
    path = local_socket(server)
    if "_" not in path:
        return path
    link = "/tmp/txxapi-sdk-%d" % os.getpid()
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(path, link)
    return link


def sdk_local(server):
    return XenAPI.Session("http://%s/" % sdk_path(server).replace("/", "_"),
                          transport=XenAPI.UDSTransport())


def test_socket_is_the_owners_only(server):
    mode = os.stat(local_socket(server)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_sdk_logs_in_without_a_password(server):
    session = sdk_local(server)
    session.xenapi.login_with_password("root", "not the password", "1.0",
                                       "local test")
    x = session.xenapi
    me = x.session.get_record(session._session)
    assert me["is_local_superuser"] and me["auth_user_name"] == "root"
    assert me["originator"] == "local test"
    assert [x.host.get_uuid(h) for h in x.host.get_all()] == \
        run_xe(server, "host-list", "--minimal")[1].split()
    session.xenapi.session.logout()
    # The same over TCP is refused.
    with pytest.raises(XenAPI.Failure) as e:
        XenAPI.Session(server.http_url).xenapi.login_with_password(
            "root", "not the password")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"


def test_a_session_is_still_needed(server):
    proxy = xmlrpc.client.ServerProxy(
        "http://%s/" % sdk_path(server).replace("/", "_"),
        transport=XenAPI.UDSTransport())
    answer = proxy.VM.get_all("")
    assert answer["Status"] == "Failure"
    assert answer["ErrorDescription"][0] == "SESSION_INVALID"


def test_http_handlers_need_no_credentials_locally(server):
    request = b"GET /host_rrd HTTP/1.0\r\n\r\n"
    local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    local.connect(local_socket(server))
    with local:
        local.sendall(request)
        head = read_head(local)
    assert head.split()[1] == b"200"
    with socket.create_connection(("127.0.0.1", server.http_port)) as tcp:
        tcp.sendall(request)
        head = read_head(tcp)
    assert head.split()[1] == b"401"


def test_xe_without_server_or_credentials(server):
    rc, out, err = run_xe(server, "host-list", "--minimal", local=True,
                          auth=False)
    assert (rc, err) == (0, "") and len(out.strip()) == 36
    err = run_xe(server, "host-list", "--debug", local=True, auth=False)[2]
    assert "Connecting to Unix socket" in err and "TCP" not in err
    # The protocol on the socket, with no credentials at all.
    _, msgs = raw_cli(server, ["host-list", "params=uuid", "--minimal"],
                      local=True)
    assert msgs == [(0, out.strip()), (4, 0)]
    # Over TCP the same command needs them.
    assert run_xe(server, "host-list", auth=False)[2].startswith(
        "Authentication failed")


def test_xe_falls_back_to_tcp(server, tmp_path):
    rc, out, err = run_xe(server, "host-list", "--minimal", "--debug",
                          socket_path=str(tmp_path / "none"))
    assert rc == 0 and len(out.strip()) == 36
    assert "Connecting to Unix socket [%s]\n failed\n" % (
        tmp_path / "none") in err
    assert "Connecting via TCP to [127.0.0.1] port [%d]" % \
        server.http_port in err


def test_files_go_over_the_socket_too(server, tmp_path):
    def xe(*args):
        rc, out, err = run_xe(server, *args, local=True, auth=False,
                              cwd=tmp_path)
        assert rc == 0, err
        return out
    uuid = xe("vm-install", "template=Debian Bookworm 12",
              "new-name-label=local").strip()
    assert xe("vm-export", "vm=" + uuid, "filename=local.xva") == \
        "Export succeeded\n"
    assert (tmp_path / "local.xva").stat().st_size > 0
    xe("vm-uninstall", "uuid=" + uuid, "--force")


def test_socket_survives_kill_9(server):
    server.kill()
    server.start()
    rc, out, _ = run_xe(server, "host-list", "--minimal", local=True,
                        auth=False)
    assert rc == 0 and len(out.strip()) == 36

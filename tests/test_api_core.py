"""
The server core against a real `twistd xapi`: the XenAPI SDK over HTTPS and
HTTP, raw XML-RPC and JSON-RPC, and every error a bad call deserves.
"""

import json
import socket
import ssl
import urllib.error
import urllib.request

import pytest
import XenAPI

from tests.support.servers import PASSWORD, USER, insecure_context
from txxapi.datamodel import MODEL
from txxapi.datamodel.schema import REMOVED


def post(server, path, body, content_type="text/xml", https=False):
    url = (server.https_url if https else server.http_url) + path
    req = urllib.request.Request(url, data=body,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30,
                                    context=insecure_context()) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def jsonrpc(server, method, params, version=2, id_=1):
    req = {"method": method, "params": params, "id": id_}
    if version == 2:
        req["jsonrpc"] = "2.0"
    status, headers, body = post(server, "/jsonrpc",
                                 json.dumps(req).encode(), "application/json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def failure_of(call, *args):
    with pytest.raises(XenAPI.Failure) as e:
        call(*args)
    return e.value.details


def test_login_over_https_and_http(server):
    for https in (True, False):
        s = server.session(https=https)
        ref = s.xenapi.session.get_this_host(s._session)
        assert ref.startswith("OpaqueRef:")
        assert s.xenapi.host.get_record(ref)["uuid"]
        s.xenapi.session.logout()


def test_login_with_two_arguments(server):
    s = XenAPI.Session(server.http_url)
    s.xenapi.login_with_password(USER, PASSWORD)
    assert s.xenapi.pool.get_all()
    s.xenapi.session.logout()


def test_bad_password(server):
    s = XenAPI.Session(server.http_url)
    details = failure_of(s.xenapi.login_with_password, USER, "wrong",
                         "1.0", "t")
    assert details[0] == "SESSION_AUTHENTICATION_FAILED"
    assert details[1] == USER


def test_every_class_get_all_records_has_every_field(xapi):
    checked = 0
    for cls in MODEL.classes.values():
        m = cls.messages.get("get_all_records")
        if m is None or not cls.in_db or m.state == REMOVED:
            continue
        records = getattr(xapi.xenapi, cls.name).get_all_records()
        expected = {f.name for f in cls.record_fields}
        for ref, rec in records.items():
            assert ref.startswith("OpaqueRef:"), (cls.name, ref)
            assert set(rec) == expected, cls.name
        checked += 1
    assert checked > 50


def test_fresh_host_objects(xapi):
    x = xapi.xenapi
    pool = x.pool.get_record(x.pool.get_all()[0])
    host = x.host.get_record(pool["master"])
    assert host["API_version_major"] == "2"
    assert int(host["cpu_info"]["cpu_count"]) == len(host["host_CPUs"])
    metrics = x.host_metrics.get_record(host["metrics"])
    assert int(metrics["memory_total"]) > 0 and metrics["live"] is True
    dom0 = x.VM.get_record(host["control_domain"])
    assert dom0["is_control_domain"] and dom0["power_state"] == "Running"
    assert dom0["resident_on"] == pool["master"]
    assert dom0["consoles"] and x.VM_metrics.get_record(dom0["metrics"])
    pifs = [x.PIF.get_record(p) for p in host["PIFs"]]
    assert any(p["management"] for p in pifs)
    roles = {r["name_label"] for r in x.role.get_all_records().values()}
    assert {"pool-admin", "read-only", "vm.start"} <= roles


def test_bad_ref(xapi):
    bogus = "OpaqueRef:00000000-0000-0000-0000-000000000000"
    assert failure_of(xapi.xenapi.VM.get_record, bogus) == [
        "HANDLE_INVALID", "VM", bogus]


def test_bad_uuid(xapi):
    assert failure_of(xapi.xenapi.VM.get_by_uuid, "nope") == [
        "UUID_INVALID", "VM", "nope"]


def test_unknown_method(xapi):
    assert failure_of(xapi.xenapi.VM.frobnicate, "x") == [
        "MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]


def test_parameter_count_mismatch(xapi):
    host = xapi.xenapi.host.get_all()[0]
    assert failure_of(xapi.xenapi.host.get_name_label, host, "extra") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "host.get_name_label", "1", "2"]


def test_field_type_error(xapi):
    host = xapi.xenapi.host.get_all()[0]
    details = failure_of(xapi.xenapi.host.set_name_label, host, ["a list"])
    assert details == ["FIELD_TYPE_ERROR", "value"]


def test_logged_out_session(server):
    # The SDK hides SESSION_INVALID by logging in again: ask raw XML-RPC.
    import xmlrpc.client
    s = server.session()
    ref = s._session
    s.xenapi.session.logout()
    proxy = xmlrpc.client.ServerProxy(server.http_url)
    assert proxy.pool.get_all(ref) == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_setters_maps_sets_and_where(xapi):
    x = xapi.xenapi
    host = x.host.get_all()[0]
    x.host.set_name_description(host, "described")
    assert x.host.get_name_description(host) == "described"
    x.host.add_to_other_config(host, "k", "v")
    assert failure_of(x.host.add_to_other_config, host, "k", "w")[:3] == [
        "MAP_DUPLICATE_KEY", "host", "other_config"]
    x.host.remove_from_other_config(host, "k")
    x.host.add_tags(host, "t1")
    x.host.add_tags(host, "t1")
    assert x.host.get_tags(host) == ["t1"]
    x.host.remove_tags(host, "t1")
    assert x.host.get_tags(host) == []
    dom0 = x.VM.get_all_records_where('field "is_control_domain"="true"')
    assert len(dom0) == 1
    assert x.VM.get_all_records_where(
        'field "is_control_domain"="true" and not true') == {}
    assert failure_of(x.VM.get_all_records_where, "field")[0] == \
        "INVALID_VALUE"


def test_not_implemented_is_loud(xapi):
    host = xapi.xenapi.host.get_all()[0]
    details = failure_of(xapi.xenapi.host.get_system_status_capabilities,
                         host)
    assert details == ["NOT_IMPLEMENTED",
                       "host.get_system_status_capabilities"]


def test_async_call_and_task(xapi):
    x = xapi.xenapi
    task = x.Async.network.create({"name_label": "async-net",
                                   "name_description": "", "MTU": "1500",
                                   "other_config": {}})
    assert task.startswith("OpaqueRef:")
    import time
    for _ in range(100):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.05)
    rec = x.task.get_record(task)
    assert rec["status"] == "success"
    assert rec["name_label"] == "Async.network.create"
    net = rec["result"][len("<value>"):-len("</value>")]
    assert x.network.get_name_label(net) == "async-net"
    x.network.destroy(net)


def test_async_on_getter_is_refused(xapi):
    host = xapi.xenapi.host.get_all()[0]
    details = failure_of(xapi.xenapi.Async.host.get_name_label, host)
    assert details[0] == "Fault"


def test_list_methods_without_session(server):
    import xmlrpc.client
    proxy = xmlrpc.client.ServerProxy(server.http_url)
    methods = proxy.system.listMethods()
    assert "VM.start" in methods and "session.login_with_password" in methods


def test_xmlrpc_wire_form(server):
    body = (b"<?xml version='1.0'?><methodCall><methodName>"
            b"session.login_with_password</methodName><params>"
            b"<param><value>root</value></param><param><value>bad"
            b"</value></param></params></methodCall>")
    status, headers, answer = post(server, "/", body)
    assert status == 200 and headers["Content-Type"] == "text/xml"
    assert b"<member><name>Status</name><value>Failure</value></member>" \
        in answer
    assert b"<value>SESSION_AUTHENTICATION_FAILED</value>" in answer


def test_jsonrpc_v1_and_v2(server):
    ok = jsonrpc(server, "session.login_with_password",
                 [USER, PASSWORD, "1.0", "t"], version=2, id_="a")
    assert ok["jsonrpc"] == "2.0" and ok["id"] == "a"
    session = ok["result"]
    v1 = jsonrpc(server, "pool.get_all", [session], version=1, id_=7)
    assert v1["error"] is None and v1["id"] == 7 and len(v1["result"]) == 1
    bad = jsonrpc(server, "VM.get_record", [session, "OpaqueRef:x"])
    assert bad["error"] == {"code": 1, "message": "HANDLE_INVALID",
                            "data": ["VM", "OpaqueRef:x"]}
    bad1 = jsonrpc(server, "VM.get_record", [session, "OpaqueRef:x"],
                   version=1)
    assert bad1["result"] is None
    assert bad1["error"] == ["HANDLE_INVALID", "VM", "OpaqueRef:x"]
    host = jsonrpc(server, "host.get_all", [session])["result"][0]
    mem = jsonrpc(server, "host.get_record", [session, host])["result"]
    assert isinstance(mem["API_version_major"], int)
    jsonrpc(server, "session.logout", [session])


def test_malformed_bodies_are_refused_and_server_survives(server):
    status, _, _ = post(server, "/", b"<methodCall><oops")
    assert status == 400
    status, _, _ = post(server, "/jsonrpc", b"{not json", "application/json")
    assert status == 400
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><methodCall>'
            b'<methodName>&lol2;</methodName></methodCall>')
    status, _, _ = post(server, "/", bomb)
    assert status == 400
    assert server.session().xenapi.pool.get_all()


def test_oversized_body_is_refused(server):
    huge = b"<methodCall>" + b"x" * (400 * 1024) + b"</methodCall>"
    try:
        status, _, _ = post(server, "/", huge)
    except (ConnectionError, urllib.error.URLError):
        status = 413  # the server closed while we were still sending
    assert status == 413
    assert server.session().xenapi.pool.get_all()


def test_tls_minimum_version(server):
    ctx = insecure_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with socket.create_connection(("127.0.0.1", server.https_port)) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw).do_handshake()
    ok = insecure_context()
    with socket.create_connection(("127.0.0.1", server.https_port)) as raw:
        with ok.wrap_socket(raw) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_large_record_maps_are_streamed(server, xapi):
    x = xapi.xenapi
    made = [x.network.create({"name_label": "bulk-%d" % i,
                              "name_description": "<&\"'>",
                              "MTU": "1500", "other_config": {"i": str(i)}})
            for i in range(300)]
    try:
        records = x.network.get_all_records()
        assert set(made) <= set(records)
        assert records[made[7]]["other_config"] == {"i": "7"}
        assert records[made[7]]["name_description"] == "<&\"'>"
        session = xapi._session
        for version in (1, 2):
            req = {"method": "network.get_all_records", "params": [session],
                   "id": 5}
            if version == 2:
                req["jsonrpc"] = "2.0"
            status, headers, body = post(server, "/jsonrpc",
                                         json.dumps(req).encode(),
                                         "application/json")
            assert headers.get("Transfer-Encoding") == "chunked"
            answer = json.loads(body)
            assert answer["id"] == 5
            assert set(made) <= set(answer["result"])
            assert answer["result"][made[3]]["name_label"] == "bulk-3"
        where = x.network.get_all_records_where('field "name_label"="bulk-9"')
        assert list(where) == [made[9]]
    finally:
        for ref in made:
            x.network.destroy(ref)

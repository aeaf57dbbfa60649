"""
``xe`` commands around storage, hosts, messages, subjects and the pool,
run with the real client against a real server: each checked by what it
prints (XAPI's words and exit codes) and by what the API shows after.
"""

import os

import XenAPI

from tests.support.xe import (
    api_error, block, module_fixtures, ok, run_xe)

MIB = 1 << 20


server, api, x = module_fixtures("clicmds")


# --- SRs and PBDs ----------------------------------------------------------------

def test_sr_create_scan_plug_forget_destroy(server, x, tmp_path):
    location = tmp_path / "sr-a"
    uuid = ok(server, "sr-create", "name-label=cli sr", "type=file",
              "device-config:location=%s" % location).strip()
    sr = x.SR.get_by_uuid(uuid)
    assert x.SR.get_name_label(sr) == "cli sr" and \
        x.SR.get_type(sr) == "file"
    [pbd] = x.SR.get_PBDs(sr)
    assert x.PBD.get_device_config(pbd) == {"location": str(location)}
    assert x.PBD.get_currently_attached(pbd)
    ok(server, "sr-param-set", "uuid=" + uuid, "name-description=scratch",
       "other-config:purpose=test")
    assert ok(server, "sr-param-get", "uuid=" + uuid,
              "param-name=name-description") == "scratch\n"
    assert x.SR.get_other_config(sr)["purpose"] == "test"
    ok(server, "sr-scan", "uuid=" + uuid)
    pbd_uuid = ok(server, "pbd-list", "sr-uuid=" + uuid, "--minimal").strip()
    assert pbd_uuid == x.PBD.get_uuid(pbd)
    ok(server, "pbd-unplug", "uuid=" + pbd_uuid)
    assert not x.PBD.get_currently_attached(pbd)
    assert ok(server, "pbd-param-get", "uuid=" + pbd_uuid,
              "param-name=currently-attached") == "false\n"
    ok(server, "pbd-plug", "uuid=" + pbd_uuid)
    assert x.PBD.get_currently_attached(pbd)
    # The location read from a file of the client's.
    where = tmp_path / "where"
    where.write_text(str(tmp_path / "sr-b"))
    other = ok(server, "sr-create", "name-label=from file", "type=file",
               "device-config:location-filename=%s" % where).strip()
    sr_b = x.SR.get_by_uuid(other)
    assert x.PBD.get_device_config(x.SR.get_PBDs(sr_b)[0]) == {
        "location": str(tmp_path / "sr-b")}
    assert run_xe(server, "sr-forget", "uuid=" + other)[2] == api_error(
        "SR_HAS_PBD", "%s (from file)" % other)
    ok(server, "pbd-unplug", "uuid=" + x.PBD.get_uuid(x.SR.get_PBDs(sr_b)[0]))
    ok(server, "sr-forget", "uuid=" + other)
    assert other not in ok(server, "sr-list", "--minimal")
    assert (tmp_path / "sr-b").exists()
    ok(server, "pbd-unplug", "uuid=" + pbd_uuid)
    ok(server, "sr-destroy", "uuid=" + uuid)
    assert uuid not in ok(server, "sr-list", "--minimal")


def test_sr_create_refusals_make_nothing(server, x, tmp_path):
    before = sorted(x.SR.get_all())
    rc, _, err = run_xe(server, "sr-create", "name-label=bad",
                        "type=file", "shared=perhaps")
    assert (rc, err) == (1, "Error: Failed to parse parameter 'shared': "
                            "Expected 'true','t','yes','y','1','false','f',"
                            "'no','n','0' got perhaps\n")
    missing = tmp_path / "missing"
    rc, _, err = run_xe(server, "sr-create", "name-label=bad", "type=file",
                        "device-config:location-filename=%s" % missing)
    # XAPI's words, run together as its CLI sends them.
    assert (rc, err) == (1, "File not found: %sError: File not found\n"
                         % missing)
    rc, _, err = run_xe(server, "sr-create", "name-label=bad", "type=nope")
    assert rc == 1 and err.startswith(api_error("SR_UNKNOWN_DRIVER")[:-1])
    rc, _, err = run_xe(server, "sr-create", "type=file")
    assert (rc, err) == (1, "Required parameter not found: name-label\n"
                            "For usage run: 'xe help'\n")
    assert sorted(x.SR.get_all()) == before


# --- VDI data ------------------------------------------------------------------

def test_vdi_import_export_raw_and_vhd(server, x, tmp_path):
    sr = x.SR.get_uuid(x.pool.get_default_SR(x.pool.get_all()[0]))
    uuid = ok(server, "vdi-create", "sr-uuid=" + sr, "name-label=data",
              "virtual-size=2MiB").strip()
    data = os.urandom(MIB) + b"\0" * MIB
    (tmp_path / "in.raw").write_bytes(data)
    assert ok(server, "vdi-import", "uuid=" + uuid, "filename=in.raw",
              cwd=tmp_path) == ""
    assert ok(server, "vdi-export", "uuid=" + uuid, "filename=out.raw",
              cwd=tmp_path) == ""
    assert (tmp_path / "out.raw").read_bytes() == data
    ok(server, "vdi-export", "uuid=" + uuid, "filename=out.vhd",
       "format=vhd", cwd=tmp_path)
    vhd = (tmp_path / "out.vhd").read_bytes()
    assert vhd[-512:].startswith(b"conectix")
    copy = ok(server, "vdi-create", "sr-uuid=" + sr, "name-label=copy",
              "virtual-size=2MiB").strip()
    ok(server, "vdi-import", "uuid=" + copy, "filename=out.vhd",
       "format=vhd", cwd=tmp_path)
    ok(server, "vdi-export", "uuid=" + copy, "filename=copy.raw",
       cwd=tmp_path)
    assert (tmp_path / "copy.raw").read_bytes() == data
    # Through the local socket too, with no credentials.
    ok(server, "vdi-export", "uuid=" + copy, "filename=local.raw",
       cwd=tmp_path, local=True, auth=False)
    assert (tmp_path / "local.raw").read_bytes() == data
    # Refusals: the handler's own error; a file the client lacks.
    rc, _, err = run_xe(server, "vdi-export", "uuid=" + uuid,
                        "filename=bad.out", "format=tar", cwd=tmp_path)
    assert rc == 1 and "Unknown format tar" in err
    rc, _, err = run_xe(server, "vdi-import", "uuid=" + uuid,
                        "filename=nothing.raw", cwd=tmp_path)
    assert rc == 1 and err == ("Operation failed. Error: file 'nothing.raw' "
                               "does not exist\n")
    assert run_xe(server, "vdi-import", "uuid=nope", "filename=in.raw",
                  cwd=tmp_path)[2] == api_error("UUID_INVALID", "VDI", "nope")
    ok(server, "vdi-export", "uuid=" + uuid, "filename=again.raw",
       cwd=tmp_path)
    assert (tmp_path / "again.raw").read_bytes() == data
    assert x.task.get_all() == [] or all(
        x.task.get_name_label(t) not in ("VDI import", "VDI export")
        for t in x.task.get_all())
    for u in (uuid, copy):
        ok(server, "vdi-destroy", "uuid=" + u)


# --- hosts and PIFs ----------------------------------------------------------------

def test_host_commands(server, x):
    host = x.host.get_all()[0]
    uuid = x.host.get_uuid(host)
    assert run_xe(server, "host-disable", "uuid=" + uuid) == (0, "", "")
    assert x.host.get_enabled(host) is False
    assert run_xe(server, "host-enable",
                  "host=" + x.host.get_name_label(host)) == (0, "", "")
    assert x.host.get_enabled(host) is True
    # A host without VMs to move: nothing to do.
    assert run_xe(server, "host-evacuate", "uuid=" + uuid) == (0, "", "")
    assert run_xe(server, "host-evacuate", "uuid=" + uuid,
                  "batch-size=many")[2] == (
        "Error: Failed to parse parameter 'batch-size': expecting an "
        "unsigned integer, got many\n")
    assert run_xe(server, "host-evacuate", "host=nobody")[2] == \
        "Error: No matching hosts found\n"


def test_pif_commands(server, x):
    pif = x.PIF.get_all()[0]
    uuid = x.PIF.get_uuid(pif)
    host = x.host.get_uuid(x.PIF.get_host(pif))
    out = ok(server, "pif-list", "params=uuid,device,host-uuid")
    assert block(("uuid ( RO)", uuid),
                 ("device ( RO)", x.PIF.get_device(pif)),
                 ("host-uuid ( RO)", host)) in out + "\n"
    assert ok(server, "pif-param-get", "uuid=" + uuid,
              "param-name=IP-configuration-mode") == \
        x.PIF.get_ip_configuration_mode(pif) + "\n"
    # The simulated host has eth0 to eth3: a scan adds the three PIFs it
    # lacks, unplugged and unconfigured, on networks of their bridges.
    assert ok(server, "pif-scan", "host-uuid=" + host) == ""
    by_device = {x.PIF.get_device(p): p for p in x.PIF.get_all()}
    assert sorted(by_device) == ["eth0", "eth1", "eth2", "eth3"]
    eth1 = x.PIF.get_record(by_device["eth1"])
    assert (eth1["ip_configuration_mode"], eth1["currently_attached"],
            eth1["management"], eth1["physical"], eth1["VLAN"]) == (
        "None", False, False, True, "-1")
    assert x.network.get_bridge(eth1["network"]) == "xenbr1"
    assert ok(server, "pif-scan", "host-uuid=" + host) == ""
    assert len(x.PIF.get_all()) == 4
    # An unconfigured PIF cannot carry the management traffic.
    assert failure(x.host.management_reconfigure, by_device["eth1"]) == [
        "PIF_HAS_NO_NETWORK_CONFIGURATION", by_device["eth1"]]
    # A static configuration's addresses are checked, and a refusal
    # changes nothing.
    good = {"IP": server.bind, "netmask": "255.255.255.0",
            "gateway": "", "DNS": ""}
    for name, bad in (("IP", "nope"), ("netmask", "255.0"),
                      ("gateway", "10.0.0.256"), ("DNS", "10.0.0.1,x")):
        args = dict(good, **{name: bad})
        assert failure(x.PIF.reconfigure_ip, by_device["eth1"], "Static",
                       args["IP"], args["netmask"], args["gateway"],
                       args["DNS"]) == ["INVALID_IP_ADDRESS_SPECIFIED", name]
    assert x.PIF.get_record(by_device["eth1"]) == eth1
    ok(server, "pif-reconfigure-ip", "uuid=" + eth1["uuid"], "mode=static",
       "IP=" + server.bind, "netmask=255.255.255.0", "dns=10.0.0.1")
    eth1 = x.PIF.get_record(by_device["eth1"])
    assert (eth1["ip_configuration_mode"], eth1["IP"], eth1["DNS"]) == (
        "Static", server.bind, "10.0.0.1")
    # The management interface moves to eth1 and back.
    for new, old in (("eth1", "eth0"), ("eth0", "eth1")):
        ok(server, "host-management-reconfigure",
           "pif-uuid=" + x.PIF.get_uuid(by_device[new]))
        assert x.PIF.get_management(by_device[new]) is True
        assert x.PIF.get_management(by_device[old]) is False
        assert x.PIF.get_currently_attached(by_device[new]) is True
        assert x.host.get_address(x.PIF.get_host(pif)) == server.bind
    # DHCP on the management PIF: the simulated lease is the host's
    # address.
    ok(server, "pif-reconfigure-ip", "uuid=" + uuid, "mode=dhcp")
    assert (x.PIF.get_ip_configuration_mode(pif), x.PIF.get_IP(pif)) == (
        "DHCP", server.bind)
    assert x.host.get_address(x.PIF.get_host(pif)) == server.bind


def failure(call, *args):
    try:
        call(*args)
    except XenAPI.Failure as e:
        return e.details
    raise AssertionError("%s succeeded" % call)


# --- messages ------------------------------------------------------------------

def test_message_create_list_destroy(server, x):
    host = x.host.get_uuid(x.host.get_all()[0])
    assert ok(server, "message-create", "name=CLI_TEST", "priority=3",
              "host-uuid=" + host, "body=hello, world") == ""
    [(ref, record)] = [(r, m) for r, m in x.message.get_all_records().items()
                       if m["name"] == "CLI_TEST"]
    out = ok(server, "message-list", "name=CLI_TEST")
    assert out == block(("uuid ( RO)", record["uuid"]),
                        ("name ( RO)", "CLI_TEST"), ("priority ( RO)", "3"),
                        ("class ( RO)", "Host"), ("obj-uuid ( RO)", host),
                        ("timestamp ( RO)", str(record["timestamp"])),
                        ("body ( RO)", "hello, world"))
    assert ok(server, "message-list", "class=Host", "params=body",
              "--minimal", "name=CLI_TEST") == "hello\\, world\n"
    assert ok(server, "message-param-get", "uuid=" + record["uuid"],
              "param-name=obj-uuid") == host + "\n"
    ok(server, "message-create", "name=CLI_TEST", "priority=1",
       "host-uuid=" + host, "body=two")
    uuids = ok(server, "message-list", "name=CLI_TEST", "--minimal").strip()
    assert len(uuids.split(",")) == 2
    # Refusals change nothing.
    assert run_xe(server, "message-create", "name=X", "priority=high",
                  "host-uuid=" + host, "body=b")[2] == \
        "Error: Priority field should be an integer\n"
    assert run_xe(server, "message-create", "name=X", "priority=1",
                  "body=b")[2] == \
        "Error: Need one of: vm-uuid, host-uuid, sr-uuid or pool-uuid\n"
    assert run_xe(server, "message-destroy")[2] == \
        "Error: Need one of uuid, uuids\n"
    assert run_xe(server, "message-destroy", "uuid=a", "uuids=b")[2] == \
        "Error: Ambiguous arguments; need one of uuid, uuids\n"
    assert len([m for m in x.message.get_all_records().values()
                if m["name"] == "CLI_TEST"]) == 2
    ok(server, "message-destroy", "uuids=" + uuids)
    assert ok(server, "message-list", "name=CLI_TEST", "--minimal") == "\n"


# --- subjects and roles ------------------------------------------------------------

def test_roles_and_subjects(server, x):
    names = ok(server, "role-list", "params=name", "--minimal").strip()
    assert {"pool-admin", "pool-operator", "read-only"} <= \
        set(names.split(","))
    role = x.role.get_by_name_label("pool-operator")[0]
    assert ok(server, "role-list", "name=pool-operator") == block(
        ("uuid ( RO)", x.role.get_uuid(role)), ("name ( RO)", "pool-operator"),
        ("description ( RO)", x.role.get_name_description(role)))
    assert run_xe(server, "subject-add", "subject-name=daemon") == (
        1, "", api_error("AUTH_IS_DISABLED"))
    pool = x.pool.get_all()[0]
    x.pool.enable_external_auth(pool, {}, "local", "PAM")
    try:
        uuid = ok(server, "subject-add", "subject-name=daemon").strip()
        subject = x.subject.get_by_uuid(uuid)
        assert x.subject.get_other_config(subject)["subject-name"] == \
            "daemon"
        ok(server, "subject-role-add", "uuid=" + uuid,
           "role-name=pool-operator")
        assert x.subject.get_roles(subject) == [role]
        ok(server, "subject-role-add", "uuid=" + uuid,
           "role-uuid=" + x.role.get_uuid(
               x.role.get_by_name_label("read-only")[0]))
        assert ok(server, "subject-param-get", "uuid=" + uuid,
                  "param-name=roles") in (
            "pool-operator; read-only\n", "read-only; pool-operator\n")
        assert ok(server, "subject-list", "roles:contains=pool-operator",
                  "--minimal") == uuid + "\n"
        assert run_xe(server, "subject-role-add", "uuid=" + uuid)[2] == \
            "Error: Required parameter not found: role-uuid or role-name\n"
        assert run_xe(server, "subject-role-add", "uuid=" + uuid,
                      "role-name=a", "role-uuid=b")[2] == (
            "Error: Parameters role-uuid and role-name cannot be used "
            "together\n")
        rc, _, err = run_xe(server, "subject-role-add", "uuid=" + uuid,
                            "role-name=no such role")
        assert (rc, err) == (1, "There is no such role.\n")
        ok(server, "subject-role-remove", "uuid=" + uuid,
           "role-name=pool-operator")
        assert role not in x.subject.get_roles(subject)
        ok(server, "subject-remove", "subject-uuid=" + uuid)
        assert uuid not in ok(server, "subject-list", "--minimal")
    finally:
        x.pool.disable_external_auth(pool, {})


# --- the pool ------------------------------------------------------------------

def test_pool_commands_on_a_single_host(server, x):
    pool = x.pool.get_all()[0]
    uuid = x.pool.get_uuid(pool)
    ok(server, "pool-param-set", "uuid=" + uuid, "name-description=cli",
       "other-config:owner=ops")
    assert x.pool.get_name_description(pool) == "cli"
    assert ok(server, "pool-param-get", "uuid=" + uuid,
              "param-name=other-config", "param-key=owner") == "ops\n"
    ok(server, "pool-param-remove", "uuid=" + uuid,
       "param-name=other-config", "param-key=owner")
    assert "owner" not in x.pool.get_other_config(pool)
    # A master that cannot be reached: XAPI's two lines, and exit 0.
    assert run_xe(server, "pool-join", "master-address=127.0.0.1:1",
                  "master-username=root", "master-password=x") == (
        0, "Host cannot contact destination host: connection refused.\n"
           "Check destination host has services running and accessible "
           "from this host.\n", "")
    assert run_xe(server, "pool-join", "master-address=a")[2] == (
        "Required parameter not found: master-username\nFor usage run: "
        "'xe help'\n")
    me = x.host.get_uuid(x.host.get_all()[0])
    rc, out, _ = run_xe(server, "pool-eject", "host-uuid=" + me,
                        input="no\n")
    assert rc == 0 and out.startswith(
        "WARNING: Ejecting a host from the pool will reinitialise that "
        "host's local SRs.\nWARNING: Any data contained with the local SRs "
        "will be lost.\n")
    assert "The following VDI objects will be destroyed:" in out
    assert out.endswith("Type 'yes' to continue\nAborted (you typed: "
                        "'no')\n")
    assert run_xe(server, "pool-eject", "host-uuid=" + me, "--force") == (
        1, "", api_error("OPERATION_NOT_ALLOWED",
                         "Cannot eject the pool master"))
    assert x.host.get_all() == [x.host.get_by_uuid(me)]

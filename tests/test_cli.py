"""
The ``xe`` command line against a real server: the client run as a
subprocess (``python -m txxapi.cli``, the code of the ``xe`` console
script), and a minimal protocol client written here from the protocol's
description (so a misunderstanding shared by both sides of the package
shows).  Outputs are compared byte for byte with XAPI's conventions:
record blocks with their access markers, --minimal lists with escaped
commas, error texts and exit codes.
"""

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests.support.servers import PASSWORD, REPO, USER
from tests.support.xe import (
    BANNER, _recv, block, module_fixtures, raw_cli, run_xe, unescape_minimal,
    xe_in_pty)
from tests.test_vm_lifecycle import new_vm


server, api, x = module_fixtures("cli")


@pytest.fixture
def home(tmp_path):
    d = tmp_path / "home"
    d.mkdir()
    return d


# --- the protocol --------------------------------------------------------------

def test_banner_no_http_head_and_exit(server, x):
    vm = new_vm(x, "raw-one")
    uuid = x.VM.get_uuid(vm)
    banner, msgs = raw_cli(server, ["vm-list", "uuid=" + uuid,
                                    "username=" + USER,
                                    "password=" + PASSWORD])
    assert banner == BANNER
    assert msgs == [(0, block(("uuid ( RO)", uuid),
                              ("name-label ( RW)", "raw-one"),
                              ("power-state ( RO)", "halted"))[:-1]),
                    (4, 0)]
    x.VM.destroy(vm)


def test_session_id_first_line_and_error_texts(server, api):
    sid = api._session
    _, msgs = raw_cli(server, ["session_id=" + sid, "vm-param-get",
                               "uuid=nope", "param-name=uuid"])
    # A known error: a sentence, then its parameters by name.
    assert msgs == [(16, "No object of this class has the uuid given.\n"),
                    (16, "type: VM\n"), (16, "uuid: nope\n"), (4, 1)]
    # One the CLI has no words for: the Error command, which the client
    # prints.
    uuid = api.xenapi.host.get_uuid(api.xenapi.host.get_all()[0])
    _, msgs = raw_cli(server, ["session_id=" + sid, "host-param-get",
                               "uuid=" + uuid, "param-name=bogus"])
    assert msgs == [(14, "Missing parameter", ["bogus"]), (4, 1)]
    # The caller's session is not logged out.
    assert api.xenapi.session.get_uuid(sid)


def test_body_over_200_kib_is_refused(server):
    body = b"x" * (200 * 1024 + 1)
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(b"POST /cli HTTP/1.0\r\ncontent-length: %d\r\n\r\n"
                  % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 413")


def test_wrong_client_banner_ends_the_connection(server):
    body = b"vm-list\nusername=root\npassword=x"
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(b"POST /cli HTTP/1.0\r\ncontent-length: %d\r\n\r\n"
                  % len(body) + body)
        assert _recv(s, len(BANNER)) == BANNER
        s.sendall(b"XenSource thin CLI protocol" + struct.pack("<ii", 1, 0))
        s.settimeout(10)
        assert s.recv(100) == b""


# --- outputs -------------------------------------------------------------------

def test_minimal_lists_and_filters(server, x):
    vms = [new_vm(x, "min, a"), new_vm(x, "min\\b")]
    uuids = {x.VM.get_uuid(v) for v in vms}
    rc, out, err = run_xe(server, "vm-list", "power-state=halted",
                          "--minimal")
    assert (rc, err) == (0, "")
    assert out.endswith("\n") and "\n" not in out[:-1]
    assert uuids <= set(out[:-1].split(","))
    rc, out, _ = run_xe(server, "vm-list", "params=name-label", "--minimal",
                        "name-label=min, a")
    assert out == "min\\, a\n"
    rc, out, _ = run_xe(server, "vm-list", "params=name-label", "--minimal",
                        "power-state=halted")
    assert {"min, a", "min\\b"} <= set(unescape_minimal(out[:-1]))
    # Nothing matches: an empty line.
    assert run_xe(server, "vm-list", "name-label=none", "--minimal") == \
        (0, "\n", "")
    for v in vms:
        x.VM.destroy(v)


def test_param_get_set_add_remove(server, x):
    vm = new_vm(x, "params")
    uuid = x.VM.get_uuid(vm)
    assert run_xe(server, "vm-param-get", "uuid=" + uuid,
                  "param-name=name-label") == (0, "params\n", "")
    assert run_xe(server, "vm-param-set", "uuid=" + uuid, "name-label=p2",
                  "other-config:colour=blue", "VCPUs-max=2")[0] == 0
    assert x.VM.get_name_label(vm) == "p2"
    assert x.VM.get_other_config(vm)["colour"] == "blue"
    assert x.VM.get_VCPUs_max(vm) == "2"
    assert run_xe(server, "vm-param-get", "uuid=" + uuid,
                  "param-name=other-config", "param-key=colour") == \
        (0, "blue\n", "")
    assert run_xe(server, "vm-param-add", "uuid=" + uuid, "param-name=tags",
                  "param-key=web")[0] == 0
    assert x.VM.get_tags(vm) == ["web"]
    assert run_xe(server, "vm-param-remove", "uuid=" + uuid,
                  "param-name=tags", "param-key=web")[0] == 0
    assert x.VM.get_tags(vm) == []
    assert run_xe(server, "vm-param-clear", "uuid=" + uuid,
                  "param-name=other-config")[0] == 0
    assert x.VM.get_other_config(vm) == {}
    # Refusals, as XAPI words them (its CLI's failwith is its own
    # refusal, printed as 'Error: ...'); nothing changes.
    assert run_xe(server, "vm-param-set", "uuid=" + uuid,
                  "power-state=running") == (
        1, "", "Error: Field 'power-state' is read-only.\n")
    assert run_xe(server, "vm-param-set", "uuid=" + uuid,
                  "VCPUs-max=many")[2].endswith(
        "Error: Parameter VCPUs-max must be an integer\n")
    assert run_xe(server, "vm-param-get", "uuid=" + uuid,
                  "param-name=other-config", "param-key=nope") == (
        1, "", "Error: Key nope not found in map\n")
    assert run_xe(server, "vm-param-get", "uuid=" + uuid,
                  "param-name=bogus") == (
        1, "", "Error code: Missing parameter\nError parameters: bogus\n")
    assert x.VM.get_VCPUs_max(vm) == "2"
    x.VM.destroy(vm)


def test_param_list_markers_follow_the_datamodel(server, x):
    vm = new_vm(x, "markers", other={"a": "1"})
    rc, out, _ = run_xe(server, "vm-param-list", "uuid=" + x.VM.get_uuid(vm))
    assert rc == 0
    lines = {line.split(":", 1)[0].strip() for line in out.splitlines()
             if line}
    for key in ("uuid ( RO)", "name-label ( RW)", "power-state ( RO)",
                "other-config (MRW)", "tags (SRW)", "VBDs (SRO)",
                "resident-on ( RO)", "allowed-operations (SRO)",
                "memory-static-max ( RW)"):
        assert key in lines
    assert "    other-config (MRW): a: 1" in out
    x.VM.destroy(vm)


def test_every_class_has_generated_commands(server):
    from txxapi.cli.table import TABLE
    from txxapi.datamodel import MODEL
    for c in MODEL.classes.values():
        if c.in_db and "get_all_records" in c.messages and "uuid" in c.fields:
            prefix = {"pool_patch": "patch", "pool_update": "update",
                      "VM_appliance": "appliance"}.get(
                c.name, c.name.lower().replace("_", "-"))
            assert TABLE.get(prefix + "-list"), c.name
            assert TABLE.get(prefix + "-param-get"), c.name
    rc, out, _ = run_xe(server, "host-list", "params=uuid", "--minimal")
    assert rc == 0 and len(out.strip()) == 36
    assert run_xe(server, "pool-param-set", "uuid=" + out.strip(),
                  "name-label=x")[2] == \
        "No object of this class has the uuid given.\ntype: pool\n" \
        "uuid: %s\n" % out.strip()
    rc, pool, _ = run_xe(server, "pool-list", "--minimal")
    assert run_xe(server, "pool-param-set", "uuid=" + pool.strip(),
                  "name-label=cli pool")[0] == 0
    assert run_xe(server, "pool-param-get", "uuid=" + pool.strip(),
                  "param-name=name-label") == (0, "cli pool\n", "")


def test_errors_and_exit_codes(server):
    assert run_xe(server, "vm-foo") == (
        1, "", "Unknown command: vm-foo\nFor usage run: 'xe help'\n")
    assert run_xe(server, "vm-param-get", "param-name=uuid") == (
        1, "", "Required parameter not found: uuid\nFor usage run: "
        "'xe help'\n")
    assert run_xe(server, "vm-list", env={}, auth=False)[2] == \
        "Authentication failed\nFor usage run: 'xe help'\n"
    assert run_xe(server, "vm-list", "-u", "", "-pw", "", auth=False) == (
        1, "", "Username/password must be specified\nFor usage run: "
        "'xe help'\n")
    assert run_xe(server, "a=b") == (
        1, "", "Syntax error: \nFor usage run: 'xe help'\n")
    rc, out, err = run_xe(server, "vm-start", "name-label=no such vm")
    assert (rc, err) == (1, "Error: No matching VMs found\n")


def test_help(server):
    rc, out, _ = run_xe(server, "help", "vm-list")
    assert rc == 0 and out.startswith("command name            : vm-list\n")
    assert "reqd params     : \n" in out
    rc, out, _ = run_xe(server, "help", "--minimal", auth=False)
    assert rc == 0 and "vm-start" in out.strip().split(",")
    assert run_xe(server, "help", "nope")[1] == "Unknown command 'nope'\n"


def test_selectors_and_multiple(server, x):
    vms = [new_vm(x, "multi"), new_vm(x, "multi")]
    rc, out, err = run_xe(server, "vm-start", "vm=multi")
    assert rc == 1 and err.endswith(
        "Error: Multiple matches VMs found. --multiple required to "
        "complete the operation\n")
    assert {x.VM.get_power_state(v) for v in vms} == {"Halted"}
    assert run_xe(server, "vm-start", "vm=multi", "--multiple")[0] == 0
    assert {x.VM.get_power_state(v) for v in vms} == {"Running"}
    assert run_xe(server, "vm-shutdown", "name-label=multi", "--multiple",
                  "--force")[0] == 0
    assert {x.VM.get_power_state(v) for v in vms} == {"Halted"}
    uuid = x.VM.get_uuid(vms[0])
    # progress= (XAPI's) draws the task's bar on stderr, terminal or not.
    rc, out, err = run_xe(server, "vm-start", "vm=" + uuid, "progress=true")
    assert (rc, out) == (0, "") and err.endswith("] 100%  elapsed 0:00:00\n")
    assert x.VM.get_power_state(vms[0]) == "Running"
    assert x.VM.get_power_state(vms[1]) == "Halted"
    x.VM.hard_shutdown(vms[0])
    for v in vms:
        x.VM.destroy(v)


# --- client options ------------------------------------------------------------

def test_rc_file_extra_args_and_password_file(server, home):
    (home / ".xe").write_text("port=%d\nnossl=true\nusername=%s\n"
                              "password=%s\n" % (server.http_port, USER,
                                                 PASSWORD))
    env = dict(os.environ, PYTHONPATH=REPO, HOME=str(home))
    env.pop("XE_EXTRA_ARGS", None)
    xe = [sys.executable, "-m", "txxapi.cli"]
    p = subprocess.run(xe + ["host-list", "--minimal"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and len(p.stdout.strip()) == 36
    (home / ".xe").write_text("")
    env["XE_EXTRA_ARGS"] = "port=%d,nossl=true" % server.http_port
    pwf = home / "pw"
    pwf.write_text("%s\n%s\n" % (USER, PASSWORD))
    p = subprocess.run(xe + ["host-list", "--minimal", "-pwf", str(pwf)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and len(p.stdout.strip()) == 36
    pwf.write_text("%s\nwrong\n" % USER)
    p = subprocess.run(xe + ["host-list", "-pwf", str(pwf)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("Authentication failed")


def test_tls_pins_on_first_use(server, home):
    rc, out, err = run_xe(server, "host-list", "--minimal", tls=True,
                          home=home)
    assert rc == 0 and len(out.strip()) == 36
    assert "pinned" in err
    assert run_xe(server, "host-list", "--minimal", tls=True,
                  home=home)[2] == ""
    known = home / ".xe_known_hosts"
    host_port, _ = known.read_text().split()
    known.write_text("%s %s\n" % (host_port, "0" * 64))
    rc, out, err = run_xe(server, "host-list", tls=True, home=home)
    assert rc == 1 and "not the one pinned" in err and out == ""
    rc, out, _ = run_xe(server, "host-list", "--minimal", "--no-verify",
                        tls=True, home=home)
    assert rc == 0 and len(out.strip()) == 36


# --- a whole scenario -------------------------------------------------------------

def test_install_disk_network_start_export_import(server, x, tmp_path):
    def xe(*args):
        rc, out, err = run_xe(server, *args, cwd=tmp_path)
        assert rc == 0, err
        return out, err
    uuid = xe("vm-install", "template=Debian Bookworm 12",
              "new-name-label=scenario")[0].strip()
    vm = x.VM.get_by_uuid(uuid)
    sr = x.SR.get_uuid(x.pool.get_default_SR(x.pool.get_all()[0]))
    vdi = xe("vdi-create", "sr-uuid=" + sr, "name-label=data",
             "virtual-size=8MiB")[0].strip()
    assert x.VDI.get_virtual_size(x.VDI.get_by_uuid(vdi)) == str(8 << 20)
    xe("vbd-create", "vm-uuid=" + uuid, "vdi-uuid=" + vdi, "device=1")
    net = xe("network-list", "--minimal")[0].strip().split(",")[0]
    vif = xe("vif-create", "vm-uuid=" + uuid, "network-uuid=" + net,
             "device=0", "mac=random")[0].strip()
    assert x.VIF.get_VM(x.VIF.get_by_uuid(vif)) == vm
    out, _ = xe("vbd-list", "vm-uuid=" + uuid, "params=vdi-uuid",
                "--minimal")
    assert vdi in out.strip().split(",") and len(out.strip().split(",")) == 2
    # A long command in a pipe: nothing but XAPI's output (none).
    assert xe("vm-start", "vm=scenario") == ("", "")
    assert x.VM.get_power_state(vm) == "Running"
    xe("event-wait", "class=vm", "uuid=" + uuid, "power-state=running")
    # On a terminal: its task's progress.
    rc, drawn = xe_in_pty(server, ["vm-shutdown", "vm=scenario", "--force"],
                          tmp_path)
    assert rc == 0 and "] 100%  elapsed 0:00:" in drawn, drawn
    assert x.VM.get_power_state(vm) == "Halted"
    # In a pipe: XAPI's output and nothing else.
    assert xe("vm-export", "vm=scenario", "filename=piped.xva") == \
        ("Export succeeded\n", "")
    # On a terminal: a progress line too.
    rc, drawn = xe_in_pty(server, ["vm-export", "vm=scenario",
                                   "filename=tty.xva"], tmp_path)
    assert rc == 0 and "Downloading" in drawn and "/s" in drawn
    assert "Export succeeded" in drawn
    assert (tmp_path / "tty.xva").stat().st_size == \
        (tmp_path / "piped.xva").stat().st_size
    # An existing file is not overwritten.
    rc, out, err = run_xe(server, "vm-export", "vm=scenario",
                          "filename=piped.xva", cwd=tmp_path)
    assert rc == 1 and "Operation failed. Error:" in err
    out, err = xe("vm-import", "filename=piped.xva")
    new = out.strip()
    assert err == "" and len(new) == 36 and new != uuid
    new_vm = x.VM.get_by_uuid(new)
    assert x.VM.get_name_label(new_vm) == "scenario"
    assert len(x.VM.get_VBDs(new_vm)) == 2 and len(x.VM.get_VIFs(new_vm)) == 1
    rc, drawn = xe_in_pty(server, ["vm-import", "filename=tty.xva"],
                          tmp_path)
    assert rc == 0 and "Uploading" in drawn and "100%" in drawn
    # Metadata alone: the VM again, on the disks it left behind.
    disks = sorted(x.VBD.get_VDI(v) for v in x.VM.get_VBDs(new_vm))
    assert xe("vm-export", "uuid=" + new, "filename=meta.xva",
              "metadata=true") == ("Export succeeded\n", "")
    xe("vm-destroy", "uuid=" + new)
    out, err = xe("vm-import", "filename=meta.xva", "metadata=true")
    new = out.strip()
    assert err == "" and len(new) == 36
    new_vm = x.VM.get_by_uuid(new)
    assert sorted(x.VBD.get_VDI(v) for v in x.VM.get_VBDs(new_vm)) == disks
    # Uninstall asks first; 'no' keeps everything.
    rc, out, err = run_xe(server, "vm-uninstall", "uuid=" + new,
                          input="no\n", cwd=tmp_path)
    assert rc == 0 and "The following items are about to be destroyed" in out
    assert "Aborted (you typed: 'no')" in out
    assert x.VM.get_uuid(new_vm) == new
    for u in (new, uuid):
        out, _ = xe("vm-uninstall", "uuid=" + u, "--force")
        assert out.endswith("All objects destroyed\n")
    assert uuid not in xe("vm-list", "--minimal")[0]


def test_ctrl_c_cancels_the_commands_task(server, x, tmp_path):
    vm = new_vm(x, "slow-to-stop",
                other={"simulator-shutdown-delay": "60"})
    x.VM.start(vm, False, False)
    rc, drawn = xe_in_pty(server, ["vm-shutdown", "uuid=" + x.VM.get_uuid(vm)],
                          tmp_path, interrupt_on="elapsed")
    assert rc == 1 and "Interrupted: the server cancels the task" in drawn
    # The server saw the client go and cancelled the shutdown's task: the
    # VM is no longer shutting down (else it would be for a minute).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and x.VM.get_current_operations(vm):
        time.sleep(0.2)
    assert x.VM.get_current_operations(vm) == {}
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)

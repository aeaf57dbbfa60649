"""
The bash completion that ``xe --bash-completion`` prints, run in a real
bash against a real server: the completion function is called as bash
calls it (COMP_LINE, COMP_POINT) and what it puts in COMPREPLY is
checked; what it offers comes from the server through the real client.
"""

import os
import shlex
import subprocess
import sys

from tests.support.servers import PASSWORD, REPO, USER
from tests.support.xe import local_socket, module_fixtures
from tests.test_vm_lifecycle import new_vm

server, api, x = module_fixtures("clicompletion")

WORDBREAKS = " \t\n\"'><=;|&(:"


def complete(server, line, tmp_path, local=True):
    """COMPREPLY for the command line ``line``, the cursor at its end."""
    bindir = tmp_path / "bin"
    if not bindir.exists():
        bindir.mkdir()
        xe = bindir / "xe"
        xe.write_text("#!/bin/sh\nexec %s -m txxapi.cli \"$@\"\n"
                      % shlex.quote(sys.executable))
        xe.chmod(0o755)
    script = ("source <(xe --bash-completion)\n"
              "COMP_WORDBREAKS=%s\n"
              "COMP_LINE=%s\n"
              "COMP_POINT=${#COMP_LINE}\n"
              "_xe\n"
              "printf '%%s\\n' \"${COMPREPLY[@]}\"\n"
              % (shlex.quote(WORDBREAKS), shlex.quote(line)))
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]),
               PYTHONPATH=REPO, HOME=str(tmp_path))
    env.pop("XE_EXTRA_ARGS", None)
    if local:
        env["XE_EXTRA_ARGS"] = "socket=" + local_socket(server)
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return [w for w in p.stdout.split("\n") if w]


def test_command_names(server, tmp_path):
    assert complete(server, "xe vm-sta", tmp_path) == ["vm-start"]
    assert complete(server, "xe help vm-exp", tmp_path) == ["vm-export"]
    # Several groups match: the groups first.
    groups = complete(server, "xe v", tmp_path)
    assert {"vm-", "vdi-", "vbd-", "vif-"} <= set(groups)
    assert all(g.endswith("-") for g in groups)
    assert complete(server, "xe pool-j", tmp_path) == ["pool-join"]


def test_parameter_names(server, tmp_path):
    offered = complete(server, "xe vdi-import ", tmp_path)
    assert {"uuid=", "filename=", "format=", "progress="} <= set(offered)
    offered = complete(server, "xe sr-create device", tmp_path)
    assert offered == ["device-config:"]
    # A selector: the class's name and its fields.
    offered = set(complete(server, "xe vm-export ", tmp_path))
    assert {"vm=", "filename=", "name-label=", "power-state="} <= offered


def test_uuids_and_names(server, x, tmp_path):
    vm = new_vm(x, "web one")
    uuid = x.VM.get_uuid(vm)
    try:
        assert complete(server, "xe vm-param-list uuid=" + uuid[:6],
                        tmp_path) == [uuid]
        assert complete(server, "xe vm-start vm=web", tmp_path) == \
            ["web\\ one"]
        host = x.host.get_uuid(x.host.get_all()[0])
        assert complete(server, "xe pif-scan host-uuid=", tmp_path) == [host]
        assert complete(server, "xe vm-list params=name-label,power-s",
                        tmp_path) == ["name-label,power-state"]
        assert "other-config" in complete(
            server, "xe vm-param-get uuid=%s param-name=oth" % uuid,
            tmp_path)
    finally:
        x.VM.destroy(vm)


def test_connection_options_of_the_line_are_used(server, tmp_path):
    line = "xe -p %d --nossl -u %s -pw %s socket= vm-sta" % (
        server.http_port, USER, PASSWORD)
    assert complete(server, line, tmp_path, local=False) == ["vm-start"]
    # Without them there is no server to ask: nothing is offered.
    assert complete(server, "xe -p 1 --nossl socket= vm-sta", tmp_path,
                    local=False) == []

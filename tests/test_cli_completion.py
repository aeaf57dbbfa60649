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
# The line that ends each reply in completions()' output.
END = "--end-of-reply--"


def completions(server, lines, tmp_path, local=True):
    """COMPREPLY for each command line of ``lines``, the cursor at its
    end: one bash, which sources the script once and completes them in
    turn (each _xe call starts from nothing)."""
    bindir = tmp_path / "bin"
    if not bindir.exists():
        bindir.mkdir()
        xe = bindir / "xe"
        xe.write_text("#!/bin/sh\nexec %s -m txxapi.cli \"$@\"\n"
                      % shlex.quote(sys.executable))
        xe.chmod(0o755)
    script = ("source <(xe --bash-completion)\n"
              "COMP_WORDBREAKS=%s\n" % shlex.quote(WORDBREAKS))
    for line in lines:
        script += ("COMP_LINE=%s\n"
                   "COMP_POINT=${#COMP_LINE}\n"
                   "_xe\n"
                   "printf '%%s\\n' \"${COMPREPLY[@]}\" %s\n"
                   % (shlex.quote(line), END))
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]),
               PYTHONPATH=REPO, HOME=str(tmp_path))
    env.pop("XE_EXTRA_ARGS", None)
    if local:
        env["XE_EXTRA_ARGS"] = "socket=" + local_socket(server)
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    replies = p.stdout.split(END + "\n")
    assert len(replies) == len(lines) + 1 and replies[-1] == "", p.stdout
    return [[w for w in reply.split("\n") if w] for reply in replies[:-1]]


def test_command_names(server, tmp_path):
    start, export, groups, join = completions(server, [
        "xe vm-sta", "xe help vm-exp", "xe v", "xe pool-j"], tmp_path)
    assert start == ["vm-start"]
    assert export == ["vm-export"]
    # Several groups match: the groups first.
    assert {"vm-", "vdi-", "vbd-", "vif-"} <= set(groups)
    assert all(g.endswith("-") for g in groups)
    assert join == ["pool-join"]


def test_parameter_names(server, tmp_path):
    offered, device, selector = completions(server, [
        "xe vdi-import ", "xe sr-create device", "xe vm-export "], tmp_path)
    assert {"uuid=", "filename=", "format=", "progress="} <= set(offered)
    assert device == ["device-config:"]
    # A selector: the class's name and its fields.
    assert {"vm=", "filename=", "name-label=", "power-state="} <= \
        set(selector)


def test_uuids_and_names(server, x, tmp_path):
    vm = new_vm(x, "web one")
    uuid = x.VM.get_uuid(vm)
    try:
        host = x.host.get_uuid(x.host.get_all()[0])
        by_uuid, by_name, host_uuid, params, param_name = completions(
            server, ["xe vm-param-list uuid=" + uuid[:6],
                     "xe vm-start vm=web",
                     "xe pif-scan host-uuid=",
                     "xe vm-list params=name-label,power-s",
                     "xe vm-param-get uuid=%s param-name=oth" % uuid],
            tmp_path)
        assert by_uuid == [uuid]
        assert by_name == ["web\\ one"]
        assert host_uuid == [host]
        assert params == ["name-label,power-state"]
        assert "other-config" in param_name
    finally:
        x.VM.destroy(vm)


def test_connection_options_of_the_line_are_used(server, tmp_path):
    line = "xe -p %d --nossl -u %s -pw %s socket= vm-sta" % (
        server.http_port, USER, PASSWORD)
    # Without them there is no server to ask: nothing is offered.
    assert completions(server, [line, "xe -p 1 --nossl socket= vm-sta"],
                       tmp_path, local=False) == [["vm-start"], []]

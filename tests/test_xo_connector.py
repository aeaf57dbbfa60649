"""
Xen Orchestra's XAPI connector (npm "xen-api", pinned in tests/xo) against
a real server: it logs in, fills its object cache, keeps it current with
event.from and learns the outcome of Async calls from task events; then
its putResource/getResource round trip of a VDI's content, on the paths
xo-server uses ('/import_raw_vdi/', '/export_raw_vdi/').
"""

import json
import os
import shutil
import subprocess

import pytest

from tests.support.servers import PASSWORD, USER

XO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xo")


@pytest.fixture(scope="module")
def xo_connector():
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run Xen Orchestra's "
                    "connector")
    if not os.path.isdir(os.path.join(XO_DIR, "node_modules", "xen-api")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=XO_DIR,
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
    return node


def test_xo_connector_follows_changes_and_tasks(server, xo_connector):
    proc = subprocess.run(
        [xo_connector, "connect.mjs", server.https_url, USER, PASSWORD],
        cwd=XO_DIR, capture_output=True, text=True, timeout=240)
    lines = proc.stdout.strip().splitlines()
    assert lines, "no output; stderr: %s" % proc.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["ok"], "%s\nstderr: %s" % (out.get("error"),
                                          proc.stderr[-3000:])
    assert proc.returncode == 0

    assert out["pool"]["ref"].startswith("OpaqueRef:")
    assert len(out["hosts"]) == 1
    assert out["pool"]["master"] == out["hosts"][0]["ref"]
    assert any(vm["is_control_domain"] for vm in out["vms"])
    assert out["renamed"]["name_label"] == "xo-check-renamed"
    assert out["async_create"]["ref"].startswith("OpaqueRef:")
    assert out["async_create"]["ref"] != out["renamed"]["ref"]
    assert out["async_failure"]["code"] == "HANDLE_INVALID"
    assert out["watch_events_error"] is None
    names = [s["name"] for s in out["steps"]]
    assert names == ["connected", "cache filled", "add seen", "mod seen",
                     "async create done", "del seen", "async failure seen",
                     "content imported", "content exported"]
    content = out["content"]
    assert content["exported_size"] == content["size"]
    assert content["same"]
    assert content["import_task"] == content["export_task"] == "success"

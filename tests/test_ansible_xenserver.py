"""
Ansible's XenServer modules (community.general.xenserver_guest,
xenserver_guest_powerstate, xenserver_guest_info, from PyPI "ansible")
against a real server: tests/ansible/guest.yml takes one VM through its
life, a tagged step per ansible-playbook run, and after each step the test
reads both Ansible's JSON report and the server's objects (through the
XenAPI SDK).  tests/ansible/trace/ records every XenAPI call the modules
make, so each step also states which calls it needed and that none failed.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import XenAPI

from tests.support.servers import PASSWORD, USER

HERE = os.path.dirname(os.path.abspath(__file__))
PLAYBOOK = os.path.join(HERE, "ansible", "guest.yml")
TRACE_DIR = os.path.join(HERE, "ansible", "trace")
VM_NAME = "ansible-guest"
TEMPLATE = "Debian Bookworm 12"
DISK_MIB = 64
MEMORY_MIB = 512
MIB = 1024 ** 2


def _ansible_playbook():
    found = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(found):
        found = shutil.which("ansible-playbook")
    if found is None or importlib.util.find_spec(
            "ansible_collections.community.general") is None:
        pytest.skip("Ansible with community.general is needed (the test "
                    "extra: pip install 'ansible')")
    return found


class Playbook:
    """Runs one tagged step of guest.yml and returns (result, calls): the
    task's result as the json callback reports it, and the XenAPI calls
    its module made, each {"method": ..., "error": [...] if it failed}."""

    def __init__(self, server, network, workdir):
        self.command = _ansible_playbook()
        self.workdir = workdir
        self.trace = os.path.join(workdir, "calls.jsonl")
        self.variables = {
            "xapi_url": server.https_url, "xapi_user": USER,
            "xapi_password": PASSWORD, "vm_name": VM_NAME,
            "template": TEMPLATE, "network": network, "disk_mib": DISK_MIB,
            "memory_mib": MEMORY_MIB, "num_cpus": 2,
            "state_change_timeout": 60,
            # The modules import XenAPI: run them with this Python.
            "ansible_python_interpreter": sys.executable,
        }
        self.env = dict(
            os.environ,
            ANSIBLE_STDOUT_CALLBACK="json",
            ANSIBLE_HOME=workdir,
            ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "tmp"),
            ANSIBLE_REMOTE_TMP=os.path.join(workdir, "tmp"),
            ANSIBLE_COLLECTIONS_PATH=workdir,
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
            ANSIBLE_RETRY_FILES_ENABLED="false",
            ANSIBLE_NOCOLOR="1",
            PYTHONPATH=os.pathsep.join(
                p for p in (TRACE_DIR, os.environ.get("PYTHONPATH")) if p),
            XAPI_CALL_TRACE=self.trace)

    def run(self, step, **overrides):
        if os.path.exists(self.trace):
            os.unlink(self.trace)
        proc = subprocess.run(
            [self.command, "-i", "localhost,", PLAYBOOK, "--tags", step,
             "-e", json.dumps(dict(self.variables, **overrides))],
            cwd=self.workdir, env=self.env, capture_output=True, text=True,
            timeout=120)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("no JSON report (rc %d): %s %s" % (
                proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
        tasks = report["plays"][0]["tasks"]
        assert [t["task"]["name"] for t in tasks] == [step]
        result = tasks[0]["hosts"]["localhost"]
        calls = []
        if os.path.exists(self.trace):
            with open(self.trace) as f:
                calls = [json.loads(line) for line in f]
        assert not result.get("failed"), "%s\ncalls: %s" % (
            result.get("msg"), calls)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return result, calls


def methods(calls):
    return [c["method"] for c in calls]


def assert_no_failed_call(calls):
    assert [c for c in calls if "error" in c] == []


def writes(calls):
    """The calls that may change something (all but get_*, login, logout)."""
    return [m for m in methods(calls)
            if not m.split(".")[-1].startswith("get")
            and m not in ("session.login_with_password", "session.logout")]


def assert_invalid(call, *args, code="HANDLE_INVALID"):
    with pytest.raises(XenAPI.Failure) as e:
        call(*args)
    assert e.value.details[0] == code


@pytest.fixture(scope="module")
def playbook(server, tmp_path_factory):
    session = server.session()
    try:
        x = session.xenapi
        pif = x.PIF.get_all_records()
        management = [p["network"] for p in pif.values() if p["management"]]
        network = x.network.get_name_label(management[0])
    finally:
        session.xenapi.session.logout()
    return Playbook(server, network, str(tmp_path_factory.mktemp("ansible")))


@pytest.fixture(scope="module")
def guest():
    """What the deploy step learnt about the VM, for the steps after it."""
    return {}


@pytest.fixture
def deployed(guest):
    if not guest:
        pytest.skip("the deploy step made no VM")
    return guest


def the_vm(x):
    refs = x.VM.get_by_name_label(VM_NAME)
    assert len(refs) == 1, refs
    return refs[0]


def disk_and_nic(x, vm_ref):
    vm = x.VM.get_record(vm_ref)
    assert len(vm["VBDs"]) == 1 and len(vm["VIFs"]) == 1, vm
    return x.VBD.get_record(vm["VBDs"][0]), x.VIF.get_record(vm["VIFs"][0])


def test_deploy_from_template_with_disk_and_nic(playbook, guest, x):
    result, calls = playbook.run("deploy")
    assert_no_failed_call(calls)
    for needed in ("VM.copy", "VM.provision", "VDI.create", "VBD.create",
                   "VIF.create", "VM.set_memory_limits"):
        assert needed in methods(calls)
    assert result["changed"] is True
    facts = result["instance"]
    assert facts["state"] == "poweredoff"
    assert facts["is_template"] is False
    assert facts["hardware"] == {"num_cpus": 2, "num_cpu_cores_per_socket": 1,
                                 "memory_mb": MEMORY_MIB}

    vm_ref = the_vm(x)
    vm = x.VM.get_record(vm_ref)
    assert vm["uuid"] == facts["uuid"]
    assert vm["power_state"] == "Halted"
    assert vm["is_a_template"] is False          # VM.provision's doing
    assert vm["name_description"] == ""
    # The template's own 10 GiB disk spec was dropped; only ours exists.
    assert "disks" not in vm["other_config"]
    assert (vm["VCPUs_max"], vm["VCPUs_at_startup"]) == ("2", "2")
    for field in ("memory_static_max", "memory_dynamic_max",
                  "memory_dynamic_min"):
        assert int(vm[field]) == MEMORY_MIB * MIB, field

    vbd, vif = disk_and_nic(x, vm_ref)
    assert (vbd["type"], vbd["mode"], vbd["userdevice"]) == ("Disk", "RW", "0")
    assert vbd["currently_attached"] is False
    vdi = x.VDI.get_record(vbd["VDI"])
    assert int(vdi["virtual_size"]) == DISK_MIB * MIB
    assert vdi["name_label"] == VM_NAME + "-disk"
    assert vdi["SR"] == x.pool.get_default_SR(x.pool.get_all()[0])
    sr = x.SR.get_record(vdi["SR"])
    assert facts["disks"] == [{
        "name": VM_NAME + "-disk", "name_desc": "", "size": DISK_MIB * MIB,
        "sr": sr["name_label"], "sr_uuid": sr["uuid"],
        "os_device": vbd["device"], "vbd_userdevice": "0"}]

    network = playbook.variables["network"]
    assert x.network.get_name_label(vif["network"]) == network
    assert vif["device"] == "0" and vif["MAC_autogenerated"] is True
    [nic] = facts["networks"]
    assert (nic["name"], nic["mac"], nic["vif_device"]) == (
        network, vif["MAC"], "0")
    assert nic["mtu"] == x.network.get_MTU(vif["network"])
    # Without guest tools the module hands the guest its NIC by xenstore.
    assert vm["xenstore_data"]["vm-data/networks/0/mac"] == vif["MAC"]
    guest.update(vm=vm_ref, vdi_uuid=vdi["uuid"], vbd=vm["VBDs"][0],
                 vif=vm["VIFs"][0], mac=vif["MAC"])


def test_deploy_again_changes_nothing(playbook, deployed, x):
    result, calls = playbook.run("deploy")
    assert_no_failed_call(calls)
    assert result["changed"] is False
    # What the server reported matches what was asked: nothing to write.
    assert writes(calls) == []
    assert result["instance"]["networks"][0]["mac"] == deployed["mac"]


def test_power_on_waits_for_the_ip_address(playbook, deployed, x):
    result, calls = playbook.run("power_on")
    assert_no_failed_call(calls)
    assert "VM.start" in methods(calls)
    assert result["changed"] is True
    facts = result["instance"]
    assert facts["state"] == "poweredon"

    vm = x.VM.get_record(deployed["vm"])
    assert vm["power_state"] == "Running"
    assert vm["resident_on"] == x.host.get_all()[0]
    # (The module's facts keep the record it read before the start, so
    # its domid is the halted VM's; the info step reads the new one.)
    assert int(vm["domid"]) > 0
    assert x.VBD.get_currently_attached(deployed["vbd"]) is True
    assert x.VIF.get_currently_attached(deployed["vif"]) is True
    networks = x.VM_guest_metrics.get_networks(vm["guest_metrics"])
    assert facts["networks"][0]["ip"] == networks["0/ip"]


def test_info_reads_the_running_guest(playbook, deployed, x, server):
    # A hostname without a scheme, as most inventories give it: the
    # modules then speak plain HTTP.
    result, calls = playbook.run(
        "info", xapi_url="127.0.0.1:%d" % server.http_port)
    assert_no_failed_call(calls)
    assert writes(calls) == []
    assert result["changed"] is False
    facts = result["instance"]
    vm = x.VM.get_record(deployed["vm"])
    assert facts["uuid"] == vm["uuid"]
    assert facts["state"] == "poweredon"
    assert facts["domid"] == vm["domid"]
    assert facts["disks"][0]["size"] == DISK_MIB * MIB
    assert facts["networks"][0]["mac"] == deployed["mac"]
    assert facts["networks"][0]["name"] == playbook.variables["network"]
    assert facts["xenstore_data"] == vm["xenstore_data"]


def test_guest_shutdown_within_state_change_timeout(playbook, deployed, x):
    result, calls = playbook.run("shut_down")
    assert_no_failed_call(calls)
    # With a timeout the module shuts down asynchronously and follows the
    # task to its end, then destroys it; never a hard shutdown.
    assert "Async.VM.clean_shutdown" in methods(calls)
    assert methods(calls).count("task.destroy") == 1
    assert "VM.hard_shutdown" not in methods(calls)
    assert result["changed"] is True
    assert result["instance"]["state"] == "poweredoff"

    vm = x.VM.get_record(deployed["vm"])
    assert vm["power_state"] == "Halted" and vm["domid"] == "-1"
    assert x.VBD.get_currently_attached(deployed["vbd"]) is False
    [task] = [c["task"] for c in calls
              if c["method"] == "Async.VM.clean_shutdown"]
    assert_invalid(x.task.get_record, task)


def test_redeploy_halted_with_a_bigger_disk_reconfigures(playbook, deployed,
                                                        x):
    result, calls = playbook.run("deploy", disk_mib=2 * DISK_MIB,
                                 memory_mib=MEMORY_MIB // 2, num_cpus=1)
    assert_no_failed_call(calls)
    for needed in ("VDI.resize", "VM.set_VCPUs_max", "VM.set_memory_limits"):
        assert needed in methods(calls)
    for not_needed in ("VM.copy", "VDI.create", "VIF.create"):
        assert not_needed not in methods(calls)
    assert result["changed"] is True
    facts = result["instance"]
    assert facts["hardware"]["num_cpus"] == 1
    assert facts["hardware"]["memory_mb"] == MEMORY_MIB // 2
    assert facts["disks"][0]["size"] == 2 * DISK_MIB * MIB

    vm = x.VM.get_record(deployed["vm"])
    assert (vm["VCPUs_max"], vm["VCPUs_at_startup"]) == ("1", "1")
    for field in ("memory_static_min", "memory_static_max",
                  "memory_dynamic_max", "memory_dynamic_min"):
        assert int(vm[field]) == MEMORY_MIB // 2 * MIB, field
    vdi = x.VDI.get_by_uuid(deployed["vdi_uuid"])
    assert int(x.VDI.get_virtual_size(vdi)) == 2 * DISK_MIB * MIB
    assert vm["VBDs"] == [deployed["vbd"]] and vm["VIFs"] == [deployed["vif"]]


def test_remove_destroys_the_vm_and_its_disk(playbook, deployed, x):
    result, calls = playbook.run("remove")
    assert_no_failed_call(calls)
    assert "VM.destroy" in methods(calls)
    assert "VDI.destroy" in methods(calls)
    assert result["changed"] is True
    assert x.VM.get_by_name_label(VM_NAME) == []
    for cls, ref in (("VM", deployed["vm"]), ("VBD", deployed["vbd"]),
                     ("VIF", deployed["vif"])):
        assert_invalid(getattr(x, cls).get_record, ref)
    assert_invalid(x.VDI.get_by_uuid, deployed["vdi_uuid"],
                   code="UUID_INVALID")

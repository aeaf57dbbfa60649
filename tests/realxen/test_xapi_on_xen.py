"""
XenAPI on real Xen: ``twistd xapi --backend libxl`` in dom0, driven over
the loopback with the XenAPI SDK.  A diskless PV guest (the test kernel and
initramfs) goes through start, pause, unpause, suspend into a suspend VDI
and resume, clean and hard shutdown, and after each step VM.power_state,
VM.domid and VM.resident_on must agree with what ``xl list`` shows.

Runs inside the real-Xen VM (tests/test_realxen.py boots it); skipped on
any machine that is not a Xen control domain with the binding built.
"""

import os
import re
import socket
import subprocess

import pytest

from tests.support.servers import RunningServer
from txxenops import BackendUnavailable
from txxenops.backends.libxl import open_backend

MIB = 1024 ** 2
NULL = "OpaqueRef:NULL"
XL = "/usr/lib/xen-4.17/bin/xl"


def _unavailable():
    if not os.environ.get("XENOPS_TEST_KERNEL"):
        return "set XENOPS_TEST_KERNEL (and XENOPS_TEST_RAMDISK) to a PV " \
               "guest kernel"
    try:
        open_backend().close()
    except BackendUnavailable as e:
        return "libxl: %s" % e
    return None


REASON = _unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("realxen-xapi")
    # The later --backend wins over RunningServer's simulator default.
    s = RunningServer(os.path.join(str(base), "data"),
                      extra_args=["--backend", "libxl",
                                  "--shutdown-timeout", "60"])
    s.start(timeout=120)
    yield s
    s.stop()
    print(s.read_log()[-3000:])


def xl_list():
    """{domid: (name, state flags)} of the guests, as ``xl list`` says."""
    out = subprocess.run([XL, "list"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        m = re.match(r"(.+?)\s+(\d+)\s+\d+\s+\d+\s+([-rbpscd]{6})\s", line)
        if m and m.group(2) != "0":
            rows[int(m.group(2))] = (m.group(1), m.group(3))
    return rows


def assert_agrees(x, vm, host):
    """The VM's power state, domid and resident_on against xl list."""
    rec = x.VM.get_record(vm)
    rows = xl_list()
    state = rec["power_state"]
    if state in ("Halted", "Suspended"):
        assert rec["domid"] == "-1" and rec["resident_on"] == NULL
        assert not [d for d, (name, _) in rows.items()
                    if name == rec["name_label"]], rows
        return rec
    domid = int(rec["domid"])
    assert domid in rows, "domid %d not in xl list %r" % (domid, rows)
    name, flags = rows[domid]
    assert name == rec["name_label"]
    assert rec["resident_on"] == host
    if state == "Paused":
        assert flags[2] == "p", flags
    else:
        assert state == "Running"
        assert flags[2] == "-" and flags[3:5] == "--", flags
    return rec


def new_pv_vm(x, name):
    memory = str(128 * MIB)
    return x.VM.create({
        "name_label": name, "name_description": "real Xen test guest",
        "user_version": "1", "is_a_template": False, "affinity": NULL,
        "memory_static_max": memory, "memory_dynamic_max": memory,
        "memory_dynamic_min": memory, "memory_static_min": memory,
        "VCPUs_params": {}, "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart", "actions_after_crash": "destroy",
        "PV_bootloader": "", "PV_kernel": os.environ["XENOPS_TEST_KERNEL"],
        "PV_ramdisk": os.environ.get("XENOPS_TEST_RAMDISK", ""),
        "PV_args": "console=hvc0 quiet", "PV_bootloader_args": "",
        "PV_legacy_args": "", "HVM_boot_policy": "", "HVM_boot_params": {},
        "platform": {}, "PCI_bus": "", "other_config": {},
        "recommendations": "", "domain_type": "pv"})


def test_host_is_the_xen_host(x):
    host = x.host.get_all()[0]
    rec = x.host.get_record(host)
    assert rec["software_version"]["backend"] == "libxl"
    assert rec["software_version"]["xen"].startswith("4.17")
    info = subprocess.run([XL, "info"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    total = int(re.search(r"total_memory\s*:\s*(\d+)", info).group(1))
    metrics = x.host_metrics.get_record(rec["metrics"])
    assert int(metrics["memory_total"]) // MIB == total
    assert int(rec["cpu_info"]["cpu_count"]) == int(
        re.search(r"nr_cpus\s*:\s*(\d+)", info).group(1))


def console_echoes(server, x, session, vm, line):
    """The guest's text console through CONNECT /console: what is typed
    reaches the guest (xenconsoled's pty), and its answer comes back."""
    [console] = [c for c in x.VM.get_consoles(vm)
                 if x.console.get_protocol(c) == "vt100"]
    uuid = x.console.get_uuid(console)
    with socket.create_connection(("127.0.0.1", server.http_port),
                                  timeout=60) as sock:
        sock.sendall(("CONNECT /console?uuid=%s&session_id=%s HTTP/1.0"
                      "\r\n\r\n" % (uuid, session)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096) or b"!"
            assert not data.endswith(b"!"), data
        assert data.startswith(b"HTTP/1.1 200 OK"), data
        sock.sendall(line.encode() + b"\n")
        answer = ("REALXEN-ECHO: %s" % line).encode()
        data = b""
        while answer not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk


def test_pv_guest_lifecycle(server, xapi, x):
    host = x.host.get_all()[0]
    vm = new_pv_vm(x, "realxen-tiny")
    assert_agrees(x, vm, host)

    x.VM.start(vm, False, False)
    first = assert_agrees(x, vm, host)
    assert first["power_state"] == "Running" and int(first["domid"]) > 0
    console_echoes(server, x, xapi._session, vm, "hello-console")
    # Again, from a new connection.
    console_echoes(server, x, xapi._session, vm, "second-client")

    x.VM.pause(vm)
    assert assert_agrees(x, vm, host)["power_state"] == "Paused"
    x.VM.unpause(vm)
    assert assert_agrees(x, vm, host)["power_state"] == "Running"

    # Suspend: the memory image goes into a suspend VDI on the suspend SR
    # and the guest resumes from it in a new domain, its VDI gone.
    x.VM.suspend(vm)
    rec = assert_agrees(x, vm, host)
    assert rec["power_state"] == "Suspended"
    image = x.VDI.get_record(rec["suspend_VDI"])
    assert image["type"] == "suspend"
    assert image["SR"] == x.host.get_suspend_image_sr(host)
    x.SR.scan(image["SR"])
    assert int(x.VDI.get_physical_utilisation(rec["suspend_VDI"])) > MIB
    x.VM.resume(vm, False, False)
    resumed = assert_agrees(x, vm, host)
    assert resumed["power_state"] == "Running"
    assert int(resumed["domid"]) > int(first["domid"])
    assert resumed["suspend_VDI"] == NULL
    assert rec["suspend_VDI"] not in x.VDI.get_all()

    # The resumed guest's kernel powers off on the PV control node's
    # request.
    x.VM.clean_shutdown(vm)
    assert assert_agrees(x, vm, host)["power_state"] == "Halted"

    x.VM.start(vm, False, False)
    again = assert_agrees(x, vm, host)
    assert int(again["domid"]) > int(resumed["domid"])
    # A suspended VM's hard shutdown discards its image.
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    x.VM.hard_shutdown(vm)
    assert assert_agrees(x, vm, host)["power_state"] == "Halted"
    assert image not in x.VDI.get_all()
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    assert assert_agrees(x, vm, host)["power_state"] == "Halted"
    x.VM.destroy(vm)

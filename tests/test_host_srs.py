"""
The SRs a fresh host shows besides "Local storage", through the XenAPI
SDK against a real server: the tools SR with its guest-tools ISO (a real
ISO 9660 image, read back with isoinfo) going into a VM's CD drive, and
the udev SRs of removable media, empty here, scanning fine and refusing
new VDIs.  The tools SR comes back on a restart when it is gone (XAPI
makes it at every start); the udev SRs only come with a first start.
"""

import os
import shutil
import subprocess

import pytest

from tests.support.api import failure, wait_until
from tests.support.servers import RunningServer, serving

MIB = 1 << 20
NULL = "OpaqueRef:NULL"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serving(tmp_path_factory, "host-srs",
                       ["--simulator-op-time", "0"])


def srs_named(x):
    return {rec["name_label"]: (ref, rec)
            for ref, rec in x.SR.get_all_records().items()}


def pbd_of(x, sr):
    pbd, = x.SR.get_PBDs(sr)
    return x.PBD.get_record(pbd)


def test_tools_sr_and_its_iso(x, server):
    sr, rec = srs_named(x)["XCP-ng Tools"]
    assert rec["is_tools_sr"] and rec["shared"]
    assert rec["type"] == "iso" and rec["content_type"] == "iso"
    assert rec["name_description"] == "XCP-ng Tools ISOs"
    assert rec["sm_config"] == {}
    assert rec["other_config"] == {
        "xensource_internal": "true", "xenserver_tools_sr": "true",
        "i18n-key": "xenserver-tools",
        "i18n-original-value-name_label": "XCP-ng Tools",
        "i18n-original-value-name_description": "XCP-ng Tools ISOs"}
    assert "vdi_create" not in rec["allowed_operations"]
    pbd = pbd_of(x, sr)
    directory = os.path.join(server.data_dir, "tools-iso")
    assert pbd["device_config"] == {"path": directory, "location": directory,
                                    "legacy_mode": "true"}
    assert pbd["currently_attached"]

    vdi, = rec["VDIs"]
    v = x.VDI.get_record(vdi)
    assert v["name_label"] == "guest-tools.iso"
    assert v["location"] == "guest-tools.iso"
    assert v["is_tools_iso"] and v["read_only"]
    assert v["sm_config"]["xs-tools"] == "true"
    path = os.path.join(directory, "guest-tools.iso")
    assert int(v["virtual_size"]) == os.path.getsize(path) > 0
    # No one else is the tools ISO or the tools SR.
    assert [r for r in x.VDI.get_all_records().values()
            if r["is_tools_iso"]] == [v]
    assert [r for r in x.SR.get_all_records().values()
            if r["is_tools_sr"]] == [rec]
    assert failure(x.VDI.destroy, vdi) == ["SR_OPERATION_NOT_SUPPORTED", sr]


def test_tools_iso_is_a_real_iso_image(server):
    isoinfo = shutil.which("isoinfo")
    assert isoinfo, "isoinfo (Debian's genisoimage) is needed"
    path = os.path.join(server.data_dir, "tools-iso", "guest-tools.iso")

    def read(*args):
        return subprocess.run([isoinfo, "-i", path] + list(args),
                              capture_output=True, text=True, check=True,
                              timeout=30).stdout

    facts = read("-d")
    assert "CD-ROM is in ISO 9660 format" in facts
    assert "Volume id: XCP-ng Tools" in facts
    assert "Rock Ridge signatures" in facts and "Joliet" in facts
    listing = read("-R", "-l")
    assert "README.txt" in listing and "install.sh" in listing
    script = read("-R", "-x", "/Linux/install.sh")
    assert script.startswith("#!/bin/sh\n") and "xe-guest-utilities" in script
    assert "-r-xr-xr-x" in [line for line in listing.splitlines()
                            if line.endswith("install.sh ")][0]


def test_udev_srs(x, server):
    srs = srs_named(x)
    expected = {"Removable storage": ("", "disk", "block", "/dev/xapi/block",
                                      "local-hotplug-disk"),
                "DVD drives": ("Physical DVD drives", "iso", "cd",
                               "/dev/xapi/cd", "local-hotplug-cd")}
    for name, (description, content, kind, where, key) in expected.items():
        sr, rec = srs[name]
        assert rec["type"] == "udev" and not rec["shared"]
        assert rec["name_description"] == description
        assert rec["content_type"] == content
        assert rec["sm_config"] == {"type": kind}
        assert rec["other_config"]["i18n-key"] == key
        assert rec["other_config"]["i18n-original-value-name_label"] == name
        pbd = pbd_of(x, sr)
        assert pbd["device_config"] == {"location": where}
        assert pbd["currently_attached"]
        # Nothing plugged in here: empty, and a scan says so.
        x.SR.scan(sr)
        assert x.SR.get_VDIs(sr) == []
        assert int(x.SR.get_physical_size(sr)) == 0
        assert "vdi_create" not in x.SR.get_allowed_operations(sr)
        assert "scan" in x.SR.get_allowed_operations(sr)
        assert failure(x.VDI.create, {
            "name_label": "no", "name_description": "", "SR": sr,
            "virtual_size": str(MIB), "type": "user", "sharable": False,
            "read_only": False, "other_config": {}, "xenstore_data": {},
            "sm_config": {}, "tags": []}) == [
            "SR_OPERATION_NOT_SUPPORTED", sr]
    sm, = [r for r in x.SM.get_all_records().values() if r["type"] == "udev"]
    assert "VDI_CREATE" not in sm["capabilities"]
    assert "udev" in x.SR.get_supported_types()


def test_tools_iso_in_a_cd_drive(x, server):
    tools_sr, rec = srs_named(x)["XCP-ng Tools"]
    tools, = rec["VDIs"]
    template = [r for r, t in x.VM.get_all_records().items()
                if t["is_a_template"] and
                t["name_label"].startswith("Other install media")][0]
    vm = x.VM.clone(template, "tools")
    x.VM.provision(vm)
    x.VM.set_memory_limits(vm, *[str(256 * MIB)] * 4)
    cd = x.VBD.create({
        "VM": vm, "VDI": NULL, "userdevice": "3", "bootable": False,
        "mode": "RO", "type": "CD", "empty": True, "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    wait_until(lambda: x.VM.get_guest_metrics(vm) != NULL,
               what="the guest's drivers")
    x.VBD.insert(cd, tools)
    assert x.VBD.get_VDI(cd) == tools and not x.VBD.get_empty(cd)
    assert x.VBD.get_currently_attached(cd)
    x.VBD.eject(cd)
    assert x.VBD.get_empty(cd)
    x.VBD.insert(cd, tools)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_restart_keeps_them_and_brings_the_tools_sr_back(tmp_path):
    s = RunningServer(str(tmp_path / "data")).start()
    try:
        x = s.session().xenapi
        before = {name: rec["uuid"] for name, (_, rec) in srs_named(x).items()}
        assert {"Local storage", "XCP-ng Tools", "Removable storage",
                "DVD drives"} <= set(before)
    finally:
        s.stop()
    s.start()
    try:
        x = s.session().xenapi
        again = {name: rec["uuid"] for name, (_, rec) in srs_named(x).items()}
        assert again == before
        # As on a data dir from before the tools SR: it is made again.
        for name in ("XCP-ng Tools", "DVD drives"):
            sr = srs_named(x)[name][0]
            for pbd in x.SR.get_PBDs(sr):
                x.PBD.unplug(pbd)
            x.SR.forget(sr)
    finally:
        s.stop()
    s.start()
    try:
        x = s.session().xenapi
        after = srs_named(x)
        assert "DVD drives" not in after   # first start only
        sr, rec = after["XCP-ng Tools"]
        assert rec["uuid"] != before["XCP-ng Tools"] and rec["is_tools_sr"]
        assert [x.VDI.get_is_tools_iso(v) for v in rec["VDIs"]] == [True]
    finally:
        s.stop()

"""
The udev driver on a directory of links, as udev keeps /dev/xapi/block:
each link is a VDI while its target exists; with no directory at all the
SR is empty; nothing can be created, deleted or copied.
"""


import pytest

from txstorage.drivers.udev import UdevSRDriver
from txstorage.errors import StorageError, Unimplemented, VDIMissing

SR_UUID = "7d7b6a4e-0b59-4d0e-9a55-0a6f1f4a2c11"


@pytest.fixture
def links(tmp_path):
    return tmp_path / "block"


@pytest.fixture
def driver(links):
    d = UdevSRDriver()
    d.sr_create(SR_UUID, {"location": str(links)})
    d.sr_attach(SR_UUID, {"location": str(links)})
    return d


def test_no_directory_is_an_empty_sr(driver):
    assert driver.sr_scan(SR_UUID) == []
    info = driver.sr_update(SR_UUID)
    assert (info.physical_size, info.physical_utilisation) == (0, 0)


def test_location_is_required():
    with pytest.raises(StorageError) as e:
        UdevSRDriver().sr_attach(SR_UUID, {})
    assert e.value.name == "ConfigLocationMissing"


def test_plugged_devices_are_vdis(driver, links, tmp_path):
    device = tmp_path / "sdz"
    device.write_bytes(b"\0" * (1 << 20))
    links.mkdir()
    (links / "usb-stick").symlink_to(device)
    (links / "gone").symlink_to(tmp_path / "unplugged")
    info, = driver.sr_scan(SR_UUID)
    location = str(links / "usb-stick")
    assert info.location == location
    assert info.uuid == UdevSRDriver.vdi_uuid_of(SR_UUID, location)
    assert info.virtual_size == 1 << 20 and not info.read_only
    assert "hotplugged_at" in info.sm_config
    assert driver.sr_update(SR_UUID).physical_size == 1 << 20
    attached = driver.vdi_attach(SR_UUID, info.uuid, True)
    assert attached.path == str(device) and attached.format == "raw"
    assert driver.vdi_introduce(SR_UUID, None, location).uuid == info.uuid
    config = driver.vdi_generate_config(SR_UUID, info.uuid)
    assert driver.vdi_attach_from_config(config).path == str(device)
    for refused in (lambda: driver.vdi_create(SR_UUID, None, 1 << 20),
                    lambda: driver.vdi_delete(SR_UUID, info.uuid),
                    lambda: driver.vdi_snapshot(SR_UUID, info.uuid),
                    lambda: driver.vdi_clone(SR_UUID, info.uuid)):
        with pytest.raises(Unimplemented):
            refused()
    # Unplugged: gone from the next scan.
    device.unlink()
    assert driver.sr_scan(SR_UUID) == []
    with pytest.raises(VDIMissing):
        driver.vdi_update(SR_UUID, info.uuid)

"""
The suspend image's way into and out of a VDI (txxapi.suspend_images.save
and restore) on a real file SR through txstorage's writer and readers,
with a stand-in backend that streams a large image through the file
descriptor it is given, as libxl's save helper does: the bytes arrive
intact and in order, memory stays constant whatever the image's size, a
failure on either side stops the other and leaves the VDI as it was.
"""

import hashlib
import os
import tracemalloc

import pytest

from tests.test_storage_file import SR, sr  # noqa: F401 (sr: a fixture)
from txxapi.errors import XenAPIError
from txxapi.suspend_images import PIECE, restore, save
from txxenops.errors import ImageError

MIB = 1 << 20
IMAGE = 96 * MIB
VDI_SIZE = 128 * MIB


def pattern(offset, length):
    """Deterministic non-zero bytes (the writer stores zeros specially)."""
    block = hashlib.sha256(b"%d" % (offset // 4096)).digest() * 128
    return (block * (length // len(block) + 1))[:length]


class StreamingBackend:
    """Writes IMAGE bytes of pattern on suspend, in odd-sized writes;
    reads them back on resume and checks them."""

    def __init__(self, image=IMAGE, fail_after=None):
        self.image = image
        self.fail_after = fail_after
        self.digest = None

    def suspend(self, uuid, fd, timeout):
        h = hashlib.sha256()
        offset, step = 0, 3 * 65536 + 17
        try:
            while offset < self.image:
                if self.fail_after is not None and offset >= self.fail_after:
                    raise ImageError(uuid, "the guest went away")
                data = pattern(offset, min(step, self.image - offset))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                h.update(data)
                offset += len(data)
        except BrokenPipeError as e:
            raise ImageError(uuid, "cannot write the image: %s" % e)
        self.digest = h.hexdigest()

    def resume(self, spec, fd, paused):
        h = hashlib.sha256()
        left = self.image
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise ImageError(spec, "truncated image")
            h.update(chunk)
            left -= len(chunk)
        # The rest of the VDI is never read: the pump must not hang.
        return h.hexdigest()


@pytest.fixture
def vdi(sr):
    driver, _ = sr
    info = driver.vdi_create(SR, None, VDI_SIZE, "Suspend image",
                             vdi_type="suspend")
    attached = []

    def attach(writable):
        ai = driver.vdi_attach(SR, info.location, writable)
        driver.vdi_activate(SR, info.location, writable)
        attached.append(info.location)
        return ai
    yield driver, info, attach
    for location in attached:
        driver.vdi_deactivate(SR, location)
        driver.vdi_detach(SR, location)


def allocated(driver, info):
    return driver.vdi_update(SR, info.location).physical_utilisation


def test_image_streams_in_and_out_in_constant_memory(vdi):
    driver, info, attach = vdi
    backend = StreamingBackend()
    tracemalloc.start()
    try:
        save(backend, "vm", attach(True), 30)
        _, saved_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = restore(backend, "vm", attach(False), False)
        _, restored_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == backend.digest
    # A 96 MiB image through one piece's buffer and a few pieces' worth
    # of copies, never the whole image.
    assert saved_peak < 4 * PIECE, saved_peak
    assert restored_peak < 4 * PIECE, restored_peak


def test_failed_suspend_leaves_the_vdi_as_it_was(vdi):
    driver, info, attach = vdi
    before = allocated(driver, info)
    with pytest.raises(ImageError):
        save(StreamingBackend(fail_after=40 * MIB), "vm", attach(True), 30)
    assert allocated(driver, info) == before
    assert not [n for n in os.listdir(os.path.dirname(attach(False).path))
                if n.startswith(".import-")]


def test_image_bigger_than_the_vdi_fails_and_stops_the_backend(vdi):
    driver, info, attach = vdi
    before = allocated(driver, info)
    with pytest.raises(XenAPIError) as e:
        save(StreamingBackend(image=VDI_SIZE + 8 * MIB), "vm", attach(True),
             30)
    assert e.value.code == "VDI_IO_ERROR"
    assert allocated(driver, info) == before


def test_resume_of_an_empty_vdi_is_an_image_error(vdi):
    driver, info, attach = vdi

    class Checking(StreamingBackend):
        def resume(self, spec, fd, paused):
            head = os.read(fd, 64)
            if head.strip(b"\0") == b"":
                raise ImageError(spec, "not an image")
            return head
    with pytest.raises(ImageError):
        restore(Checking(), "vm", attach(False), False)

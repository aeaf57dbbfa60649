"""
The contract every txxenops backend honours, run against each backend: the
simulator always, libxl only on a Xen control domain with the binding built
(else skipped with the reason).  Tests that need what only a simulated
guest can do (hang, crash on request, an agent on a timer) are marked
``hooks`` and skipped for backends without those test hooks.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest
from zope.interface.verify import verifyObject

from txxenops import (
    BackendUnavailable, BadDomainState, Cancelled, DeviceError, DomainNotFound,
    ImageError, InvalidSpec, IXenopsBackend, MigrationError, NotEnoughMemory,
    ShutdownTimeout, VBDSpec, VIFSpec, VMSpec)
from txxenops.backends import libxl as libxl_backend
from txxenops.backends.simulator import SimulatorBackend
from txxenops.memory import MIB, overhead_mib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GIB = 1024 ** 3
EVENT_TIMEOUT = 10.0


def hooks(test):
    """Mark a test as needing the simulator's guest hooks."""
    test.needs_hooks = True
    return test


def devices(test):
    """Mark a test as needing disks, NICs or HVM, i.e. dom0 backends."""
    test.needs_devices = True
    return test


class SimulatorHarness:
    name = "simulator"
    hooks = True
    devices = True
    # How far memory_actual may be from the target once the guest's balloon
    # driver has done its work.
    balloon_tolerance = 0

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.state_dir = str(tmp_path / "xenops-state")
        self.backends = []
        self.count = 0

    def open(self, **kwargs):
        args = dict(memory=8 * GIB, dom0_memory=1 * GIB,
                    state_dir=self.state_dir, op_time=0.01, agent_delay=0.1,
                    shutdown_delay=0.02)
        args.update(kwargs)
        backend = SimulatorBackend(**args)
        self.backends.append(backend)
        return backend

    def disk(self, name="disk0"):
        path = self.tmp / (name + ".img")
        if not path.exists():
            path.write_bytes(b"\0" * 4096)
        return str(path)

    def spec(self, **kwargs):
        self.count += 1
        args = dict(
            uuid=str(uuidlib.uuid4()), name="vm%d" % self.count,
            domain_type="pv",
            memory_static_max=256 * MIB, vcpus_max=2,
            vbds=[VBDSpec(device="xvda", userdevice="0", path=self.disk())],
            vifs=[VIFSpec(device="0", mac="c2:a1:00:12:34:56",
                          bridge="xenbr0")])
        args.update(kwargs)
        return VMSpec(**args)

    def close(self):
        for b in self.backends:
            b.close()


class LibxlHarness(SimulatorHarness):
    """Real Xen: guests boot the kernel named by XENOPS_TEST_KERNEL (and
    XENOPS_TEST_RAMDISK); no disks or NICs, as a minimal dom0 has no
    hotplug scripts."""
    name = "libxl"
    hooks = False
    devices = False
    balloon_tolerance = 1 * MIB

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.uuids = []

    def open(self, **kwargs):
        backend = libxl_backend.open_backend()
        self.backends.append(backend)
        return backend

    def spec(self, **kwargs):
        kernel = os.environ.get("XENOPS_TEST_KERNEL")
        if not kernel:
            pytest.skip("libxl: set XENOPS_TEST_KERNEL to a guest kernel")
        args = dict(uuid=str(uuidlib.uuid4()), name="txxenops-test",
                    domain_type="pv", memory_static_max=128 * MIB,
                    vcpus_max=1, kernel=kernel,
                    ramdisk=os.environ.get("XENOPS_TEST_RAMDISK", ""),
                    cmdline="console=hvc0 quiet")
        args.update(kwargs)
        self.uuids.append(args["uuid"])
        return VMSpec(**args)

    def close(self):
        # Domains outlive backends: destroy what the test left.
        for b in self.backends:
            try:
                if b is self.backends[-1]:
                    for uuid in self.uuids:
                        b.destroy(uuid)
            finally:
                b.close()


@pytest.fixture(params=["simulator", "libxl"])
def harness(request, tmp_path):
    if request.param == "libxl":
        try:
            libxl_backend.open_backend().close()
        except BackendUnavailable as e:
            pytest.skip("libxl: %s" % e)
        h = LibxlHarness(tmp_path)
    else:
        h = SimulatorHarness(tmp_path)
    if getattr(request.function, "needs_hooks", False) and not h.hooks:
        pytest.skip("%s: needs simulated-guest hooks" % h.name)
    if getattr(request.function, "needs_devices", False) and not h.devices:
        pytest.skip("%s: no device backends (hotplug scripts, blkback or "
                    "qemu, netback, bridges) in the test dom0, and no "
                    "hot-plug in the libxl backend yet" % h.name)
    yield h
    h.close()


@pytest.fixture
def backend(harness):
    return harness.open()


class Events:
    """Collects a backend's events; waits for one matching a predicate."""

    def __init__(self, backend):
        self.cond = threading.Condition()
        self.events = []
        self.threads = set()
        backend.subscribe(self)

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def wait_for(self, pred, timeout=EVENT_TIMEOUT):
        with self.cond:
            found = []

            def match():
                found[:] = [e for e in self.events if pred(e)]
                return bool(found)
            assert self.cond.wait_for(match, timeout), \
                "no matching event in %r" % (self.events,)
            return found[-1]

    def states(self, uuid):
        with self.cond:
            return [(e.info.state if e.info else None)
                    for e in self.events
                    if e.uuid == uuid and e.kind == "state"]

    def expect_states(self, uuid, expected, timeout=EVENT_TIMEOUT):
        """Wait until the state events of ``uuid`` are ``expected``."""
        with self.cond:
            self.cond.wait_for(
                lambda: len(self.states(uuid)) >= len(expected), timeout)
        assert self.states(uuid) == expected


@pytest.fixture
def events(backend):
    return Events(backend)


def wait_until(pred, timeout=EVENT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- host and interface ---------------------------------------------------

def test_provides_interface(backend):
    assert verifyObject(IXenopsBackend, backend)
    assert backend.name in ("simulator", "libxl")


def test_host_info(backend):
    info = backend.host_info()
    assert info.memory_total > 0
    assert 0 <= info.memory_free <= info.memory_total
    assert 0 < info.dom0_memory < info.memory_total
    assert info.cpus and info.cpus[0].model_name
    assert info.hypervisor_version.count(".") >= 1
    assert 0 <= backend.free_memory() <= info.memory_total


def test_memory_overhead_follows_xapi_model(backend, harness):
    # PV, 256 MiB, 1 vCPU: 0 + 1 + shadow ceil((256 + 512) / 256) = 3
    # + per-vCPU ceil(38 / 256) = 1  ->  5 MiB.
    pv = harness.spec(memory_static_max=256 * MIB, vcpus_max=1)
    assert backend.memory_overhead(pv) == 5 * MIB
    # HVM, 4 GiB, 2 vCPUs: 1 + 1 + ceil((512 + 8192) / 256) = 34 + 1.
    hvm = harness.spec(domain_type="hvm", memory_static_max=4 * GIB,
                       vcpus_max=2)
    assert backend.memory_overhead(hvm) == 37 * MIB
    assert overhead_mib("hvm", 4 * GIB, 2, 2.0) == 1 + 1 + 68 + 1
    # PV-in-PVH adds the shim: 23 + 900 / 90.
    assert overhead_mib("pv_in_pvh", 900 * MIB, 1) == \
        1 + 1 + 9 + 1 + 23 + 10


# --- lifecycle ------------------------------------------------------------

def test_start_and_clean_shutdown(backend, harness, events):
    spec = harness.spec()
    free = backend.free_memory()
    before = time.time()
    info = backend.start(spec)
    assert info.uuid == spec.uuid and info.state == "running"
    assert info.domid >= 1
    assert info.memory_actual == info.memory_target == spec.target
    assert info.memory_overhead == backend.memory_overhead(spec)
    assert info.vcpus == info.vcpus_max == spec.vcpus_max
    assert len(info.vcpu_times) == spec.vcpus_max
    assert before - 1 <= info.start_time <= time.time() + 1
    if harness.hooks:
        assert [v.device for v in info.vbds] == ["xvda"]
        assert [v.mac for v in info.vifs] == ["c2:a1:00:12:34:56"]
        assert info.consoles[0].protocol == "rfb"
        assert info.consoles[0].port > 0
        assert backend.free_memory() == \
            free - info.memory_actual - info.memory_overhead
    assert backend.domain_info(spec.uuid).domid == info.domid
    assert spec.uuid in [d.uuid for d in backend.list_domains()]

    backend.shutdown(spec.uuid, clean=True, timeout=30)
    with pytest.raises(DomainNotFound):
        backend.domain_info(spec.uuid)
    assert spec.uuid not in [d.uuid for d in backend.list_domains()]
    if harness.hooks:
        assert backend.free_memory() == free
    gone = events.wait_for(lambda e: e.uuid == spec.uuid and e.info is None)
    assert gone.domid == info.domid
    events.expect_states(spec.uuid, ["running", None])


def test_pause_unpause(backend, harness, events):
    spec = harness.spec()
    assert backend.start(spec, paused=True).state == "paused"
    assert backend.unpause(spec.uuid).state == "running"
    with pytest.raises(BadDomainState) as e:
        backend.unpause(spec.uuid)
    assert (e.value.expected, e.value.actual) == ("paused", "running")
    assert backend.pause(spec.uuid).state == "paused"
    with pytest.raises(BadDomainState) as e:
        backend.pause(spec.uuid)
    assert (e.value.expected, e.value.actual) == ("running", "paused")
    # A paused guest cannot cooperate: clean shutdown is refused, hard works.
    with pytest.raises(BadDomainState):
        backend.shutdown(spec.uuid, clean=True)
    backend.shutdown(spec.uuid, clean=False)
    events.expect_states(spec.uuid, ["paused", "running", "paused", None])


def test_start_twice_is_bad_state(backend, harness):
    spec = harness.spec()
    backend.start(spec)
    with pytest.raises(BadDomainState) as e:
        backend.start(spec)
    assert (e.value.expected, e.value.actual) == ("halted", "running")
    backend.destroy(spec.uuid)


def test_reboot_changes_domid(backend, harness, events):
    spec = harness.spec()
    first = backend.start(spec)
    second = backend.reboot(spec.uuid, clean=True, timeout=30)
    assert second.state == "running" and second.domid > first.domid
    third = backend.reboot(spec.uuid, clean=False)
    assert third.domid > second.domid
    assert backend.domain_info(spec.uuid).domid == third.domid
    # Reboot is one transition: no halted moment in between.
    events.expect_states(spec.uuid, ["running"] * 3)
    last = events.wait_for(lambda e: e.uuid == spec.uuid
                           and e.domid == third.domid)
    assert last.info.domid == third.domid
    # A new spec applies at reboot.
    spec.vcpus_max = 3
    assert backend.reboot(spec.uuid, clean=False, spec=spec).vcpus_max == 3
    backend.destroy(spec.uuid)


def _suspend_to_file(backend, uuid, path, **kw):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        backend.suspend(uuid, fd, **kw)
    finally:
        os.close(fd)


def _resume_from_file(backend, spec, path, **kw):
    fd = os.open(path, os.O_RDONLY)
    try:
        return backend.resume(spec, fd, **kw)
    finally:
        os.close(fd)


def test_suspend_and_resume(backend, harness, events, tmp_path):
    spec = harness.spec()
    started = backend.start(spec)
    image = str(tmp_path / "suspend.img")
    _suspend_to_file(backend, spec.uuid, image, timeout=30)
    with pytest.raises(DomainNotFound):
        backend.domain_info(spec.uuid)
    assert os.path.getsize(image) > 0
    if harness.hooks:
        with open(image, "rb") as f:
            assert f.readline().startswith(b"TXXENOPS-SIM-IMAGE 1 ")
    resumed = _resume_from_file(backend, spec, image)
    assert resumed.state == "running"
    assert resumed.domid > started.domid
    assert resumed.memory_actual == started.memory_actual
    events.expect_states(spec.uuid, ["running", None, "running"])
    _suspend_to_file(backend, spec.uuid, image)
    assert _resume_from_file(backend, spec, image, paused=True).state \
        == "paused"
    backend.destroy(spec.uuid)
    garbage = str(tmp_path / "garbage.img")
    with open(garbage, "wb") as f:
        f.write(b"not an image\n" + b"\0" * 4096)
    with pytest.raises(ImageError):
        _resume_from_file(backend, spec, garbage)
    assert spec.uuid not in [d.uuid for d in backend.list_domains()]
    # A clone of a suspended VM resumes its source's image as itself.
    clone = harness.spec()
    assert _resume_from_file(backend, clone, image).state == "running"
    assert backend.domain_info(clone.uuid).state == "running"
    backend.destroy(clone.uuid)
    os.unlink(image)    # a real guest's image is as big as its memory


def _copy_in_thread(src, dst, then=b""):
    """Copy from descriptor ``src`` to ``dst`` until src ends, then write
    ``then``, in a thread; closes ``dst``.  A reader that stops early is
    fine (BrokenPipeError); other failures land in the thread's list."""
    failures = []

    def run():
        try:
            while True:
                chunk = os.read(src, 1 << 16)
                if not chunk:
                    break
                _write_fully(dst, chunk)
            _write_fully(dst, then)
        except BrokenPipeError:
            pass
        except OSError as e:
            failures.append(e)
        finally:
            os.close(dst)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.failures = failures
    return t


def _write_fully(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def test_suspend_and_resume_through_pipes(backend, harness, tmp_path):
    """The image as a stream: written into a pipe as the toolstack reads
    it, read back from a pipe whose writer goes on past the image (as a
    storage volume bigger than the image does), at the descriptor's
    position, which neither call closes."""
    spec = harness.spec()
    backend.start(spec)
    path = str(tmp_path / "piped.img")
    r, w = os.pipe()
    sink = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    saver = _copy_in_thread(r, sink)
    try:
        backend.suspend(spec.uuid, w, timeout=30)
    finally:
        os.close(w)
    saver.join(120)
    os.close(r)
    assert not saver.failures and os.path.getsize(path) > 0
    r, w = os.pipe()
    source = os.open(path, os.O_RDONLY)
    feeder = _copy_in_thread(source, w, then=b"\0" * (1 << 20))
    try:
        info = backend.resume(spec, r)
    finally:
        os.close(r)
        feeder.join(120)
        os.close(source)
    os.unlink(path)
    assert not feeder.failures
    assert info.state == "running"
    backend.destroy(spec.uuid)


def test_failed_suspend_leaves_domain_running(backend, harness):
    """A suspend whose image cannot be written (the reader went away)
    raises ImageError, and the guest runs on in the same domain."""
    spec = harness.spec()
    started = backend.start(spec)
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(ImageError):
            backend.suspend(spec.uuid, w, timeout=30)
    finally:
        os.close(w)
    info = backend.domain_info(spec.uuid)
    assert info.state == "running" and info.domid == started.domid
    backend.destroy(spec.uuid)


def test_suspend_cut_off_mid_image_leaves_domain_running(backend, harness):
    """The reader goes away once the guest has suspended and its memory
    is being written: ImageError, and the guest runs on in its domain
    (libxl cancels the suspend, as xl save does)."""
    if harness.name != "libxl":
        pytest.skip("a simulated image fits in a pipe's buffer")
    spec = harness.spec()
    started = backend.start(spec)
    r, w = os.pipe()

    def read_a_little():
        try:
            left = 1 << 20
            while left > 0:
                chunk = os.read(r, min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        finally:
            os.close(r)
    reader = threading.Thread(target=read_a_little, daemon=True)
    reader.start()
    try:
        with pytest.raises(ImageError):
            backend.suspend(spec.uuid, w, timeout=30)
    finally:
        os.close(w)
        reader.join(60)
    info = backend.domain_info(spec.uuid)
    assert info.state == "running" and info.domid == started.domid
    backend.shutdown(spec.uuid, clean=True, timeout=60)


def test_destroy_is_idempotent(backend, harness):
    spec = harness.spec()
    backend.start(spec)
    backend.destroy(spec.uuid)
    backend.destroy(spec.uuid)
    with pytest.raises(DomainNotFound):
        backend.shutdown(spec.uuid, clean=False)
    with pytest.raises(DomainNotFound):
        backend.pause(spec.uuid)


def test_not_enough_memory_leaves_nothing(backend, harness, events):
    free = backend.free_memory()
    before = [d.uuid for d in backend.list_domains()]
    spec = harness.spec(memory_static_max=free + 64 * MIB)
    with pytest.raises(NotEnoughMemory) as e:
        backend.start(spec)
    assert e.value.needed > e.value.available
    assert e.value.available <= free
    assert [d.uuid for d in backend.list_domains()] == before
    assert backend.free_memory() == free
    with pytest.raises(DomainNotFound):
        backend.domain_info(spec.uuid)
    assert not [e for e in events.events if e.uuid == spec.uuid]


@hooks
def test_start_balloons_down_to_fit(backend, harness):
    free = backend.free_memory()
    spec = harness.spec(memory_static_max=free, memory_dynamic_min=256 * MIB)
    info = backend.start(spec)
    assert 256 * MIB <= info.memory_actual < info.memory_target
    assert backend.free_memory() == 0
    with pytest.raises(NotEnoughMemory):
        backend.start(harness.spec())
    backend.destroy(spec.uuid)
    assert backend.free_memory() == free


def test_invalid_spec(backend, harness):
    with pytest.raises(InvalidSpec):
        backend.start(harness.spec(vcpus_max=2, vcpus_at_startup=3))
    with pytest.raises(InvalidSpec):
        backend.start(harness.spec(memory_dynamic_min=512 * MIB))


def test_domids_unique_and_increasing(backend, harness):
    specs = [harness.spec() for _ in range(4)]
    domids = [backend.start(s).domid for s in specs]
    assert domids == sorted(set(domids))
    backend.destroy(specs[-1].uuid)
    again = backend.start(specs[-1]).domid
    assert again > max(domids)
    assert sorted(d.domid for d in backend.list_domains()) == \
        domids[:-1] + [again]
    for s in specs:
        backend.destroy(s.uuid)


def test_events_come_from_one_backend_thread(backend, harness, events):
    spec = harness.spec()
    backend.start(spec)
    backend.destroy(spec.uuid)
    events.wait_for(lambda e: e.uuid == spec.uuid and e.info is None)
    assert len(events.threads) == 1
    assert threading.current_thread().name not in events.threads
    backend.unsubscribe(events)
    backend.start(spec)
    backend.destroy(spec.uuid)
    time.sleep(0.1)
    events.expect_states(spec.uuid, ["running", None])


# --- devices --------------------------------------------------------------

@devices
def test_vbd_plug_unplug(backend, harness, events):
    spec = harness.spec()
    backend.start(spec)
    disk = harness.disk("disk1")
    info = backend.plug_vbd(spec.uuid, VBDSpec(device="xvdb",
                                               userdevice="1", path=disk))
    assert [v.device for v in info.vbds] == ["xvda", "xvdb"]
    assert backend.domain_info(spec.uuid).vbds[1].path == disk
    events.wait_for(lambda e: e.kind == "device" and e.uuid == spec.uuid)
    with pytest.raises(DeviceError):
        backend.plug_vbd(spec.uuid, VBDSpec(device="xvdb", path=disk))
    with pytest.raises(DeviceError):
        backend.plug_vbd(spec.uuid, VBDSpec(
            device="xvdc", path=str(harness.tmp / "missing.img")))
    # Device name from the userdevice when not given.
    info = backend.plug_vbd(spec.uuid, VBDSpec(userdevice="4", path=disk))
    assert info.vbds[-1].device == "xvde"
    info = backend.unplug_vbd(spec.uuid, "xvdb")
    assert [v.device for v in info.vbds] == ["xvda", "xvde"]
    with pytest.raises(DeviceError):
        backend.unplug_vbd(spec.uuid, "xvdb")
    backend.destroy(spec.uuid)


@devices
def test_vif_plug_unplug(backend, harness):
    spec = harness.spec()
    backend.start(spec)
    info = backend.plug_vif(spec.uuid, VIFSpec(
        device="1", mac="c2:a1:00:00:00:01", bridge="xenbr1"))
    assert [v.device for v in info.vifs] == ["0", "1"]
    with pytest.raises(DeviceError):
        backend.plug_vif(spec.uuid, VIFSpec(device="1",
                                            mac="c2:00:00:00:00:02"))
    info = backend.unplug_vif(spec.uuid, "0")
    assert [v.device for v in info.vifs] == ["1"]
    with pytest.raises(DeviceError):
        backend.unplug_vif(spec.uuid, "0")
    backend.destroy(spec.uuid)


@devices
def test_cd_insert_eject(backend, harness):
    spec = harness.spec(domain_type="hvm", vbds=[
        VBDSpec(userdevice="0", path=harness.disk()),
        VBDSpec(userdevice="3", type="CD", mode="RO", empty=True)])
    info = backend.start(spec)
    assert [v.device for v in info.vbds] == ["hda", "hdd"]
    iso = harness.disk("install")
    info = backend.insert_cd(spec.uuid, "hdd", iso)
    assert (info.vbds[1].path, info.vbds[1].empty) == (iso, False)
    with pytest.raises(DeviceError):
        backend.insert_cd(spec.uuid, "hdd", iso)
    info = backend.eject_cd(spec.uuid, "hdd")
    assert (info.vbds[1].path, info.vbds[1].empty) == ("", True)
    with pytest.raises(DeviceError):
        backend.eject_cd(spec.uuid, "hdd")
    with pytest.raises(DeviceError):
        backend.insert_cd(spec.uuid, "hda", iso)
    backend.destroy(spec.uuid)


def test_memory_target_and_vcpus(backend, harness, events):
    spec = harness.spec(vcpus_max=4, vcpus_at_startup=2)
    backend.start(spec)
    full = spec.memory_static_max
    # Not much lower: a real guest that gives up memory it needs crashes.
    lower = full * 3 // 4
    tolerance = harness.balloon_tolerance
    info = backend.set_memory_target(spec.uuid, lower)
    assert info.memory_target == lower
    assert abs(info.memory_actual - lower) <= tolerance
    info = backend.set_memory_target(spec.uuid, full)
    assert abs(info.memory_actual - full) <= tolerance
    with pytest.raises(InvalidSpec):
        backend.set_memory_target(spec.uuid, 2 * full)
    info = backend.set_vcpus(spec.uuid, 4)
    assert info.vcpus == 4 and len(info.vcpu_times) == 4
    with pytest.raises(InvalidSpec):
        backend.set_vcpus(spec.uuid, 5)
    events.wait_for(lambda e: e.kind == "vcpus" and e.info.vcpus == 4)
    events.wait_for(lambda e: e.kind == "memory")
    backend.destroy(spec.uuid)


# --- timing and concurrency (simulator) -----------------------------------

@hooks
def test_concurrent_starts_overlap(harness):
    backend = harness.open(op_time=0.2)
    specs = [harness.spec() for _ in range(10)]
    results, errors = [], []

    def run(spec):
        try:
            results.append(backend.start(spec).domid)
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=run, args=(s,)) for s in specs]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert not errors
    assert len(set(results)) == 10
    assert elapsed < 10 * 0.2 * 0.6, elapsed


@hooks
def test_vcpu_time_advances_only_when_running(backend, harness):
    spec = harness.spec(other_config={"simulator-cpu-load": "1.0"})
    backend.start(spec)
    t0 = backend.domain_info(spec.uuid).vcpu_times[0]
    time.sleep(0.05)
    t1 = backend.domain_info(spec.uuid).vcpu_times[0]
    assert t1 > t0
    backend.pause(spec.uuid)
    p0 = backend.domain_info(spec.uuid).vcpu_times[0]
    time.sleep(0.05)
    assert backend.domain_info(spec.uuid).vcpu_times[0] == p0
    backend.destroy(spec.uuid)


def test_metrics_sample_counts_while_running_only(backend, harness):
    spec = harness.spec()
    backend.start(spec)
    first = backend.sample_metrics(["lo"])
    time.sleep(0.3)
    second = backend.sample_metrics(["lo"])
    assert second.time > first.time
    assert 0 < second.memory_free <= second.memory_total
    assert second.cpu_avg_idle >= first.cpu_avg_idle
    if second.cpu_idle is None:
        assert "cpu[0-9]+" in second.unavailable
    else:
        assert all(b >= a for a, b in zip(first.cpu_idle, second.cpu_idle))
    assert second.control_domain is not None
    assert second.control_domain.vcpu_times
    [mine] = [d for d in second.domains if d.uuid == spec.uuid]
    [was] = [d for d in first.domains if d.uuid == spec.uuid]
    assert mine.state == "running" and mine.memory_actual > 0
    assert len(mine.vcpu_times) == spec.vcpus
    assert all(b >= a for a, b in zip(was.vcpu_times, mine.vcpu_times))
    backend.pause(spec.uuid)
    paused = [d for d in backend.sample_metrics([]).domains
              if d.uuid == spec.uuid][0]
    time.sleep(0.2)
    again = [d for d in backend.sample_metrics([]).domains
             if d.uuid == spec.uuid][0]
    assert paused.state == "paused"
    assert again.vcpu_times == paused.vcpu_times
    assert again.vbds == paused.vbds and again.vifs == paused.vifs
    backend.destroy(spec.uuid)
    assert spec.uuid not in [d.uuid for d in
                             backend.sample_metrics([]).domains]


@devices
def test_metrics_sample_counts_disk_and_network_traffic(backend, harness):
    spec = harness.spec(other_config={"simulator-cpu-load": "0.5"})
    backend.start(spec)
    first = backend.sample_metrics(["eth0"])
    time.sleep(0.3)
    second = backend.sample_metrics(["eth0"])
    was, mine = ([d for d in s.domains if d.uuid == spec.uuid][0]
                 for s in (first, second))
    assert set(mine.vbds) == {"xvda"} and set(mine.vifs) == {"0"}
    assert mine.vbds["xvda"][0] > was.vbds["xvda"][0]
    assert mine.vifs["0"][1] > was.vifs["0"][1]
    assert second.pifs["eth0"][0] > first.pifs["eth0"][0]
    backend.destroy(spec.uuid)


def test_disk_writes_say_where_or_nothing(backend, harness):
    """A backend that tracks guests' writes names blocks of the guest's
    working set, each once, also after the domain is gone; one that does
    not answers None."""
    from txxenops.backends.simwrites import WRITE_BLOCK, working_set
    size = 64 * WRITE_BLOCK * 4
    spec = harness.spec(other_config={"simulator-cpu-load": "1.0"})
    if spec.vbds:
        path = spec.vbds[0].path
        spec.vbds[0].size = size
    else:
        # The real-Xen harness boots guests without disks (no blkback in
        # its dom0): ask about a disk the guest does not have.
        assert not backend.tracks_disk_writes
        path = "/var/run/txxenops-test-no-such-disk"
    backend.start(spec)
    time.sleep(0.3)
    running = backend.disk_writes(path)
    time.sleep(0.3)
    backend.destroy(spec.uuid)
    gone = backend.disk_writes(path)
    if not backend.tracks_disk_writes:
        assert running is None and gone is None
        return
    ring = set(working_set(spec.uuid, "xvda", size))
    for extents in (running, gone):
        blocks = [offset // WRITE_BLOCK for offset, _ in extents]
        assert blocks and set(blocks) <= ring
        assert all(n == WRITE_BLOCK for _, n in extents)
    assert backend.disk_writes(path) == []


# --- guest behaviour (simulator hooks) ------------------------------------

@hooks
def test_hung_guest_clean_shutdown_times_out(backend, harness, events):
    spec = harness.spec(other_config={"simulator-hung": "true"})
    info = backend.start(spec)
    t0 = time.monotonic()
    with pytest.raises(ShutdownTimeout) as e:
        backend.shutdown(spec.uuid, clean=True, timeout=0.3)
    assert time.monotonic() - t0 >= 0.25
    assert e.value.timeout == 0.3
    with pytest.raises(ShutdownTimeout):
        backend.reboot(spec.uuid, clean=True, timeout=0.1)
    still = backend.domain_info(spec.uuid)
    assert (still.state, still.domid) == ("running", info.domid)
    with pytest.raises(DeviceError):
        backend.unplug_vbd(spec.uuid, "xvda")
    backend.unplug_vbd(spec.uuid, "xvda", force=True)
    backend.shutdown(spec.uuid, clean=False)
    events.expect_states(spec.uuid, ["running", None])


@hooks
def test_hard_shutdown_interrupts_hung_clean_shutdown(backend, harness):
    spec = harness.spec(other_config={"simulator-hung": "true"})
    backend.start(spec)
    outcome = []

    def clean():
        try:
            backend.shutdown(spec.uuid, clean=True, timeout=30)
        except Exception as e:
            outcome.append(e)
    t = threading.Thread(target=clean)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.1)
    backend.shutdown(spec.uuid, clean=False)
    t.join(10)
    assert time.monotonic() - t0 < 5
    assert isinstance(outcome[0], Cancelled)
    with pytest.raises(DomainNotFound):
        backend.domain_info(spec.uuid)


@hooks
def test_cancel_interrupts_a_wait(backend, harness):
    spec = harness.spec(other_config={"simulator-hung": "true"})
    backend.start(spec)
    threading.Timer(0.1, backend.cancel, (spec.uuid,)).start()
    with pytest.raises(Cancelled):
        backend.shutdown(spec.uuid, clean=True, timeout=30)
    assert backend.domain_info(spec.uuid).state == "running"
    backend.destroy(spec.uuid)


@hooks
def test_crash_and_guest_shutdown_events(backend, harness, events):
    spec = harness.spec()
    info = backend.start(spec)
    backend.simulate_crash(spec.uuid)
    ev = events.wait_for(lambda e: e.uuid == spec.uuid and e.info
                         and e.info.state == "crashed")
    assert ev.info.shutdown_reason == "crash" and ev.domid == info.domid
    assert backend.domain_info(spec.uuid).state == "crashed"
    # The toolstack applies actions_after_crash=restart.
    rebooted = backend.reboot(spec.uuid, clean=False)
    assert rebooted.state == "running" and rebooted.shutdown_reason == ""
    backend.simulate_guest_shutdown(spec.uuid, "reboot")
    ev = events.wait_for(lambda e: e.uuid == spec.uuid and e.info
                         and e.info.state == "shutdown")
    assert ev.info.shutdown_reason == "reboot"
    with pytest.raises(BadDomainState):
        backend.shutdown(spec.uuid, clean=True)
    backend.destroy(spec.uuid)
    events.expect_states(
        spec.uuid, ["running", "crashed", "running", "shutdown", None])


@hooks
def test_guest_metrics_arrive(backend, harness, events):
    spec = harness.spec(other_config={"install-distro": "ubuntu"})
    info = backend.start(spec)
    assert info.guest_metrics is None
    ev = events.wait_for(lambda e: e.uuid == spec.uuid
                         and e.kind == "guest_metrics")
    gm = ev.info.guest_metrics
    assert gm["os_version"]["distro"] == "ubuntu"
    assert gm["networks"]["0/ip"] == "10.18.52.87"
    assert gm["networks"]["0/ipv6/0"] == "fe80::c0a1:ff:fe12:3456"
    assert gm["other"]["feature-shutdown"] == "1"
    assert gm["pv_drivers_version"]["major"]
    assert backend.domain_info(spec.uuid).guest_metrics == gm
    backend.plug_vif(spec.uuid, VIFSpec(device="1", mac="c2:00:00:0a:0b:0c"))
    ev = events.wait_for(lambda e: e.kind == "guest_metrics"
                         and "1/ip" in e.info.guest_metrics["networks"])
    assert ev.info.guest_metrics["networks"]["1/ip"] == "10.10.11.13"
    backend.destroy(spec.uuid)

    quiet = harness.spec(other_config={"simulator-no-agent": "true"})
    backend.start(quiet)
    time.sleep(0.3)
    assert backend.domain_info(quiet.uuid).guest_metrics is None
    backend.destroy(quiet.uuid)


@hooks
def test_console_speaks_rfb(backend, harness):
    spec = harness.spec(name="console-vm")
    port = backend.start(spec).consoles[0].port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        assert f.read(12) == b"RFB 003.008\n"
        s.sendall(b"RFB 003.008\n")
        assert f.read(2) == b"\x01\x01"           # one type: None
        s.sendall(b"\x01")
        assert f.read(4) == b"\0\0\0\0"           # SecurityResult OK
        s.sendall(b"\x01")                        # ClientInit, shared
        w, h = struct.unpack(">HH", f.read(4))
        pixfmt = f.read(16)
        name = f.read(struct.unpack(">I", f.read(4))[0])
        assert (w, h, pixfmt[0], name) == (320, 240, 32, b"console-vm")
        s.sendall(struct.pack(">BxHI", 2, 1, 0))  # SetEncodings: Raw
        s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, 4, 2))
        assert struct.unpack(">BxH", f.read(4)) == (0, 1)
        assert struct.unpack(">HHHHi", f.read(12)) == (0, 0, 4, 2, 0)
        assert len(f.read(4 * 2 * 4)) == 32
    backend.destroy(spec.uuid)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        return False
    wait_until(refused)


def receiving(dest, spec, sock):
    """``dest.migrate_receive`` on a thread of its own: (the thread, the
    list its failure goes to)."""
    failures = []

    def receive():
        try:
            dest.migrate_receive(spec, sock)
        except Exception as e:
            failures.append(e)
    t = threading.Thread(target=receive)
    t.start()
    return t, failures


@hooks
def test_migration_between_two_hosts(backend, harness, tmp_path, events):
    source = backend
    dest = harness.open(state_dir=str(tmp_path / "other-host"))
    spec = harness.spec()
    before = source.start(spec)
    events.wait_for(lambda e: e.kind == "guest_metrics")
    a, b = socket.socketpair()
    received = []
    t = threading.Thread(target=lambda: received.append(
        dest.migrate_receive(spec, b)))
    t.start()
    source.migrate_send(spec.uuid, a)
    t.join(10)
    a.close()
    b.close()
    assert received and received[0].state == "running"
    with pytest.raises(DomainNotFound):
        source.domain_info(spec.uuid)
    moved = dest.domain_info(spec.uuid)
    assert moved.memory_actual == before.memory_actual
    assert moved.guest_metrics["networks"]["0/ip"] == "10.18.52.87"

    # A destination without room refuses; the source keeps its domain.
    small = harness.open(memory=512 * MIB, dom0_memory=256 * MIB,
                         state_dir=str(tmp_path / "small-host"))
    a, b = socket.socketpair()
    t, failures = receiving(small, spec, b)
    with pytest.raises(MigrationError):
        dest.migrate_send(spec.uuid, a)
    t.join(10)
    assert isinstance(failures[0], NotEnoughMemory)
    assert dest.domain_info(spec.uuid).state == "running"
    assert small.list_domains() == []
    dest.destroy(spec.uuid)


@hooks
def test_a_mangled_memory_stream_is_refused(backend, harness, tmp_path):
    """The guest's memory follows its state on the stream; a byte changed
    on the way fails the move, and the source keeps its domain."""
    dest = harness.open(state_dir=str(tmp_path / "other-host"))
    spec = harness.spec()
    backend.start(spec)
    source_end, relay_in = socket.socketpair()
    relay_out, dest_end = socket.socketpair()

    def relay(src, dst, mangle_at=-1):
        """src to dst until src ends, the byte at ``mangle_at`` changed."""
        seen = 0
        try:
            for data in iter(lambda: bytearray(src.recv(65536)), b""):
                if 0 <= mangle_at - seen < len(data):
                    data[mangle_at - seen] ^= 0xFF
                seen += len(data)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    relays = [threading.Thread(target=relay, args=(relay_in, relay_out,
                                                    100000)),
              threading.Thread(target=relay, args=(relay_out, relay_in))]
    for t in relays:
        t.start()
    receiver, failures = receiving(dest, spec, dest_end)
    with pytest.raises(MigrationError):
        backend.migrate_send(spec.uuid, source_end)
    receiver.join(10)
    for sock in (source_end, dest_end, relay_in, relay_out):
        sock.close()
    for t in relays:
        t.join(10)
    assert failures and isinstance(failures[0], MigrationError), failures
    assert "corrupt" in failures[0].reason
    assert backend.domain_info(spec.uuid).state == "running"
    assert dest.list_domains() == []
    backend.destroy(spec.uuid)


@hooks
def test_domains_survive_restart(harness):
    first = harness.open()
    running, paused = harness.spec(), harness.spec()
    r = first.start(running)
    p = first.start(paused, paused=True)
    first.close()
    second = harness.open()
    assert {(d.uuid, d.domid, d.state) for d in second.list_domains()} == {
        (running.uuid, r.domid, "running"), (paused.uuid, p.domid, "paused")}
    assert second.free_memory() == first.free_memory()
    new = harness.spec()
    assert second.start(new).domid > p.domid
    assert second.domain_info(running.uuid).consoles[0].port > 0
    second.shutdown(running.uuid)
    second.close()
    third = harness.open()
    assert [d.uuid for d in third.list_domains()] == [paused.uuid, new.uuid]


@hooks
def test_domains_survive_kill(harness):
    script = """
import json, os, signal, sys
from txxenops.backends.simulator import SimulatorBackend
from txxenops import VMSpec
b = SimulatorBackend(memory=8 << 30, state_dir=sys.argv[1], op_time=0)
infos = [b.start(VMSpec(uuid='vm-%d' % i)).domid for i in range(3)]
b.destroy('vm-1')
print(json.dumps(infos), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script, harness.state_dir],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    domids = json.loads(proc.stdout)
    backend = harness.open()
    assert [(d.uuid, d.domid, d.state) for d in backend.list_domains()] == [
        ("vm-0", domids[0], "running"), ("vm-2", domids[2], "running")]
    assert backend.start(VMSpec(uuid="vm-3")).domid == domids[2] + 1


# --- the libxl seam -------------------------------------------------------

def test_libxl_reports_why_it_is_unavailable(tmp_path):
    caps = tmp_path / "capabilities"
    with pytest.raises(BackendUnavailable, match="cannot read"):
        libxl_backend.check_xen_host(capabilities=str(caps))
    caps.write_text("")
    with pytest.raises(BackendUnavailable, match="control_d"):
        libxl_backend.check_xen_host(capabilities=str(caps))
    caps.write_text("control_d\n")
    with pytest.raises(BackendUnavailable, match="privcmd"):
        libxl_backend.check_xen_host(
            privcmd=str(tmp_path / "privcmd"), capabilities=str(caps))
    with pytest.raises(BackendUnavailable, match="binding"):
        libxl_backend.load_binding("txxenops.backends.libxl._absent")
    if not os.path.exists(libxl_backend.CAPABILITIES):
        with pytest.raises(BackendUnavailable, match="not running on Xen"):
            libxl_backend.open_backend()

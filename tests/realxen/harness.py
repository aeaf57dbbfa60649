"""
Real Xen in QEMU for the test suite.

Builds, from Debian packages only, a Xen 4.17 hypervisor and a busybox
dom0 (Debian's kernel plus the Xen daemons), boots them in QEMU with
software emulation (TCG: no nested virtualisation needed), shares this
machine's root file system read-only into dom0 over virtio-9p and runs a
command there, chrooted into it: the project's own Python, checkout and
compiled libxl binding, against real libxl and a real hypervisor.

    python3 -m tests.realxen.harness            # the suite (inside.py)
    python3 -m tests.realxen.harness --shell    # a dom0 shell afterwards
    python3 -m tests.realxen.harness --command "$PWD/tests/realxen/xl_stress.sh"

Boot artefacts and downloaded packages are cached in build/realxen/ (git
ignores build/); they are rebuilt when the packages or the init scripts
change.  QEMU is always stopped, by its process id, before returning.

Notes:
* ``-cpu max,-smap``: with SMAP emulated, dom0 faults at once under TCG.
* ``spec-ctrl=eager-fpu`` on Xen's command line: by default Xen switches
  PV vCPUs' FPU/SSE/AVX state lazily here (CR0.TS and the #NM trap), and
  under TCG that leaves dom0 processes with wrong vector registers once
  guests run beside them: glibc's string and memory functions then
  corrupt memory at random (xl segfaults, "corrupted unsorted chunks",
  crashes before main).  xl_stress.sh, with xl alone and bystanders that
  never touch Xen, shows it within the first builds without the option
  and stays clean with it.  Xen picks eager switching itself on CPUs it
  believes vulnerable to LazyFPU (Intel), which is why the fault needs
  QEMU's AMD-flavoured ``max`` CPU.
* 2 GiB for the VM, 768 MiB of it for dom0: dom0 holds the overlay's
  writes (suspend images among them); the rest is for guests.
* The guest boots an uncompressed vmlinux: libxc would otherwise spend
  seconds unpacking the bzImage in dom0 for every domain build.
"""

import argparse
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CACHE = os.path.join(REPO, "build", "realxen")
XEN = "4.17"

# What this machine needs: QEMU to boot, busybox and cpio for the
# initramfs images, libxen-dev for the binding (and its libraries, copied
# into dom0).
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "cpio", "libxen-dev")
HOST_COMMANDS = ("qemu-system-x86_64", "busybox", "cpio")
# Downloaded and unpacked only: nothing of Xen is installed on the host.
XEN_PACKAGES = ("xen-hypervisor-%s-amd64" % XEN, "xen-utils-%s" % XEN,
                "xen-utils-common", "xenstore-utils")
XEN_BINARIES = ("xl", "xenstored", "xenconsoled", "xen-init-dom0",
                "libxl-save-helper", "xenconsole")
DOM0_MODULES = (
    "drivers/xen/xen-privcmd.ko", "drivers/xen/xen-evtchn.ko",
    "drivers/xen/xen-gntdev.ko", "drivers/xen/xen-gntalloc.ko",
    "drivers/xen/xenfs/xenfs.ko",
    "drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko", "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko", "net/9p/9pnet.ko", "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko", "fs/overlayfs/overlay.ko")
# Built into the cache by build(); artefact name -> file name.
ARTEFACTS = ("xen.elf", "vmlinuz", "vmlinux.gz", "guest-initrd.gz",
             "dom0-initrd.gz")

GUEST_KERNEL = "/guest/vmlinux"
GUEST_RAMDISK = "/guest/initrd.gz"
# How QEMU emulates the machine; REALXEN_CPU, REALXEN_ACCEL and REALXEN_SMP
# override them, for experiments on the emulation itself.
QEMU_CPU = os.environ.get("REALXEN_CPU", "max,-smap")
QEMU_ACCEL = os.environ.get("REALXEN_ACCEL", "tcg,thread=multi")
QEMU_SMP = os.environ.get("REALXEN_SMP", "2")
# Likewise for experiments: a dom0 kernel other than linux-image-amd64's
# (e.g. a backports version), and extra words for Xen's command line.
DOM0_KERNEL = os.environ.get("REALXEN_KERNEL")
XEN_EXTRA_ARGS = os.environ.get("REALXEN_XEN_ARGS", "")
VM_MEMORY_MIB = 2048
DOM0_MEMORY = "768M"
TIMEOUT = 900


class Unavailable(Exception):
    """This machine cannot run real Xen in QEMU; the reason says why."""


def log(msg):
    print("realxen: %s" % msg, flush=True)


def run(cmd, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run(cmd, **kwargs)


# --- host prerequisites ---------------------------------------------------

def check_machine():
    """Raise Unavailable unless this machine can run the harness at all."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise Unavailable("needs Linux on x86_64")
    if os.geteuid() != 0:
        raise Unavailable("needs root (apt, and the whole root file system "
                          "read over 9p)")
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise Unavailable("needs a Debian machine (apt-get, dpkg)")
    for path in (REPO, CACHE):
        if re.search(r"[\s,]", path):
            raise Unavailable("path %r has a space or comma, which QEMU's "
                              "-initrd list cannot carry" % path)


def _installed(package):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                         capture_output=True, text=True)
    return out.returncode == 0 and "ok installed" in out.stdout


def ensure_host_packages():
    missing = [p for p in HOST_PACKAGES if not _installed(p)]
    if missing:
        log("installing %s" % " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        out = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
            + missing, env=env, capture_output=True, text=True)
        if out.returncode:
            raise Unavailable("apt-get install %s failed: %s"
                              % (" ".join(missing), out.stderr[-2000:]))
    for c in HOST_COMMANDS:
        if not shutil.which(c):
            raise Unavailable("%s not found after installing %s"
                              % (c, " ".join(HOST_PACKAGES)))


def build_binding(python=sys.executable):
    """Compile the libxl cffi module into the checkout, for the Python that
    runs the tests (the same file system is the chroot in dom0)."""
    run([python, os.path.join(REPO, "txxenops", "backends", "libxl",
                              "_build.py"), "--inplace"],
        cwd=REPO, capture_output=True)


# --- artefacts ------------------------------------------------------------

def kernel_version():
    if DOM0_KERNEL:
        return DOM0_KERNEL
    out = run(["apt-cache", "depends", "linux-image-amd64"],
              capture_output=True, text=True).stdout
    m = re.search(r"Depends: linux-image-(\d\S*-amd64)", out)
    if not m:
        raise Unavailable("cannot tell the kernel version from "
                          "linux-image-amd64: %s" % out[-500:])
    return m.group(1)


def download(packages, dest):
    os.makedirs(dest, exist_ok=True)
    cmd = ["apt-get", "download", "-qq"] + list(packages)
    if subprocess.run(cmd, cwd=dest, capture_output=True).returncode:
        # A fresh machine may have no package lists yet.
        run(["apt-get", "update", "-qq"])
        out = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
        if out.returncode:
            raise Unavailable("apt-get download failed: %s"
                              % out.stderr[-2000:])


def _debs(dest, packages):
    """The newest cached .deb of each package (None if absent)."""
    found = {}
    for name in sorted(os.listdir(dest)) if os.path.isdir(dest) else ():
        if name.endswith(".deb"):
            found.setdefault(name.split("_")[0], []).append(name)
    return {p: os.path.join(dest, sorted(found[p])[-1]) if p in found
            else None for p in packages}


def _fingerprint(debs, kver):
    h = hashlib.sha256(kver.encode())
    for p in sorted(debs):
        h.update(os.path.basename(debs[p]).encode())
    for name in ("dom0-init.sh", "guest-init.sh", "harness.py"):
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _unzstd(payload):
    # Python 3.11 has no zstd module; the payload is followed by trailing
    # data zstd warns about, and the ELF check below judges the result.
    return subprocess.run(["zstd", "-dc"], input=payload,
                          capture_output=True).stdout


# How a bzImage's payload may be compressed: its magic, and how to unpack
# it (zstd: newer kernels, such as backports', and only with zstd here).
_KERNEL_PAYLOADS = (
    (b"\xfd7zXZ\x00", lambda p: lzma.LZMADecompressor().decompress(p)),
    (b"\x1f\x8b\x08\x00",
     lambda p: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(p)),
    (b"\x28\xb5\x2f\xfd", _unzstd if shutil.which("zstd") else None),
)


def unpack_kernel(bzimage, out):
    """Write the ELF vmlinux inside a compressed bzImage to ``out``,
    gzipped (quick to unpack in dom0, and a fifth of the size to copy)."""
    with open(bzimage, "rb") as f:
        data = f.read()
    for magic, unpack in _KERNEL_PAYLOADS:
        at = data.find(magic)
        if at >= 0 and unpack is not None:
            raw = unpack(data[at:])
            break
    else:
        raise Unavailable("no xz, gzip or zstd payload in %s" % bzimage)
    if raw[:4] != b"\x7fELF":
        raise Unavailable("the payload of %s is not an ELF kernel"
                          % bzimage)
    with gzip.open(out, "wb", compresslevel=1) as f:
        f.write(raw)


def _cpio(root, out):
    with open(out, "wb") as f:
        find = subprocess.Popen(["find", "."], cwd=root,
                                stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"],
                                cwd=root, stdin=find.stdout,
                                stdout=subprocess.PIPE)
        find.stdout.close()
        gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=f)
        cpio.stdout.close()
        for p in (find, cpio, gz):
            if p.wait():
                raise RuntimeError("building %s failed" % out)


def _busybox_root(root, applets):
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(shutil.which("busybox"),
                 os.path.join(root, "bin", "busybox"))
    for a in applets:
        link = os.path.join(root, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)


def _guest_initrd(work, out):
    root = os.path.join(work, "guest")
    shutil.rmtree(root, ignore_errors=True)
    _busybox_root(root, ("sh", "mount", "echo", "cat", "sleep", "uname"))
    shutil.copy2(os.path.join(HERE, "guest-init.sh"),
                 os.path.join(root, "init"))
    for cmd in ("poweroff", "reboot"):
        path = os.path.join(root, "sbin", cmd)
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexec /bin/busybox %s -f\n" % cmd)
        os.chmod(path, 0o755)
    _cpio(root, out)


def _shared_libraries(binaries, extra_dir):
    """Every shared library the binaries load, resolved by this machine's
    loader (libxen-dev provides the same libxen* as the Xen packages)."""
    env = dict(os.environ, LD_LIBRARY_PATH=extra_dir)
    libs = set()
    for b in binaries:
        out = subprocess.run(["ldd", b], capture_output=True, text=True,
                             env=env).stdout
        for line in out.splitlines():
            if "not found" in line:
                raise Unavailable("%s needs %s, missing here"
                                  % (b, line.split()[0]))
            m = re.search(r"=> (/\S+)", line) or \
                re.match(r"\s*(/\S+ld-linux\S*)", line)
            if m:
                libs.add(m.group(1))
    return libs


def _copy_module(path, dest):
    """Copy a kernel module into ``dest``, uncompressed (busybox insmod
    takes plain .ko files).  Newer kernels ship modules xz-compressed, and
    build some of ours in: those are left out, and dom0-init skips them."""
    name = os.path.basename(path)
    if os.path.exists(path):
        shutil.copy2(path, os.path.join(dest, name))
    elif os.path.exists(path + ".xz"):
        with lzma.open(path + ".xz") as src, \
                open(os.path.join(dest, name), "wb") as dst:
            shutil.copyfileobj(src, dst)


def _dom0_initrd(work, unpacked, kver, out):
    root = os.path.join(work, "dom0")
    shutil.rmtree(root, ignore_errors=True)
    applets = subprocess.run([shutil.which("busybox"), "--list"],
                             capture_output=True, text=True,
                             check=True).stdout.split()
    _busybox_root(root, applets)
    for d in ("usr/bin", "usr/sbin", "etc/xen", "var/lib/xen",
              "var/log/xen", "run", "root", "modules",
              "usr/lib/xen-%s/bin" % XEN):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    # The daemons use /var/run paths; /run is a tmpfs.
    os.symlink("/run", os.path.join(root, "var", "run"))
    xen_bin = os.path.join(unpacked, "usr", "lib", "xen-%s" % XEN, "bin")
    binaries = []
    for b in XEN_BINARIES:
        dst = os.path.join(root, "usr", "lib", "xen-%s" % XEN, "bin", b)
        shutil.copy2(os.path.join(xen_bin, b), dst)
        binaries.append(dst)
        if b != "libxl-save-helper":
            os.symlink("/usr/lib/xen-%s/bin/%s" % (XEN, b),
                       os.path.join(root, "usr", "sbin", b))
    usr_bin = os.path.join(unpacked, "usr", "bin")
    for b in sorted(os.listdir(usr_bin)):
        if b.startswith("xenstore"):
            dst = os.path.join(root, "usr", "bin", b)
            shutil.copy2(os.path.join(usr_bin, b), dst, follow_symlinks=True)
            binaries.append(dst)
    libs = _shared_libraries(
        binaries, os.path.join(unpacked, "usr", "lib", "x86_64-linux-gnu"))
    # glibc loads libgcc_s at run time for pthread_cancel; xl aborts
    # without it.
    libs |= {p for p in ("/lib/x86_64-linux-gnu/libgcc_s.so.1",
                         "/lib64/ld-linux-x86-64.so.2") if os.path.exists(p)}
    for lib in libs:
        if lib.startswith(unpacked + os.sep):
            dst = os.path.join(root, "usr", "lib", "x86_64-linux-gnu",
                               os.path.basename(lib))
        else:
            dst = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(lib, dst, follow_symlinks=True)
    shutil.copytree(os.path.join(unpacked, "etc", "xen"),
                    os.path.join(root, "etc", "xen"), dirs_exist_ok=True,
                    symlinks=True)
    mods = os.path.join(unpacked, "lib", "modules", kver, "kernel")
    for m in DOM0_MODULES:
        _copy_module(os.path.join(mods, m), os.path.join(root, "modules"))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    shutil.copy2(os.path.join(HERE, "dom0-init.sh"),
                 os.path.join(root, "init"))
    _cpio(root, out)


def build(cache=CACHE):
    """Download what is missing and (re)build the boot artefacts when their
    inputs changed.  Returns {artefact: path}."""
    t0 = time.monotonic()
    kver = kernel_version()
    debdir = os.path.join(cache, "debs")
    packages = XEN_PACKAGES + ("linux-image-%s" % kver,)
    debs = _debs(debdir, packages)
    if not all(debs.values()):
        missing = [p for p in packages if not debs[p]]
        log("downloading %s" % " ".join(missing))
        download(missing, debdir)
        debs = _debs(debdir, packages)
    paths = {a: os.path.join(cache, a) for a in ARTEFACTS}
    stamp = os.path.join(cache, "stamp.json")
    fingerprint = _fingerprint(debs, kver)
    try:
        with open(stamp) as f:
            if json.load(f).get("fingerprint") == fingerprint and \
                    all(os.path.exists(p) for p in paths.values()):
                return paths
    except (OSError, ValueError):
        pass
    log("building boot artefacts for Xen %s and Linux %s" % (XEN, kver))
    work = os.path.join(cache, "work")
    unpacked = os.path.join(work, "unpacked")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(unpacked)
    for deb in debs.values():
        run(["dpkg-deb", "-x", deb, unpacked])
    boot = os.path.join(unpacked, "boot")
    # Xen's image is an ELF with a multiboot header: QEMU's -kernel boots
    # it directly, no boot loader needed.
    xen_gz = [n for n in os.listdir(boot) if n.startswith("xen-%s" % XEN)
              and n.endswith(".gz")]
    with open(os.path.join(boot, sorted(xen_gz)[-1]), "rb") as f:
        data = zlib.decompress(f.read(), 16 + zlib.MAX_WBITS)
    with open(paths["xen.elf"], "wb") as f:
        f.write(data)
    shutil.copy2(os.path.join(boot, "vmlinuz-%s" % kver), paths["vmlinuz"])
    unpack_kernel(paths["vmlinuz"], paths["vmlinux.gz"])
    _guest_initrd(work, paths["guest-initrd.gz"])
    _dom0_initrd(work, unpacked, kver, paths["dom0-initrd.gz"])
    shutil.rmtree(work, ignore_errors=True)
    with open(stamp, "w") as f:
        json.dump({"fingerprint": fingerprint, "kernel": kver}, f)
    log("artefacts built in %.1fs" % (time.monotonic() - t0))
    return paths


# --- booting --------------------------------------------------------------

class Boot:
    """One QEMU run: the serial console's lines with their times since
    QEMU started, the REALXEN markers, and how it ended."""

    MARK = re.compile(r"REALXEN: (.*?)(?: uptime=[\d.]+)?\s*$")

    def __init__(self):
        self.lines = []         # (seconds, text)
        self.marks = {}         # first word(s) of a marker -> seconds
        self.run_rc = None
        self.failure = None     # a marker "fail ..." or a crash
        self.timed_out = False
        self.elapsed = 0.0

    def add(self, t, text):
        self.lines.append((t, text))
        m = self.MARK.search(text)
        if m:
            what = m.group(1)
            rc = re.match(r"run rc=(\d+)", what)
            if rc:
                self.run_rc = int(rc.group(1))
                what = "run end"
            if what.startswith("fail"):
                self.failure = self.failure or what
            self.marks.setdefault(what.split(" hypervisor=")[0], t)
        elif re.search(r"Kernel panic|Panic on CPU|[Dd]om(ain )?0 crashed",
                       text):
            self.failure = self.failure or text.strip()

    @property
    def ok(self):
        return (self.run_rc == 0 and not self.failure
                and not self.timed_out)

    def output(self, since="run start", until="run end"):
        """The text printed between two markers (by default: what the
        command run in dom0 printed)."""
        t0 = self.marks.get(since)
        t1 = self.marks.get(until, float("inf"))
        if t0 is None:
            return "\n".join(text for _, text in self.lines)
        return "\n".join(text for t, text in self.lines
                         if t0 <= t <= t1 and "REALXEN:" not in text)

    def tail(self, n=60):
        return "\n".join(text for _, text in self.lines[-n:])


def boot(paths, command, timeout=TIMEOUT, shell=False, log_path=None,
         echo=False):
    """Boot Xen + dom0 with this machine's root shared in, run ``command``
    (an absolute path to a shell script, as seen from dom0's chroot) and
    return the Boot.  QEMU is stopped by its pid however this ends."""
    xen_cmdline = ("console=com1 com1=115200,8n1 dom0_mem=%s,max:%s "
                   "loglvl=warning guest_loglvl=warning noreboot bootscrub=0 "
                   "spec-ctrl=eager-fpu %s"
                   % (DOM0_MEMORY, DOM0_MEMORY, XEN_EXTRA_ARGS)).strip()
    dom0_cmdline = "console=hvc0 earlyprintk=xen realxen.run=%s%s" % (
        command, " realxen.shell" if shell else "")
    cmd = ["qemu-system-x86_64", "-accel", QEMU_ACCEL,
           "-cpu", QEMU_CPU, "-machine", "q35",
           "-m", str(VM_MEMORY_MIB), "-smp", QEMU_SMP,
           "-nic", "none", "-display", "none", "-no-reboot",
           "-monitor", "none",
           "-serial", "mon:stdio" if shell else "stdio",
           "-kernel", paths["xen.elf"], "-append", xen_cmdline,
           "-initrd", "%s %s,%s" % (paths["vmlinuz"], dom0_cmdline,
                                    paths["dom0-initrd.gz"]),
           "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,"
           "readonly=on,multidevs=remap",
           "-virtfs", "local,path=%s,mount_tag=realxen,security_model=none,"
           "readonly=on" % os.path.dirname(paths["vmlinux.gz"])]
    result = Boot()
    if shell:
        t0 = time.monotonic()
        subprocess.run(cmd)
        result.elapsed = time.monotonic() - t0
        return result
    logf = open(log_path, "w") if log_path else None
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        buf = b""
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                result.timed_out = True
                break
            chunk = proc.stdout.read()
            if not chunk:
                time.sleep(0.05)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                t = time.monotonic() - t0
                text = raw.decode("utf-8", "replace").rstrip("\r")
                result.add(t, text)
                if logf:
                    logf.write("[%7.2f] %s\n" % (t, text))
                if echo:
                    print("[%7.2f] %s" % (t, text), flush=True)
            if "poweroff" in result.marks:
                break
        rest = proc.stdout.read() or b""
        for raw in (buf + rest).split(b"\n"):
            if raw.strip():
                result.add(time.monotonic() - t0,
                           raw.decode("utf-8", "replace").rstrip("\r"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        if logf:
            logf.close()
    result.elapsed = time.monotonic() - t0
    return result


# --- the whole job --------------------------------------------------------

def inside_script(paths, python=sys.executable, args=()):
    """Write the script dom0 runs (chrooted into this machine's root) and
    return its path."""
    script = os.path.join(CACHE, "run-inside.sh")
    # Where dom0-init.sh puts the guest's files (from dom0's initramfs).
    env = {"XENOPS_TEST_KERNEL": GUEST_KERNEL,
           "XENOPS_TEST_RAMDISK": GUEST_RAMDISK}
    with open(script, "w") as f:
        f.write("#!/bin/sh\n# Written by tests/realxen/harness.py.\n")
        f.write("cd %s || exit 100\n" % _sh(REPO))
        for k, v in env.items():
            f.write("export %s=%s\n" % (k, _sh(v)))
        f.write("exec %s -m tests.realxen.inside %s\n" % (
            _sh(python), " ".join(_sh(a) for a in args)))
    os.chmod(script, 0o755)
    return script


def _sh(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


def prepare(python=sys.executable):
    """Everything before the boot: checks, packages, binding, artefacts.
    Returns the artefact paths; raises Unavailable."""
    check_machine()
    ensure_host_packages()
    try:
        build_binding(python)
    except subprocess.CalledProcessError as e:
        raise RuntimeError("building the libxl binding failed:\n%s%s" % (
            e.stdout.decode(errors="replace") if e.stdout else "",
            e.stderr.decode(errors="replace") if e.stderr else ""))
    os.makedirs(CACHE, exist_ok=True)
    return build()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shell", action="store_true",
                    help="interactive: serial on this terminal and a dom0 "
                    "shell after the run (Ctrl-a x quits QEMU)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    ap.add_argument("--command", help="run this shell script (absolute "
                    "path) in dom0 instead of tests.realxen.inside")
    ap.add_argument("inside_args", nargs="*",
                    help="arguments for tests.realxen.inside")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        paths = prepare()
    except Unavailable as e:
        log("cannot run here: %s" % e)
        return 2
    t_ready = time.monotonic() - t0
    script = a.command or inside_script(paths, args=a.inside_args)
    result = boot(paths, script, timeout=a.timeout, shell=a.shell,
                  log_path=os.path.join(CACHE, "serial.log"),
                  echo=not a.shell)
    log("prepare %.1fs, QEMU %.1fs, whole job %.1fs; markers %s" % (
        t_ready, result.elapsed, time.monotonic() - t0,
        {k: round(v, 1) for k, v in result.marks.items()}))
    if a.shell:
        return 0
    log("PASS" if result.ok else "FAIL (%s)" % (
        "timed out" if result.timed_out else result.failure
        or "rc=%s" % result.run_rc))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

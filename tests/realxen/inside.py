"""
What the real-Xen VM runs in dom0 (chrooted into the CI machine's root,
from the checkout): a probe of the libxl backend with a timed domain build,
then the txxenops contract suite against libxl, then the XenAPI lifecycle
test against ``twistd xapi --backend libxl``.

Each part ends with one line ``REALXEN-RESULT {json}`` (part, rc, counts,
skip reasons, seconds) that tests/test_realxen.py reads from the serial
console; the exit status is non-zero if any part failed.

    python -m tests.realxen.inside [probe] [contract] [xapi] [-- pytest args]
"""

import json
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PARTS = {
    "contract": ["tests/test_xenops_contract.py", "-k", "libxl"],
    "xapi": ["tests/realxen/test_xapi_on_xen.py"],
}
CONSOLE_LOG = "/var/log/xen/console/guest-%s.log"


def report(part, rc, seconds, **extra):
    line = dict(part=part, rc=rc, seconds=round(seconds, 2), **extra)
    print("REALXEN-RESULT %s" % json.dumps(line, sort_keys=True),
          flush=True)


def probe():
    """Open the backend, show the host, build one guest and see it run."""
    from txxenops import VMSpec
    from txxenops.backends.libxl import open_backend
    from txxenops.memory import MIB
    t0 = time.monotonic()
    backend = open_backend()
    try:
        host = backend.host_info()
        print("host: Xen %s, %d CPUs, %d MiB total, %d MiB free, dom0 "
              "%d MiB" % (host.hypervisor_version, len(host.cpus),
                          host.memory_total // MIB, host.memory_free // MIB,
                          host.dom0_memory // MIB), flush=True)
        spec = VMSpec(uuid=str(uuid.uuid4()), name="realxen-probe",
                      memory_static_max=128 * MIB, vcpus_max=1,
                      kernel=os.environ["XENOPS_TEST_KERNEL"],
                      ramdisk=os.environ.get("XENOPS_TEST_RAMDISK", ""),
                      cmdline="console=hvc0 quiet")
        t = time.monotonic()
        info = backend.start(spec)
        create = time.monotonic() - t
        print("probe: domid %d built and running in %.2fs" % (
            info.domid, create), flush=True)
        hello = _wait_for_console(info.name, "REALXEN-GUEST", 60)
        guest_up = time.monotonic() - t
        print("probe: guest console: %s (%.1fs after start)"
              % (hello, guest_up), flush=True)
        backend.destroy(spec.uuid)
        report("probe", 0 if hello else 1, time.monotonic() - t0,
               create=round(create, 2), guest_up=round(guest_up, 2))
        return 0 if hello else 1
    finally:
        backend.close()


def _wait_for_console(name, needle, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(CONSOLE_LOG % name, errors="replace") as f:
                for line in f:
                    if needle in line:
                        return line.strip()
        except OSError:
            pass
        time.sleep(0.2)
    return None


def junit_summary(path):
    counts = dict(passed=0, failed=0, skipped=0)
    reasons = []
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return counts, reasons
    for case in tree.iter("testcase"):
        tags = {child.tag: child for child in case}
        if "failure" in tags or "error" in tags:
            counts["failed"] += 1
        elif "skipped" in tags:
            counts["skipped"] += 1
            reasons.append("%s: %s" % (case.get("name"),
                                       tags["skipped"].get("message", "")))
        else:
            counts["passed"] += 1
    return counts, reasons


def run_pytest(part, extra):
    xml = "/tmp/realxen-%s.xml" % part
    # -v: one line per test, so that the serial log shows progress; a
    # test stuck in a libxl call gets every thread's stack dumped.
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
           "-rfEs", "--durations=8", "-p", "pytest_timeout", "--timeout=240",
           "-o", "faulthandler_timeout=200", "--junitxml=%s" % xml] + \
        PARTS[part] + list(extra)
    print("+ %s" % " ".join(cmd), flush=True)
    t0 = time.monotonic()
    # Only the plugins the suites use: importing others over 9p under
    # emulation costs tens of seconds.
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    counts, reasons = junit_summary(xml)
    # pytest exits 5 when everything was deselected or skipped at
    # collection; the counts say what happened.
    report(part, rc, time.monotonic() - t0, skip_reasons=reasons, **counts)
    return 0 if rc in (0, 5) and not counts["failed"] else 1


def main(argv):
    extra = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parts = argv or ["probe", "contract", "xapi"]
    print("inside dom0: python %s, %s" % (
        sys.version.split()[0], open("/proc/xen/capabilities").read()
        .strip() or "(no capabilities)"), flush=True)
    failed = 0
    for part in parts:
        print("=== %s" % part, flush=True)
        if part == "probe":
            t0 = time.monotonic()
            try:
                failed |= probe()
            except Exception as e:
                import traceback
                traceback.print_exc()
                report("probe", 1, time.monotonic() - t0, error=str(e))
                failed = 1
        else:
            failed |= run_pytest(part, extra)
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

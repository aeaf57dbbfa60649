"""
The libxl backend on real Xen: boots Xen 4.17 and a Debian dom0 in QEMU
(tests/realxen/harness.py) and runs inside dom0, against real libxl, the
txxenops contract suite and the XenAPI lifecycle test
(tests/realxen/inside.py).  Whatever fails inside fails here, with dom0's
output in the message.

It runs wherever it can (root on Debian x86_64: the harness installs
QEMU and the Xen packages it needs) and skips with the reason elsewhere.
TXXAPI_REALXEN=0 leaves it out (a quicker local run); TXXAPI_REALXEN=1
insists, so that a machine that cannot run it fails instead of skipping.
"""

import json
import os
import time

import pytest

from tests.realxen import harness

OPTED_IN = os.environ.get("TXXAPI_REALXEN") == "1"
OPTED_OUT = os.environ.get("TXXAPI_REALXEN") == "0"
# One boot runs everything; the fixture's time counts against the first
# test.
pytestmark = pytest.mark.timeout(harness.TIMEOUT + 600)
RESULT = "REALXEN-RESULT "
MAX_OUTPUT_LINES = 400


class RealXen:
    """The outcome of one boot: the Boot, and the results of each part
    (probe, contract, xapi) as reported from dom0."""

    def __init__(self, boot, prepare_s, whole_s):
        self.boot = boot
        self.prepare_s = prepare_s
        self.whole_s = whole_s
        self.results = {}
        for _, text in boot.lines:
            if text.startswith(RESULT):
                try:
                    r = json.loads(text[len(RESULT):])
                except ValueError:
                    continue
                self.results[r["part"]] = r

    def part_output(self, part):
        """dom0's output for one part (from its '=== part' line to its
        result line), else everything the run printed."""
        out, inside = [], False
        for _, text in self.boot.lines:
            if text == "=== %s" % part:
                inside = True
            if inside:
                out.append(text)
                if text.startswith(RESULT) and '"part": "%s"' % part in text:
                    break
        lines = out or self.boot.output().splitlines()
        return "\n".join(lines[-MAX_OUTPUT_LINES:])

    def timings(self):
        marks = self.boot.marks
        probe = self.results.get("probe", {})
        return ("real Xen: boot to toolstack %.1fs, domain build %.2fs "
                "(guest on its console after %.1fs), contract suite %.0fs, "
                "XenAPI test %.0fs, QEMU %.0fs, whole job %.0fs "
                "(prepare %.0fs)" % (
                    marks.get("toolstack up", -1), probe.get("create", -1),
                    probe.get("guest_up", -1),
                    self.results.get("contract", {}).get("seconds", -1),
                    self.results.get("xapi", {}).get("seconds", -1),
                    self.boot.elapsed, self.whole_s, self.prepare_s))


def _not_here(reason):
    if OPTED_IN:
        pytest.fail("real Xen was asked for but cannot run: %s" % reason)
    pytest.skip("real Xen in QEMU: %s" % reason)


@pytest.fixture(scope="module")
def realxen(request):
    if OPTED_OUT:
        pytest.skip("real Xen in QEMU: left out (TXXAPI_REALXEN=0)")
    t0 = time.monotonic()
    try:
        paths = harness.prepare()
    except harness.Unavailable as e:
        _not_here(str(e))
    prepare_s = time.monotonic() - t0
    boot = harness.boot(paths, harness.inside_script(paths),
                        log_path=os.path.join(harness.CACHE, "serial.log"))
    result = RealXen(boot, prepare_s, time.monotonic() - t0)
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(result.timings())
    return result


def _explain(result, part):
    boot = result.boot
    why = ("timed out after %.0fs" % boot.elapsed if boot.timed_out
           else boot.failure or "exit status %s" % boot.run_rc)
    return "%s in dom0 failed (%s); serial log in %s\n--- dom0 output ---\n" \
        "%s\n--- console tail ---\n%s" % (
            part, why, os.path.join(harness.CACHE, "serial.log"),
            result.part_output(part), boot.tail(40))


def _check_part(result, part):
    r = result.results.get(part)
    if r is None or r["rc"] not in (0, 5) or r.get("failed"):
        pytest.fail(_explain(result, part), pytrace=False)
    return r


def test_dom0_boots_and_builds_a_guest(realxen):
    boot = realxen.boot
    assert "toolstack up" in boot.marks, _explain(realxen, "boot")
    probe = _check_part(realxen, "probe")
    assert probe["create"] > 0


def test_contract_suite_on_real_libxl(realxen):
    r = _check_part(realxen, "contract")
    assert r["passed"] > 0, _explain(realxen, "contract")


def test_xapi_drives_a_pv_guest_on_real_xen(realxen):
    r = _check_part(realxen, "xapi")
    if not r["passed"] and r["skipped"]:
        pytest.skip("; ".join(r["skip_reasons"]))
    assert r["passed"] > 0, _explain(realxen, "xapi")
    if r["skipped"]:
        pytest.skip("partly: " + "; ".join(r["skip_reasons"]))


def test_whole_run_ended_cleanly(realxen):
    boot = realxen.boot
    if not boot.ok:
        pytest.fail(_explain(realxen, "run"), pytrace=False)

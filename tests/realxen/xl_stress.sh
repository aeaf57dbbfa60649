#!/bin/sh
# Run in dom0 by the harness:
#   python3 -m tests.realxen.harness --command "$PWD/tests/realxen/xl_stress.sh"
# Builds and destroys diskless PV guests with xl (Xen's own toolstack, none
# of this project's code) for a while, beside two churn.py processes that
# never touch Xen, then reports what crashed.  With Xen's lazy FPU switching
# (REALXEN_XEN_ARGS=spec-ctrl=no-eager-fpu undoes the harness's default),
# xl and the bystanders crash within the first builds under QEMU's
# emulation (segfaults, glibc's "corrupted unsorted chunks", ld.so
# assertions); with eager switching the run stays clean.
cd "$(dirname "$0")/../.." || exit 100
REPO=$(pwd)
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || PY=python3
XL=/usr/lib/xen-4.17/bin/xl
SECONDS_=${XL_STRESS_SECONDS:-90}
CFG=/tmp/xl-stress.cfg
cat >"$CFG" <<CFG
kernel = "${XENOPS_TEST_KERNEL:-/guest/vmlinux}"
ramdisk = "${XENOPS_TEST_RAMDISK:-/guest/initrd.gz}"
extra = "console=hvc0 quiet"
memory = 128
vcpus = 1
on_poweroff = "preserve"
CFG
for p in 1 2; do
    # timeout: a corrupted process may hang instead of crashing.
    PYTHONMALLOC=malloc timeout $((SECONDS_ + 30)) "$PY" -X faulthandler \
        tests/realxen/churn.py "$SECONDS_" >/tmp/churn$p.out 2>&1 &
done
end=$(( $(date +%s) + SECONDS_ - 5 ))
cycles=0
failures=0
while [ "$(date +%s)" -lt "$end" ]; do
    for k in 1 2 3 4; do
        timeout 60 "$XL" create -q "$CFG" "name=\"xl-stress-$cycles-$k\"" \
            >/tmp/xl.out 2>&1 \
            || { failures=$((failures + 1)); tail -2 /tmp/xl.out; }
    done
    for d in $(timeout 60 "$XL" list | awk 'NR > 2 { print $2 }'); do
        timeout 60 "$XL" destroy "$d" >/tmp/xl.out 2>&1 \
            || { failures=$((failures + 1)); tail -2 /tmp/xl.out; }
    done
    cycles=$((cycles + 1))
done
wait
echo "xl_stress: $cycles cycles of 4 builds, $failures xl failures"
rc=0
[ "$failures" -eq 0 ] || rc=1
for p in 1 2; do
    if grep -q "^churn: .* 0 bad$" /tmp/churn$p.out; then
        tail -1 /tmp/churn$p.out
    else
        rc=1
        echo "churn $p failed:"
        grep -a -m4 "Fatal\|Error\|free()\|churn:" /tmp/churn$p.out
    fi
done
dmesg | grep -a "segfault\|general protection" | tail -8
echo "xl_stress: rc=$rc"
exit $rc

#!/bin/sh
# /init of the PV test guest.  It only has to run: say so on its console,
# then echo each line typed on the console (the toolstack's console relay
# is tested with it), idling once the console has no more to read.  Shutdown, reboot and suspend requests from the toolstack are
# handled by the kernel's Xen control-node watcher, which runs
# /sbin/poweroff or /sbin/reboot (wrappers forcing busybox to act now, as
# this init ignores the signals busybox would send it).
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "REALXEN-GUEST: up, kernel $(uname -r), hypervisor $(cat /sys/hypervisor/type)"
while :; do
    if read -r line; then
        echo "REALXEN-ECHO: $line"
    else
        sleep 3600
    fi
done

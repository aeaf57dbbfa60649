#!/bin/sh
# /init of the test dom0 (busybox initramfs built by harness.py).
#
# Brings up the Xen toolstack daemons, mounts the CI machine's root (shared
# read-only by QEMU over virtio-9p, tag "hostroot") under a tmpfs overlay,
# runs the command named by realxen.run= on the kernel command line chrooted
# into it, and powers off.  Progress lines start with "REALXEN:" so that
# harness.py can time them on the serial console.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin

mark() { echo "REALXEN: $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
die() { mark "fail $*"; poweroff -f; }

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# The XenAPI test talks to the server over the loopback; nothing else has
# a network here (QEMU runs with -nic none).
ip link set lo up || die "loopback"
mkdir -p /run/xen /run/xenstored /run/lock /var/log/xen/console /var/lib/xen
mark "init hypervisor=$(cat /sys/hypervisor/type 2>/dev/null)"

for m in xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xenfs; do
    # Absent when the kernel has it built in.
    [ -f /modules/$m.ko ] || continue
    insmod /modules/$m.ko || die "insmod $m"
done
mount -t xenfs xenfs /proc/xen || die "mount xenfs"

xenstored --pid-file /run/xenstored.pid || die "xenstored"
i=0
# Without xenstored, xenstore-read would wait on the kernel's xenbus forever.
until timeout 2 xenstore-read / >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 50 ] && die "xenstored not answering"
    sleep 0.1
done
xen-init-dom0 || die "xen-init-dom0"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest \
    --log-dir=/var/log/xen/console || die "xenconsoled"
mark "toolstack up"

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev \
         virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
    # Absent when the kernel has it built in.
    [ -f /modules/$m.ko ] || continue
    insmod /modules/$m.ko || die "insmod $m"
done
mkdir -p /hostro /ovl /host
# Nothing changes the host's files during a run, so the page and dentry
# caches may keep them (cache=loose): Python's imports are many small reads.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose \
    hostroot /hostro || die "9p mount"
# Writes in the chroot (pytest's tmp_path, suspend images) go to dom0 RAM.
mount -t tmpfs tmpfs /ovl && mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay \
    -o lowerdir=/hostro,upperdir=/ovl/upper,workdir=/ovl/work /host \
    || die "overlay mount"
# Not /tmp: the overlay keeps it writable already, and a checkout under
# the host's /tmp (a CI clone, say) must stay visible.
for d in proc sys dev dev/pts run; do
    mkdir -p /host/$d && mount --bind /$d /host/$d
done
mount --bind /proc/xen /host/proc/xen
# The CI machine has only libxen-dev: the helpers libxl runs
# (libxl-save-helper), xl, and /etc/xen come from the Xen packages in here.
for d in /usr/lib/xen-4.17 /etc/xen /var/lib/xen /var/log/xen; do
    mkdir -p /host$d && mount --bind $d /host$d
done
mark "host root mounted"
# The test guest's kernel and initramfs, from the harness's cache (shared
# as "realxen", uncached so that reads are large): copied into RAM because
# libxc maps the kernel file, and a mapping over 9p reads page by page.
mkdir -p /guest /realxen
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 realxen \
    /realxen || die "9p mount of the cache"
gunzip -c /realxen/vmlinux.gz >/guest/vmlinux \
    && cp /realxen/guest-initrd.gz /guest/initrd.gz \
    || die "copying the guest kernel"
umount /realxen
mark "guest kernel copied"
mkdir -p /host/guest && mount --bind /guest /host/guest

cmd=$(sed -n 's/.*realxen\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$cmd" ]; then
    mark "run start"
    chroot /host /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 \
        /bin/sh "$cmd"
    mark "run rc=$?"
fi
if grep -q realxen.shell /proc/cmdline; then
    setsid cttyhack sh
fi
mark "poweroff"
poweroff -f

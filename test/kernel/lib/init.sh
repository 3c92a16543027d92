#!/bin/sh
# PID 1 of the test guest (busybox). Builds the guest's root from the HOST's root filesystem, shared
# read-only over virtio-9p, with a tmpfs overlay on top (writable, discarded at poweroff), gives it the
# guest kernel's own /proc /sys /dev, mounts the run directory (writable 9p share) at the path it has
# on the host, loads drivers for the PCI devices present (no udev here), runs <rundir>/job.sh, powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
uptime_s() { cut -d' ' -f1 /proc/uptime; }
fatal() { echo "KT-INIT: FATAL: $*" > /dev/console; poweroff -f; sleep 10; }

RUN= KMOD= DRIVERS=1
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    kt.run=*) RUN="${arg#*=}" ;;
    kt.kmod=*) KMOD="${arg#*=}" ;;
    kt.drivers=*) DRIVERS="${arg#*=}" ;;
  esac
done
[ -n "$RUN" ] || fatal "no kt.run= on the kernel command line"
while read -r m; do insmod "/lib/modules/$m" || echo "KT-INIT: insmod $m failed" > /dev/console; done < /modules.order

NR=/newroot
mkdir -p /mnt/host /mnt/rw
# cache=loose: the host root does not change under a running guest, and metadata caching is most of the speed.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /mnt/host || fatal "mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /mnt/rw && mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work $NR || fatal "mount overlay"
mount -t proc proc $NR/proc
mount -t sysfs sysfs $NR/sys
mount -t devtmpfs devtmpfs $NR/dev
mkdir -p $NR/dev/pts $NR/dev/shm
mount -t devpts -o newinstance,ptmxmode=666 devpts $NR/dev/pts
for d in /dev/shm /run /tmp; do mount -t tmpfs tmpfs "$NR$d"; done
KVER=$(uname -r)
if [ -n "$KMOD" ]; then mkdir -p "$NR/lib/modules/$KVER" && mount --bind "$NR$KMOD" "$NR/lib/modules/$KVER"; fi
mkdir -p "$NR$RUN"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 run "$NR$RUN" || fatal "mount run dir"
hostname kt-guest
R="$NR$RUN"
echo "root_ready $(uptime_s)" > "$R/guest-timings"
if [ "$DRIVERS" = 1 ]; then
  # udev coldplug substitute: one modprobe for every modalias present.
  chroot $NR /bin/sh -c 'PATH=/usr/sbin:/usr/bin:/sbin:/bin; modprobe -a -q -b $(cat /sys/bus/pci/devices/*/modalias /sys/bus/virtio/devices/*/modalias 2>/dev/null)' 2> "$R/modprobe.log"
fi
echo "drivers_loaded $(uptime_s)" >> "$R/guest-timings"
touch "$R/started"
chroot $NR /bin/bash "$RUN/job.sh" > "$R/stdout" 2> "$R/stderr" < /dev/null
echo $? > "$R/rc.tmp"
echo "job_done $(uptime_s)" >> "$R/guest-timings"
dmesg > "$R/dmesg.txt"
mv "$R/rc.tmp" "$R/rc"
sync
umount "$NR$RUN"
poweroff -f

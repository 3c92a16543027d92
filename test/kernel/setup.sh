#!/usr/bin/env bash
# Real-kernel suite setup: fetch QEMU, a Debian kernel and busybox by package name, unpack them into
# test/kernel/.cache, build the initramfs, probe whether KVM works. Idempotent; re-run is ~instant.
#   test/kernel/setup.sh            (needs root for apt-get install; downloads need network once)
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
mkdir -p "$KT_CACHE"
cd "$KT_CACHE"
say() { echo "[kernel-setup] $*" >&2; }

updated=0
apt_update() { if [[ $updated == 0 ]]; then say "apt-get update"; apt-get update -qq; updated=1; fi; }

# Host tools: QEMU runs the guest; kmod (depmod here, modprobe inside the guest chroot); pciutils (lspci,
# pci.ids in the guest); cpio + xz (initramfs, vmlinux). The guest runs the host's own node and bash.
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v depmod >/dev/null || missing+=(kmod)
command -v lspci >/dev/null || missing+=(pciutils)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
if ((${#missing[@]})); then
  apt_update
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

KVER="$(kt_kver)"
if [[ -z "$KVER" ]]; then apt_update; KVER="$(kt_kver)"; fi
[[ -n "$KVER" ]] || { say "cannot resolve linux-image-amd64 to a kernel ABI (set KT_KVER)"; exit 1; }
echo "$KVER" > kver
KROOT="$KT_CACHE/kernel"                   # the unpacked linux-image package
KMODDIR="$KROOT/lib/modules/$KVER"

if [[ ! -f "$KROOT/boot/vmlinuz-$KVER" ]]; then
  rm -f linux-image-*.deb
  say "apt-get download linux-image-$KVER"
  apt-get download "linux-image-$KVER" 2>/dev/null || { apt_update; apt-get download "linux-image-$KVER"; }
  rm -rf "$KROOT"; mkdir -p "$KROOT"
  dpkg-deb -x linux-image-"$KVER"_*.deb "$KROOT"
  rm -f linux-image-*.deb vmlinux
fi
[[ -f "$KMODDIR/modules.dep" ]] || depmod -b "$KROOT" "$KVER"

# PVH boot needs the plain ELF: pull the xz payload out of the bzImage (under TCG this halves boot time).
if [[ ! -f "$KT_VMLINUX" ]]; then
  say "extracting vmlinux from vmlinuz-$KVER"
  node - "$KROOT/boot/vmlinuz-$KVER" "$KT_VMLINUX.tmp" <<'JS'
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const [src, dst] = process.argv.slice(2);
const img = fs.readFileSync(src);
const at = img.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));  // xz stream magic
if (at < 0) { console.error('no xz payload in ' + src); process.exit(1); }
// xz -dc stops with "trailing garbage" after the stream: ignore the status, check the ELF magic instead.
let out;
try { out = execFileSync('xz', ['-dc'], { input: img.subarray(at), maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] }); }
catch (e) { out = e.stdout; }
if (!out || out.readUInt32BE(0) !== 0x7f454c46) { console.error('vmlinux is not ELF'); process.exit(1); }
fs.writeFileSync(dst, out);
JS
  mv "$KT_VMLINUX.tmp" "$KT_VMLINUX"
fi

if [[ ! -x "$KT_BUSYBOX" ]]; then
  rm -f busybox-static_*.deb
  say "apt-get download busybox-static"
  apt-get download busybox-static 2>/dev/null || { apt_update; apt-get download busybox-static; }
  rm -rf busybox; mkdir busybox; dpkg-deb -x busybox-static_*.deb busybox; rm -f busybox-static_*.deb
fi

# initramfs: busybox + the few modules for 9p/overlay, and our init. Rebuilt when init or this script changes.
if [[ ! -f "$KT_INITRD" || "$KT_DIR/lib/init.sh" -nt "$KT_INITRD" || "$0" -nt "$KT_INITRD" || "$(cat initramfs.kver 2>/dev/null)" != "$KVER" ]]; then
  R="$KT_CACHE/initramfs"; rm -rf "$R"
  mkdir -p "$R"/{bin,dev,proc,sys,mnt,newroot,lib/modules}
  cp "$KT_BUSYBOX" "$R/bin/busybox"
  for applet in $("$KT_BUSYBOX" --list); do [[ -e "$R/bin/$applet" ]] || ln -s busybox "$R/bin/$applet"; done
  : > "$R/modules.order"
  # --show-depends lists the insmod lines in load order (dependencies first).
  while read -r ko; do
    rel="${ko#"$KMODDIR"/}"
    mkdir -p "$R/lib/modules/$(dirname "$rel")"; cp "$ko" "$R/lib/modules/$rel"; echo "$rel" >> "$R/modules.order"
  done < <(modprobe -d "$KROOT" -S "$KVER" --show-depends -a "${KT_INITRD_MODULES[@]}" | awk '$1=="insmod" && !seen[$2]++ {print $2}')
  install -m 755 "$KT_DIR/lib/init.sh" "$R/init"
  (cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$KT_INITRD.tmp"
  mv "$KT_INITRD.tmp" "$KT_INITRD"; echo "$KVER" > initramfs.kver
  say "initramfs built ($(du -h "$KT_INITRD" | cut -f1), modules: $(wc -l < "$R/modules.order"))"
fi

# Accelerator: KVM only if a guest really boots with it (nested KVM is often present but broken).
if [[ ! -f accel || "${KT_REPROBE:-0}" == 1 ]]; then
  accel=tcg
  if [[ -r /dev/kvm && -w /dev/kvm ]]; then
    if timeout 20 qemu-system-x86_64 -accel kvm -cpu host -machine q35 -m 256 -nodefaults -display none \
         -no-reboot -serial stdio -kernel "$KT_VMLINUX" -append "console=ttyS0 panic=-1 rdinit=/none" 2>&1 \
         | grep -q "Linux version"; then accel=kvm; fi
  fi
  echo "$accel" > accel
  say "accelerator: $accel"
fi
say "ready: kernel $KVER, accel $(cat accel), $(qemu-system-x86_64 --version | head -1)"

# shellcheck shell=bash
# Shared settings of the real-kernel suite (sourced by setup.sh, boot.sh, run.sh).
# Everything big lives in test/kernel/.cache (git-ignored); runs in test/kernel/runs (git-ignored).
# Both must stay under the checkout: the guest sees the host's root filesystem (9p), not other mounts.
KT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KT_REPO="$(cd "$KT_DIR/../.." && pwd)"
KT_CACHE="$KT_DIR/.cache"
KT_RUNS="$KT_DIR/runs"
KT_INITRD="$KT_CACHE/initramfs.cpio.gz"
KT_VMLINUX="$KT_CACHE/vmlinux"          # uncompressed ELF, booted directly through PVH (no firmware decompression)
KT_BUSYBOX="$KT_CACHE/busybox/bin/busybox"
# Modules the initramfs needs to reach the host root (9p over virtio) and put a writable overlay on it.
KT_INITRD_MODULES=(virtio_pci 9pnet_virtio 9p overlay)

# The guest kernel: a Debian linux-image-<abi>-amd64 package. KT_KVER pins an ABI; otherwise the one the
# linux-image-amd64 metapackage points at now (Debian keeps only the newest ABI in the archive).
kt_kver() {
  if [[ -n "${KT_KVER:-}" ]]; then echo "$KT_KVER"; return; fi
  if [[ -f "$KT_CACHE/kver" ]]; then cat "$KT_CACHE/kver"; return; fi
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{sub("linux-image-","",$2); print $2; exit}'
}

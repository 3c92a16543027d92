#!/usr/bin/env bash
# Boot a q35 + intel-iommu guest with one PCI topology, run one command inside it (in a chroot of the
# host root, against the GUEST kernel's /sys /dev /proc), print its stdout/stderr, exit with its status.
#
#   test/kernel/boot.sh TOPOLOGY COMMAND [ARGS...]      (TOPOLOGY = name in topologies/ or a file)
#
# The command runs with cwd = the checkout. Writes survive only in the run dir ($KT_RUNDIR in the guest).
# Every boot also gets: a QMP socket <rundir>/qmp.sock, and the guest's /dev/ttyS1 relayed to QMP
# (lib/qmp-relay.mjs) so a check inside the guest can hot-plug devices itself.
# Env: KT_RUNDIR (default runs/<stamp>-<topology>), KT_TIMEOUT (s, 1800), KT_CONSOLE=1 (stream the
#      console), KT_ACCEL=kvm|tcg (default: what setup.sh probed), KT_DRIVERS=0 (no coldplug),
#      KT_CMDLINE (extra kernel args), KT_QEMU_EXTRA (extra QEMU args), KT_PASS_ENV ("VAR ..." passed in).
# Exit status: the command's; 124 timeout; 125 the guest never finished the command (see console.log).
set -uo pipefail
source "$(dirname "$0")/lib/env.sh"
if [[ $# -lt 2 ]]; then sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
TOPO="$1"; shift
if [[ -f "$TOPO" ]]; then TOPO_FILE="$TOPO"; TOPO="$(basename "$TOPO" .sh)"; else TOPO_FILE="$KT_DIR/topologies/$TOPO.sh"; fi
[[ -f "$TOPO_FILE" ]] || { echo "boot: no topology file $TOPO_FILE" >&2; exit 2; }
if [[ ! -f "$KT_INITRD" || ! -f "$KT_VMLINUX" || "$KT_DIR/lib/init.sh" -nt "$KT_INITRD" ]]; then "$KT_DIR/setup.sh" >&2 || exit 2; fi
KVER="$(cat "$KT_CACHE/kver")"

TOPO_ARGS=(); TOPO_CMDLINE=""
# shellcheck disable=SC1090
source "$TOPO_FILE"

RUNDIR="${KT_RUNDIR:-$KT_RUNS/$(date +%Y%m%d-%H%M%S)-$TOPO-$$}"
mkdir -p "$RUNDIR"; RUNDIR="$(cd "$RUNDIR" && pwd)"
rm -f "$RUNDIR"/{rc,rc.tmp,started,stdout,stderr,console.log,qemu.out,qmp.sock,ttyS1.sock,dmesg.txt,guest-timings,host-timings,qmp-relay.log}

# The job: environment, cwd, then exec the command (runs under the guest's bash, from the host root).
{
  echo '#!/bin/bash'
  for v in PATH HOME LANG LC_ALL TERM TZ NODE_OPTIONS ${KT_PASS_ENV:-}; do
    [[ -n "${!v+x}" ]] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  for v in $(compgen -v TOPO_); do   # the topology's scalar settings (TOPO_CHECKS, bus ids ...)
    [[ "$(declare -p "$v")" == "declare --"* ]] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  printf 'export KT_GUEST=1 KT_RUNDIR=%q KT_TOPOLOGY=%q KT_QMP_TTY=/dev/ttyS1\n' "$RUNDIR" "$TOPO"
  printf 'cd %q || exit 125\n' "$KT_REPO"
  printf 'exec'; printf ' %q' "$@"; echo
} > "$RUNDIR/job.sh"

ACCEL="${KT_ACCEL:-$(cat "$KT_CACHE/accel" 2>/dev/null || echo tcg)}"
if [[ "$ACCEL" == kvm ]]; then CPU=(-accel kvm -cpu host); else CPU=(-accel tcg,thread=multi,tb-size=256 -cpu max); fi
# no_timer_check: under TCG on a busy host the IO-APIC timer check can miss its window and panic.
CMDLINE="console=ttyS0 loglevel=4 panic=-1 oops=panic no_timer_check intel_iommu=on iommu=pt kt.run=$RUNDIR kt.kmod=$KT_CACHE/kernel/lib/modules/$KVER kt.drivers=${KT_DRIVERS:-1} $TOPO_CMDLINE ${KT_CMDLINE:-}"
# Harness devices sit at fixed slots on pcie.0 so no topology collides with them: 00:18.0 = the host
# root (the guest's root fs: never assign it), 00:19.0 = the run dir. The vIOMMU comes first.
QEMU=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
  "${CPU[@]}" -machine q35,kernel-irqchip=split -smp "${KT_SMP:-2}" -m "${KT_MEM:-2048}"
  -device intel-iommu,intremap=on,caching-mode=on
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0,addr=0x18
  -fsdev local,id=run,path="$RUNDIR",security_model=none,multidevs=remap
  -device virtio-9p-pci,fsdev=run,mount_tag=run,bus=pcie.0,addr=0x19
  -kernel "$KT_VMLINUX" -initrd "$KT_INITRD" -append "$CMDLINE"
  -chardev file,id=con,path="$RUNDIR/console.log" -serial chardev:con
  -chardev socket,id=qmpline,path="$RUNDIR/ttyS1.sock",server=on,wait=off -serial chardev:qmpline
  -qmp unix:"$RUNDIR/qmp.sock",server=on,wait=off
  "${TOPO_ARGS[@]}")
# shellcheck disable=SC2206
EXTRA=(${KT_QEMU_EXTRA:-}); QEMU+=("${EXTRA[@]}")
printf '%q ' "${QEMU[@]}" > "$RUNDIR/qemu-cmdline.txt"; echo >> "$RUNDIR/qemu-cmdline.txt"

T0=$(date +%s%N)
node "$KT_DIR/lib/qmp-relay.mjs" "$RUNDIR/qmp.sock" "$RUNDIR/ttyS1.sock" "$RUNDIR/qmp-relay.log" 2>>"$RUNDIR/qmp-relay.log" &
RELAY=$!
TAIL=""
if [[ "${KT_CONSOLE:-0}" == 1 ]]; then : > "$RUNDIR/console.log"; tail -n +1 -F "$RUNDIR/console.log" >&2 2>/dev/null & TAIL=$!; fi
timeout -k 5 "${KT_TIMEOUT:-1800}" "${QEMU[@]}" > "$RUNDIR/qemu.out" 2>&1
QRC=$?
T1=$(date +%s%N)
kill "$RELAY" 2>/dev/null; wait "$RELAY" 2>/dev/null
[[ -n "$TAIL" ]] && { sleep 0.2; kill "$TAIL" 2>/dev/null; wait "$TAIL" 2>/dev/null; }
printf 'accel=%s total_ms=%d qemu_rc=%d\n' "$ACCEL" $(( (T1 - T0) / 1000000 )) "$QRC" > "$RUNDIR/host-timings"

[[ -f "$RUNDIR/stdout" ]] && cat "$RUNDIR/stdout"
[[ -f "$RUNDIR/stderr" ]] && cat "$RUNDIR/stderr" >&2
if [[ -f "$RUNDIR/rc" ]]; then exit "$(cat "$RUNDIR/rc")"; fi
if [[ $QRC == 124 || $QRC == 137 ]]; then echo "boot: TIMEOUT after ${KT_TIMEOUT:-1800}s ($RUNDIR/console.log)" >&2; exit 124; fi
echo "boot: the guest did not finish the command (qemu rc=$QRC); see $RUNDIR/console.log, qemu.out" >&2
tail -n 15 "$RUNDIR/qemu.out" "$RUNDIR/console.log" >&2 2>/dev/null
exit 125

# shellcheck shell=bash disable=SC2034
# Topology "switch": switches in every position (QEMU's switch ports have no ACS capability).
#   00:1c.0-.1  2 root ports with ACS in one multifunction slot:
#      1c.0 -> switch A: DSP1 -> multifunction endpoint e1000e .0 / e1000e .1
#                        DSP2 -> switch B (nested): DSP -> nvme, DSP -> virtio-net
#                        DSP3 -> pcie-pci-bridge -> e1000 @1, rtl8139 @2
#      1c.1 -> e1000e
#   00:05.0     root port, no ACS -> switch C: 2 DSPs -> e1000e, e1000e (one group with the port)
#   00:06.0     root port, ACS on, empty, hotplug-capable
#   00:0a.0-.1  integrated multifunction on pcie.0: virtio-net .0 / virtio-rng .1 (no ACS: one group)
TOPO_ARGS=(
  -device pcie-root-port,id=ra,bus=pcie.0,addr=0x1c.0,multifunction=on,chassis=1,slot=1
  -device pcie-root-port,id=rb,bus=pcie.0,addr=0x1c.1,chassis=2,slot=2
  -device x3130-upstream,id=swa,bus=ra
  -device xio3130-downstream,id=swa1,bus=swa,chassis=11,slot=1
  -device xio3130-downstream,id=swa2,bus=swa,chassis=12,slot=2
  -device xio3130-downstream,id=swa3,bus=swa,chassis=13,slot=3
  -device e1000e,bus=swa1,addr=0x0.0,multifunction=on,mac=52:54:00:40:01:00
  -device e1000e,bus=swa1,addr=0x0.1,mac=52:54:00:40:01:01
  -device x3130-upstream,id=swb,bus=swa2
  -device xio3130-downstream,id=swb1,bus=swb,chassis=21,slot=1
  -device xio3130-downstream,id=swb2,bus=swb,chassis=22,slot=2
  -device nvme,bus=swb1,serial=kt-nvme-swb
  -device virtio-net-pci,bus=swb2,mac=52:54:00:40:02:02
  -device pcie-pci-bridge,id=swppb,bus=swa3
  -device e1000,bus=swppb,addr=0x1,mac=52:54:00:40:03:01
  -device rtl8139,bus=swppb,addr=0x2,mac=52:54:00:40:03:02
  -device e1000e,bus=rb,mac=52:54:00:40:04:00
  -device pcie-root-port,id=rc,bus=pcie.0,addr=0x5,chassis=3,slot=5,disable-acs=on
  -device x3130-upstream,id=swc,bus=rc
  -device xio3130-downstream,id=swc1,bus=swc,chassis=31,slot=1
  -device xio3130-downstream,id=swc2,bus=swc,chassis=32,slot=2
  -device e1000e,bus=swc1,mac=52:54:00:40:05:01
  -device e1000e,bus=swc2,mac=52:54:00:40:05:02
  -device pcie-root-port,id=rp_hot,bus=pcie.0,addr=0x6,chassis=4,slot=6
  -device virtio-net-pci,bus=pcie.0,addr=0xa.0,multifunction=on,mac=52:54:00:40:0a:00
  -device virtio-rng-pci,bus=pcie.0,addr=0xa.1
)
TOPO_CHECKS="devices groups reset assign-switch"

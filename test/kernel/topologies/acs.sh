# shellcheck shell=bash disable=SC2034
# Topology "acs": root ports with ACS (QEMU's pcie-root-port default), and one of every bridge kind.
# Used by the group comparison and by the assign / partial / crash / guard / contexts checks.
#   00:01.0        virtio-net, integrated endpoint on pcie.0
#   00:02.0-.2     integrated multifunction: e1000e (Intel RCiEP: ACS quirk, alone) / virtio-rng / HDA
#   00:03.0        conventional pci-bridge "pcibr1" -> e1000 @1, rtl8139 @2, lsi53c895a @3 (one group)
#   00:10.0-.7     pcie-root-port x8 in one multifunction slot, ACS on:
#      .0 nvme  .1 virtio-blk  .2 switch (x3130-upstream, 3 xio3130-downstream: e1000e, virtio-net, empty)
#      .3 pcie-pci-bridge "ppb1" -> e1000 @1, rtl8139 @2, ne2k_pci @3 (one group: the multi-device group
#         behind a bridge that the assign and guard checks hand out)
#      .4 multifunction endpoint e1000e / virtio-net / virtio-serial   .5 qemu-xhci
#      .6 empty hotplug-capable root port "rp_hot"   .7 vmxnet3 behind a hotplug=off port
#   00:18.0 / 00:19.0 harness 9p devices (never assigned)
TOPO_ARGS=(
  -blockdev driver=null-co,node-name=null0,size=67108864
  -device virtio-net-pci,bus=pcie.0,addr=0x1,mac=52:54:00:10:01:00
  -device e1000e,bus=pcie.0,addr=0x2.0,multifunction=on,mac=52:54:00:10:02:00
  -device virtio-rng-pci,bus=pcie.0,addr=0x2.1
  -device ich9-intel-hda,bus=pcie.0,addr=0x2.2
  -device pci-bridge,id=pcibr1,bus=pcie.0,addr=0x3,chassis_nr=1
  -device e1000,bus=pcibr1,addr=0x1,mac=52:54:00:10:03:01
  -device rtl8139,bus=pcibr1,addr=0x2,mac=52:54:00:10:03:02
  -device lsi53c895a,bus=pcibr1,addr=0x3
  -device pcie-root-port,id=rp1,bus=pcie.0,addr=0x10.0,multifunction=on,chassis=1,slot=1
  -device pcie-root-port,id=rp2,bus=pcie.0,addr=0x10.1,chassis=2,slot=2
  -device pcie-root-port,id=rp3,bus=pcie.0,addr=0x10.2,chassis=3,slot=3
  -device pcie-root-port,id=rp4,bus=pcie.0,addr=0x10.3,chassis=4,slot=4
  -device pcie-root-port,id=rp5,bus=pcie.0,addr=0x10.4,chassis=5,slot=5
  -device pcie-root-port,id=rp6,bus=pcie.0,addr=0x10.5,chassis=6,slot=6
  -device pcie-root-port,id=rp_hot,bus=pcie.0,addr=0x10.6,chassis=7,slot=7,hotplug=on
  -device pcie-root-port,id=rp8,bus=pcie.0,addr=0x10.7,chassis=8,slot=8,hotplug=off
  -device nvme,bus=rp1,serial=kt-nvme1
  -device virtio-blk-pci,bus=rp2,drive=null0
  -device x3130-upstream,id=sw1up,bus=rp3
  -device xio3130-downstream,id=sw1dn1,bus=sw1up,chassis=11,slot=1
  -device xio3130-downstream,id=sw1dn2,bus=sw1up,chassis=12,slot=2
  -device xio3130-downstream,id=sw1dn3,bus=sw1up,chassis=13,slot=3
  -device e1000e,bus=sw1dn1,mac=52:54:00:10:11:01
  -device virtio-net-pci,bus=sw1dn2,mac=52:54:00:10:11:02
  -device pcie-pci-bridge,id=ppb1,bus=rp4
  -device e1000,bus=ppb1,addr=0x1,mac=52:54:00:10:04:01
  -device rtl8139,bus=ppb1,addr=0x2,mac=52:54:00:10:04:02
  -device ne2k_pci,bus=ppb1,addr=0x3,mac=52:54:00:10:04:03
  -device e1000e,bus=rp5,addr=0x0.0,multifunction=on,mac=52:54:00:10:05:00
  -device virtio-net-pci,bus=rp5,addr=0x0.1,mac=52:54:00:10:05:01
  -device virtio-serial-pci,bus=rp5,addr=0x0.2
  -device qemu-xhci,bus=rp6
  -device vmxnet3,bus=rp8,mac=52:54:00:10:08:00
)
# QEMU ids the guard check hot-plugs onto (bus of the assigned group / an unassigned bridge / empty port).
TOPO_GUARD_BUS=ppb1
TOPO_OTHER_BUS=pcibr1
TOPO_EMPTY_PORT=rp_hot
TOPO_CHECKS="devices groups reset vfio-raw partial assign crash contexts guard hotplug-raw kubelet"

# shellcheck shell=bash disable=SC2034
# Topology "noacs": root ports without ACS (pcie-root-port,disable-acs=on), so groups merge upward.
#   00:1c.0-.3  4 root ports in one multifunction slot, no ACS: nvme / e1000e / virtio-net / (empty, hotplug)
#               -> the ports alias each other: all 4 + their endpoints form one group
#   00:04.0     root port, no ACS -> switch (2 downstream ports: e1000e, virtio-blk): one group with the port
#   00:05.0     root port, no ACS -> multifunction endpoint e1000e .0 + e1000e .1
#   00:06.0     root port, ACS on (contrast) -> pcie-pci-bridge -> e1000 @1, rtl8139 @2
#   00:07.0     root port, ACS on, empty, hotplug-capable
#   00:08.0     conventional pci-bridge -> i6300esb @1, pcnet @2, e1000 @3
#   00:0a.0 virtio-net, 00:0b.0 e1000e: integrated endpoints on pcie.0
TOPO_ARGS=(
  -blockdev driver=null-co,node-name=null0,size=67108864
  -device pcie-root-port,id=na1,bus=pcie.0,addr=0x1c.0,multifunction=on,chassis=1,slot=1,disable-acs=on
  -device pcie-root-port,id=na2,bus=pcie.0,addr=0x1c.1,chassis=2,slot=2,disable-acs=on
  -device pcie-root-port,id=na3,bus=pcie.0,addr=0x1c.2,chassis=3,slot=3,disable-acs=on
  -device pcie-root-port,id=na4,bus=pcie.0,addr=0x1c.3,chassis=4,slot=4,disable-acs=on
  -device nvme,bus=na1,serial=kt-nvme-na1
  -device e1000e,bus=na2,mac=52:54:00:20:02:00
  -device virtio-net-pci,bus=na3,mac=52:54:00:20:03:00
  -device pcie-root-port,id=nb1,bus=pcie.0,addr=0x4,chassis=5,slot=5,disable-acs=on
  -device x3130-upstream,id=swup,bus=nb1
  -device xio3130-downstream,id=swdn1,bus=swup,chassis=21,slot=1
  -device xio3130-downstream,id=swdn2,bus=swup,chassis=22,slot=2
  -device e1000e,bus=swdn1,mac=52:54:00:20:21:00
  -device virtio-blk-pci,bus=swdn2,drive=null0
  -device pcie-root-port,id=nb2,bus=pcie.0,addr=0x5,chassis=6,slot=6,disable-acs=on
  -device e1000e,bus=nb2,addr=0x0.0,multifunction=on,mac=52:54:00:20:06:00
  -device e1000e,bus=nb2,addr=0x0.1,mac=52:54:00:20:06:01
  -device pcie-root-port,id=ra1,bus=pcie.0,addr=0x6,chassis=7,slot=7
  -device pcie-pci-bridge,id=ppb,bus=ra1
  -device e1000,bus=ppb,addr=0x1,mac=52:54:00:20:07:01
  -device rtl8139,bus=ppb,addr=0x2,mac=52:54:00:20:07:02
  -device pcie-root-port,id=rp_hot,bus=pcie.0,addr=0x7,chassis=8,slot=8
  -device pci-bridge,id=pcibr1,bus=pcie.0,addr=0x8,chassis_nr=9
  -device i6300esb,bus=pcibr1,addr=0x1
  -device pcnet,bus=pcibr1,addr=0x2,mac=52:54:00:20:08:02
  -device e1000,bus=pcibr1,addr=0x3,mac=52:54:00:20:08:03
  -device virtio-net-pci,bus=pcie.0,addr=0xa,mac=52:54:00:20:0a:00
  -device e1000e,bus=pcie.0,addr=0xb,mac=52:54:00:20:0b:00
)
TOPO_CHECKS="devices groups reset assign-switch"

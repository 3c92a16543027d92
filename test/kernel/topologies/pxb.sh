# shellcheck shell=bash disable=SC2034
# Topology "pxb": a second root bus (pxb-pcie expander, bus 0x40) next to pcie.0, with ACS and non-ACS
# root ports on it, a switch, a PCIe-to-PCI bridge, and bridges nested in bridges.
#   pcie.0 00:04.0  pxb-pcie "pxb1" (bus_nr 0x40), its root ports:
#      40:00.0 rp, ACS on  -> nvme
#      40:01.0 rp, ACS on  -> switch -> DSP1: e1000e, DSP2: pcie-pci-bridge -> e1000 @1, rtl8139 @2
#      40:02.0 rp, no ACS  -> multifunction endpoint e1000e .0 / virtio-net .1
#      40:03.0 rp, ACS on, empty, hotplug-capable
#   pcie.0 00:05.0  root port, ACS on -> pcie-pci-bridge -> pci-bridge (nested) -> e1000 @1, rtl8139 @2
#                                                        and e1000 @2 on the pcie-pci-bridge itself
#   pcie.0 00:06.0  pci-bridge -> pci-bridge (nested) -> e1000 @1 ; ne2k_pci @2 on the outer bridge
#   pcie.0 00:07.0  e1000e integrated
TOPO_ARGS=(
  -device pxb-pcie,id=pxb1,bus_nr=0x40,bus=pcie.0,addr=0x4
  -device pcie-root-port,id=xr0,bus=pxb1,addr=0x0,chassis=30,slot=0
  -device pcie-root-port,id=xr1,bus=pxb1,addr=0x1,chassis=31,slot=1
  -device pcie-root-port,id=xr2,bus=pxb1,addr=0x2,chassis=32,slot=2,disable-acs=on
  -device pcie-root-port,id=xr3,bus=pxb1,addr=0x3,chassis=33,slot=3
  -device nvme,bus=xr0,serial=kt-nvme-pxb
  -device x3130-upstream,id=xsw,bus=xr1
  -device xio3130-downstream,id=xswd1,bus=xsw,chassis=34,slot=1
  -device xio3130-downstream,id=xswd2,bus=xsw,chassis=35,slot=2
  -device e1000e,bus=xswd1,mac=52:54:00:30:01:00
  -device pcie-pci-bridge,id=xppb,bus=xswd2
  -device e1000,bus=xppb,addr=0x1,mac=52:54:00:30:02:01
  -device rtl8139,bus=xppb,addr=0x2,mac=52:54:00:30:02:02
  -device e1000e,bus=xr2,addr=0x0.0,multifunction=on,mac=52:54:00:30:03:00
  -device virtio-net-pci,bus=xr2,addr=0x0.1,mac=52:54:00:30:03:01
  -device pcie-root-port,id=r5,bus=pcie.0,addr=0x5,chassis=1,slot=5
  -device pcie-pci-bridge,id=ppb5,bus=r5
  -device pci-bridge,id=nest5,bus=ppb5,addr=0x1,chassis_nr=2
  -device e1000,bus=ppb5,addr=0x2,mac=52:54:00:30:05:02
  -device e1000,bus=nest5,addr=0x1,mac=52:54:00:30:05:11
  -device rtl8139,bus=nest5,addr=0x2,mac=52:54:00:30:05:12
  -device pci-bridge,id=br6,bus=pcie.0,addr=0x6,chassis_nr=3
  -device pci-bridge,id=nest6,bus=br6,addr=0x1,chassis_nr=4
  -device ne2k_pci,bus=br6,addr=0x2,mac=52:54:00:30:06:02
  -device e1000,bus=nest6,addr=0x1,mac=52:54:00:30:06:11
  -device e1000e,bus=pcie.0,addr=0x7,mac=52:54:00:30:07:00
)
TOPO_CHECKS="devices groups reset assign"

// Every path below a root that isogroup reads or writes, spelled once. Root-relative, no leading "/":
// a port joins them to its root. Only values that were validated (a Bdf, a group number, a driver
// name read from sysfs) are ever put into a path.

import type { Bdf } from '../model/bdf.js';

// ---- the PCI bus (drivers/pci/pci-sysfs.c, drivers/pci/pci-driver.c)
export const PCI_BUS = 'sys/bus/pci';
export const PCI_DEVICES = `${PCI_BUS}/devices`;
export const PCI_DRIVERS = `${PCI_BUS}/drivers`;
export const PCI_SLOTS = `${PCI_BUS}/slots`;
export const PCI_DRIVERS_PROBE = `${PCI_BUS}/drivers_probe`;
export const PCI_DRIVERS_AUTOPROBE = `${PCI_BUS}/drivers_autoprobe`;
export const PCI_RESCAN = `${PCI_BUS}/rescan`;

/** The bus's link to a device's directory. */
export const pciDevice = (bdf: Bdf | string): string => `${PCI_DEVICES}/${bdf}`;
/** A device attribute through the bus link (driver, driver_override, iommu_group, remove, sriov_numvfs, ...). */
export const pciDeviceFile = (bdf: Bdf | string, attr: string): string => `${PCI_DEVICES}/${bdf}/${attr}`;
export const pciDriver = (driver: string): string => `${PCI_DRIVERS}/${driver}`;
/** A driver's control files: bind, unbind, new_id, remove_id. */
export const pciDriverFile = (driver: string, op: 'bind' | 'unbind' | 'new_id' | 'remove_id'): string => `${PCI_DRIVERS}/${driver}/${op}`;
/** Which driver control file a path names, or null. */
export const parsePciDriverFile = (rel: string): { driver: string; op: 'bind' | 'unbind' | 'new_id' | 'remove_id' } | null => {
  const m = /^sys\/bus\/pci\/drivers\/([^/]+)\/(bind|unbind|new_id|remove_id)$/.exec(rel);
  return m ? { driver: m[1]!, op: m[2] as 'bind' | 'unbind' | 'new_id' | 'remove_id' } : null;
};
/** The driver's link back to a device it has bound. */
export const pciDriverDevice = (driver: string, bdf: Bdf | string): string => `${PCI_DRIVERS}/${driver}/${bdf}`;

// ---- the device tree
export const SYS_DEVICES = 'sys/devices';
export const isDeviceTreePath = (rel: string): boolean => rel.startsWith(`${SYS_DEVICES}/`);
export const VIRTUAL_IOMMU = `${SYS_DEVICES}/virtual/iommu`;
export const virtualIommu = (unit: string): string => `${VIRTUAL_IOMMU}/${unit}`;
export const virtualIommuDevice = (unit: string, bdf: Bdf | string): string => `${VIRTUAL_IOMMU}/${unit}/devices/${bdf}`;

// ---- IOMMU groups and units (drivers/iommu/iommu.c)
export const IOMMU_GROUPS = 'sys/kernel/iommu_groups';
export const iommuGroup = (id: string): string => `${IOMMU_GROUPS}/${id}`;
export const iommuGroupDevices = (id: string): string => `${IOMMU_GROUPS}/${id}/devices`;
export const iommuGroupDevice = (id: string, bdf: Bdf | string): string => `${IOMMU_GROUPS}/${id}/devices/${bdf}`;
export const iommuGroupFile = (id: string, name: 'type' | 'reserved_regions'): string => `${IOMMU_GROUPS}/${id}/${name}`;
export const IOMMU_CLASS = 'sys/class/iommu';
export const iommuUnit = (unit: string): string => `${IOMMU_CLASS}/${unit}`;
/** Intel VT-d capability registers (cap, ecap). */
export const intelIommuRegister = (unit: string, reg: 'cap' | 'ecap'): string => `${IOMMU_CLASS}/${unit}/intel-iommu/${reg}`;

// ---- modules
export const moduleParameters = (module: string): string => `sys/module/${module.replace(/-/g, '_')}/parameters`;
export const isModulePath = (rel: string): boolean => rel.startsWith('sys/module/');
export const sysClass = (name: string): string => `sys/class/${name}`;

// ---- VFIO character devices (drivers/vfio/group.c, container.c)
export const VFIO_DEV = 'dev/vfio';
export const VFIO_CONTAINER = `${VFIO_DEV}/vfio`;
export const vfioGroup = (id: string): string => `${VFIO_DEV}/${id}`;
// iommufd and the per-device VFIO character devices (drivers/iommu/iommufd, drivers/vfio/device_cdev.c),
// where the kernel has them (CONFIG_IOMMUFD, CONFIG_VFIO_DEVICE_CDEV).
export const IOMMUFD_DEV = 'dev/iommu';
export const vfioDeviceCdev = (name: string): string => `${VFIO_DEV}/devices/${name}`;
/** A device's vfio-dev/ directory: its entry names the device's cdev (vfioX). */
export const pciDeviceVfioDev = (bdf: Bdf | string): string => `${PCI_DEVICES}/${bdf}/vfio-dev`;

// ---- what the host uses (host-use checks)
export const BLOCK = 'sys/block';
export const block = (disk: string): string => `${BLOCK}/${disk}`;
export const NET_CLASS = 'sys/class/net';
export const netInterfaceFile = (iface: string, name: 'flags' | 'operstate'): string => `${NET_CLASS}/${iface}/${name}`;
export const GRAPHICS_CLASS = 'sys/class/graphics';
export const PROC_MOUNTS = 'proc/mounts';
export const PROC_SWAPS = 'proc/swaps';
export const PROC_NET_ROUTE = 'proc/net/route';
export const PROC_NET_IPV6_ROUTE = 'proc/net/ipv6_route';
export const PROC_NET_IF_INET6 = 'proc/net/if_inet6';

// ---- the kernel release: a capture's meta/uname, else the running kernel's
export const KERNEL_RELEASE_FILES = ['meta/uname', 'proc/sys/kernel/osrelease'] as const;
export const META = 'meta';
export const meta = (name: string): string => `${META}/${name}`;

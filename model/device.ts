import type { Bdf } from './bdf.js';
import type { AcsInfo, Capability, ExtCapability, PortType, ResetCaps, SriovInfo } from './config-space.js';

export interface Problem {
  /** What went wrong, as a stable code. */
  code: string;
  /** Root-relative file the problem was found in, when there is one. */
  file?: string;
  message: string;
}

export interface PciDevice {
  bdf: Bdf;
  domain: number;
  bus: number;
  slot: number;
  function: number;
  vendor: string;
  device: string;
  subsystemVendor: string | null;
  subsystemDevice: string | null;
  class: string;
  revision: string | null;
  vendorName: string | null;
  deviceName: string | null;
  className: string | null;
  driver: string | null;
  driverOverride: string | null;
  /** vfio-pci or a variant (a vfio-dev/ child marks one). */
  vfioDriver: boolean;
  kernelGroup: string | null;
  iommu: string | null;
  numaNode: number | null;
  headerType: number | null;
  headerLayout: 'normal' | 'bridge' | 'cardbus' | 'unknown';
  isBridge: boolean;
  portType: PortType;
  pcieTypeCode: number | null;
  multifunction: boolean;
  secondaryBus: number | null;
  subordinateBus: number | null;
  acs: AcsInfo | null;
  /** True when config space was long enough to know whether an ACS capability exists. */
  acsKnown: boolean;
  ari: boolean;
  ariEnabled: boolean | null;
  sriov: (SriovInfo & { driversAutoprobe: boolean | null; sysfsNumVfs: number | null; sysfsTotalVfs: number | null }) | null;
  physfn: Bdf | null;
  virtfns: Bdf[];
  isVirtfn: boolean;
  /** The kernel's `reset_method` as read, in its order; null when the device has no such file (groups/reset.ts says what that means). */
  resetMethods: string[] | null;
  /** The `reset` attribute exists: the kernel can reset the function some way (every kernel; the only hint before 5.15). */
  resetFile: boolean;
  /** What config space says about resets; null when it stops before the capability list. */
  resetCaps: ResetCaps | null;
  bootVga: boolean | null;
  parent: Bdf | null;
  /** Bus this device sits on, "DDDD:BB". */
  busId: string;
  /** Root bus directory, e.g. "pci0000:00". */
  rootBus: string;
  /** For devices behind a VMD (or similar) host bridge that is itself a PCI device. */
  hostBridgeDevice: Bdf | null;
  sysfsPath: string;
  configSize: number;
  capabilities: Capability[];
  extCapabilities: ExtCapability[];
  problems: Problem[];
}

export interface KernelGroup {
  id: string;
  devices: Bdf[];
  type: string | null;
  reservedRegions: ReservedRegion[];
}

export interface ReservedRegion {
  start: bigint;
  end: bigint;
  type: string;
}

export interface IommuUnit {
  name: string;
  kind: 'intel' | 'amd' | 'arm-smmu' | 'virtio' | 'other';
  devices: Bdf[];
}

export interface HostSnapshot {
  root: string;
  devices: Map<Bdf, PciDevice>;
  kernelGroups: Map<string, KernelGroup>;
  iommuUnits: Map<string, IommuUnit>;
  /** Raw config bytes per device (kept out of the JSON model). */
  config: Map<Bdf, Uint8Array>;
  iommuEnabled: boolean;
  driversAutoprobe: boolean | null;
  problems: Problem[];
  /** Threads that read the devices (2 on large hosts; absent: a snapshot not read by scanHost). */
  scanThreads?: number;
}

/** What the hotplug guard decides a device by: a scanned PciDevice, or the daemon's lighter read of the same fields on a hint. */
export type GuardDeviceState = Pick<PciDevice, 'bdf' | 'isBridge' | 'driver' | 'vfioDriver' | 'driverOverride'> & {
  sriov: { totalVfs: number; driversAutoprobe: boolean | null } | null;
};

import { IsogroupError } from '../errors.js';
import type { DeviceReset, GroupReset } from '../groups/reset.js';
import { type Bdf, parseBdfLoose } from '../model/bdf.js';
import { hex } from '../model/config-space.js';
import type { HostSnapshot, PciDevice, Problem } from '../model/device.js';
import { type DeviceGroupInfo, deriveForHost, groupOfDevice, kernelGroupOf, resetsForHost } from './groups.js';
import { scan, viewOf } from './read.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export interface DeviceJson {
  bdf: string;
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
  vfioDriver: boolean;
  kernelGroup: string | null;
  iommu: string | null;
  numaNode: number | null;
  portType: string;
  headerType: string | null;
  isBridge: boolean;
  multifunction: boolean;
  secondaryBus: string | null;
  subordinateBus: string | null;
  acs: { offset: string; cap: string; ctrl: string; capBits: string[]; ctrlBits: string[] } | null;
  acsKnown: boolean;
  ari: boolean;
  sriov: { totalVfs: number; numVfs: number; vfDeviceId: string; driversAutoprobe: boolean | null } | null;
  physfn: string | null;
  virtfns: string[];
  isVirtfn: boolean;
  /** The reset methods the kernel tries, in its order, with reset_method's names. */
  resetMethods: string[];
  /** kernel: reset_method (or its absence on a kernel that has it); derived: computed from config space, topology and quirk tables. */
  resetSource: 'kernel' | 'derived';
  /** isogroup's derivation, also when the kernel gave its own; null when config space is too short. */
  resetDerived: string[] | null;
  /** Where the kernel's methods and the derived ones differ, and why that may be. */
  resetDiffers: string[];
  /** How VFIO can reset this function without touching another device: function, pm, bus (alone on its bus) or none. */
  resetAlone: DeviceReset['alone'];
  /** What a bus or slot reset of its bus resets (itself included); empty when neither is possible. */
  resetScope: string[];
  bootVga: boolean | null;
  parent: string | null;
  rootBus: string;
  configSize: number;
  sysfsPath: string;
  problems: Problem[];
}

export const deviceJson = (d: PciDevice, reset: DeviceReset): DeviceJson => ({
  bdf: d.bdf,
  vendor: d.vendor,
  device: d.device,
  subsystemVendor: d.subsystemVendor,
  subsystemDevice: d.subsystemDevice,
  class: d.class,
  revision: d.revision,
  vendorName: d.vendorName,
  deviceName: d.deviceName,
  className: d.className,
  driver: d.driver,
  driverOverride: d.driverOverride,
  vfioDriver: d.vfioDriver,
  kernelGroup: d.kernelGroup,
  iommu: d.iommu,
  numaNode: d.numaNode,
  portType: d.portType,
  headerType: d.headerType === null ? null : hex(d.headerType, 2),
  isBridge: d.isBridge,
  multifunction: d.multifunction,
  secondaryBus: d.secondaryBus === null ? null : hex(d.secondaryBus, 2),
  subordinateBus: d.subordinateBus === null ? null : hex(d.subordinateBus, 2),
  acs: d.acs ? { offset: hex(d.acs.offset, 3), cap: hex(d.acs.cap, 4), ctrl: hex(d.acs.ctrl, 4), capBits: d.acs.capBits, ctrlBits: d.acs.ctrlBits } : null,
  acsKnown: d.acsKnown,
  ari: d.ari,
  sriov: d.sriov
    ? {
        totalVfs: d.sriov.sysfsTotalVfs ?? d.sriov.totalVfs,
        numVfs: d.sriov.sysfsNumVfs ?? d.sriov.numVfs,
        vfDeviceId: d.sriov.vfDeviceId,
        driversAutoprobe: d.sriov.driversAutoprobe,
      }
    : null,
  physfn: d.physfn,
  virtfns: d.virtfns,
  isVirtfn: d.isVirtfn,
  resetMethods: reset.methods,
  resetSource: reset.source,
  resetDerived: reset.derived,
  resetDiffers: reset.differences,
  resetAlone: reset.alone,
  resetScope: reset.scope,
  bootVga: d.bootVga,
  parent: d.parent,
  rootBus: d.rootBus,
  configSize: d.configSize,
  sysfsPath: d.sysfsPath,
  problems: d.problems,
});

export interface DevicesResult {
  root: string;
  iommuEnabled: boolean;
  devices: DeviceJson[];
  problems: Problem[];
  notes: string[];
}

/** Every PCI function of a root, with what could not be read; under an owner's view (--as, a non-root peer) only that owner's. */
export const listDevices = (options: SessionOptions | Session = {}): DevicesResult & { owner?: string } => {
  const s = openSession(options);
  const snap = scan(s);
  const resets = resetsForHost(snap, s);
  const all: DevicesResult = {
    root: snap.root,
    iommuEnabled: snap.iommuEnabled,
    devices: [...snap.devices.values()].map((d) => deviceJson(d, resets.device(d.bdf))),
    problems: snap.problems,
    notes: resets.report.notes,
  };
  const scope = viewOf(s, snap);
  return scope ? { ...all, owner: scope.owner, devices: all.devices.filter((d) => scope.devices.has(d.bdf)), problems: [], notes: [] } : all;
};

/** The bridges from a device up to its root bus, nearest first. */
export const bridgePath = (snap: HostSnapshot, bdf: Bdf): Bdf[] => {
  const out: Bdf[] = [];
  const seen = new Set<Bdf>();
  let cur = snap.devices.get(bdf)?.parent ?? null;
  while (cur && !seen.has(cur)) {
    seen.add(cur);
    out.push(cur);
    cur = snap.devices.get(cur)?.parent ?? null;
  }
  return out;
};

export const requireDevice = (snap: HostSnapshot, bdfText: string): PciDevice => {
  const bdf = parseBdfLoose(bdfText, 'device');
  const d = snap.devices.get(bdf);
  if (!d) throw new IsogroupError('E_NOT_FOUND', `no PCI device ${bdf} under ${snap.root}`, { bdf, root: snap.root });
  return d;
};

export interface ShowResult {
  device: DeviceJson & {
    capabilities: { id: string; name: string; offset: string }[];
    extCapabilities: { id: string; name: string; offset: string; version: number }[];
  };
  path: { bdf: string; portType: string; driver: string | null; acs: DeviceJson['acs'] }[];
  rootBus: string;
  kernelGroup: { id: string; devices: string[] } | null;
  /** The device's kernel and derived group and the rule that put it there. */
  groups: DeviceGroupInfo;
  /** How the device's reset methods came about, and what resetting its group takes. */
  reset: { reasons: string[]; scopeWhy: string; group: (GroupReset & { id: string }) | null };
}

/** One device in full: capabilities and the bridge path to its root bus. */
export const showDevice = (bdfText: string, options: SessionOptions | Session = {}): ShowResult => {
  parseBdfLoose(bdfText, 'device'); // refuse a non-BDF before touching the root at all
  const s = openSession(options);
  const snap = scan(s);
  const d = requireDevice(snap, bdfText);
  const group = d.kernelGroup !== null ? snap.kernelGroups.get(d.kernelGroup) : undefined;
  const view = deriveForHost(snap, s);
  const groups = groupOfDevice(snap, s, d.bdf, view);
  const resets = resetsForHost(snap, s, view.kernelRelease);
  const own = resets.device(d.bdf);
  // The group a user would get: the kernel's, else the derived one (a host without an IOMMU yet).
  const resetGroup = group
    ? { id: group.id, ...resets.group(group.devices, kernelGroupOf(snap)) }
    : groups.derived
      ? { id: groups.derived.id, ...resets.group(groups.derived.devices, (b) => view.derived.groupOf.get(b) ?? null) }
      : null;
  return {
    device: {
      ...deviceJson(d, own),
      capabilities: d.capabilities.map((c) => ({ id: hex(c.id, 2), name: c.name, offset: hex(c.offset, 2) })),
      extCapabilities: d.extCapabilities.map((c) => ({ id: hex(c.id, 4), name: c.name, offset: hex(c.offset, 3), version: c.version })),
    },
    path: bridgePath(snap, d.bdf).map((b) => {
      const br = snap.devices.get(b)!;
      return { bdf: b, portType: br.portType, driver: br.driver, acs: deviceJson(br, resets.device(b)).acs };
    }),
    rootBus: d.rootBus,
    kernelGroup: group ? { id: group.id, devices: group.devices } : null,
    groups,
    reset: { reasons: own.reasons, scopeWhy: own.scopeWhy, group: resetGroup },
  };
};

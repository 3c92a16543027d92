// Building a device from what its directory held: config space parsed, attributes checked against it,
// names looked up. Pure (sysfs/read.ts does the reading; the scan helper thread posts RawDevices).

import { type Bdf, busIdOf, isBdf, splitBdf } from './bdf.js';
import { HEADER_BYTES, hex, parseConfigSpace } from './config-space.js';
import type { IommuUnit, PciDevice, Problem, ReservedRegion } from './device.js';
import { isVfioDriverName } from './drivers.js';
import { lookupNames, type PciIds } from './pci-ids.js';

const EMPTY = new Uint8Array(0);

/** driver_override as read (trimmed): "(null)" or empty means none. */
export const overrideValue = (raw: string | null): string | null => (raw === null || raw === '(null)' || raw === '' ? null : raw);

const ID16 = /^0x[0-9a-fA-F]{4}$/;
const CLASS24 = /^0x[0-9a-fA-F]{6}$/;
const ID8 = /^0x[0-9a-fA-F]{2}$/;

const checkedId = (raw: string | null, re: RegExp, fallback: number | null, width: number, attr: string, dir: string, problems: Problem[]): string | null => {
  if (raw !== null && re.test(raw)) return raw.toLowerCase();
  if (raw !== null) {
    const file = `${dir}/${attr}`;
    problems.push({ code: 'bad-attribute', file, message: `${file}: ${JSON.stringify(raw.slice(0, 40))} is not a ${width * 4}-bit hex id` });
  }
  return fallback === null ? null : hex(fallback, width);
};

export const parseIntOrNull = (raw: string | null): number | null => {
  if (raw === null || !/^-?\d+$/.test(raw)) return null;
  return parseInt(raw, 10);
};

const ROOT_BUS = /^pci[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}$/;

// Position in the sysfs device path: parent bridge, root bus, and (for VMD) the host-bridge device.
const topologyOf = (devPath: string): { parent: Bdf | null; rootBus: string; hostBridgeDevice: Bdf | null } => {
  const parts = devPath.split('/');
  let rootIdx = -1;
  for (let i = 0; i < parts.length - 1; i++) if (parts[i]!.startsWith('pci') && ROOT_BUS.test(parts[i]!)) rootIdx = i;
  const self = parts.length - 1;
  const before = parts[self - 1];
  const parent = self - 1 > rootIdx && before !== undefined && isBdf(before) ? (before as Bdf) : null;
  const hb = rootIdx > 0 ? parts[rootIdx - 1] : undefined;
  return { parent, rootBus: rootIdx >= 0 ? parts[rootIdx]! : 'unknown', hostBridgeDevice: hb !== undefined && isBdf(hb) ? (hb as Bdf) : null };
};

/**
 * What one device directory held, read but not yet interpreted: the I/O half of a device scan
 * (buildDevice is the pure half). A scan helper thread posts these, so they hold only strings,
 * numbers, booleans and the config bytes.
 */
export interface RawDevice {
  bdf: Bdf;
  path: string;
  /** null when there is no `config` or it could not be read (configProblem says which). */
  config: Uint8Array | null;
  configProblem: Problem | null;
  /** Attribute texts, trimmed; null when the attribute is absent or unreadable (a problem says which). */
  vendor: string | null;
  device: string | null;
  class: string | null;
  /** Read only when config space has no normal header to give them (pci_setup_device fills them from it). */
  subsystemVendor: string | null;
  subsystemDevice: string | null;
  revision: string | null;
  driverOverride: string | null;
  sriovTotalVfs: string | null;
  sriovNumVfs: string | null;
  hasSriovNumVfs: boolean;
  sriovDriversAutoprobe: string | null;
  ariEnabled: string | null;
  bootVga: string | null;
  numaNode: string | null;
  resetMethod: string | null;
  /** The `reset` attribute exists (write-only: its presence is the fact). */
  resetFile: boolean;
  /** Basenames of the driver, physfn, iommu_group and iommu links; virtfnN in N order. */
  driver: string | null;
  physfn: string | null;
  iommuGroup: string | null;
  iommu: string | null;
  virtfns: string[];
  vfioDev: boolean;
  problems: Problem[];
}

/** A stretch of the device list, read: its devices, and the problems of entries that were not devices. */
export interface RawChunk {
  raws: RawDevice[];
  problems: Problem[];
}

/** The device a RawDevice describes: config space parsed, attributes checked against it, names looked up. Pure. */
export const buildDevice = (raw: RawDevice, pciIds: PciIds | null): PciDevice => {
  const name = raw.bdf;
  const devPath = raw.path;
  const problems: Problem[] = [];
  if (raw.configProblem) problems.push(raw.configProblem);
  const bytes = raw.config ?? EMPTY;
  const cs = parseConfigSpace(bytes);
  for (const p of cs.problems) problems.push({ code: p.code, file: `${devPath}/config`, message: `${devPath}/config: ${p.message}` });
  for (const p of raw.problems) problems.push(p);
  const haveHeader = bytes.length >= HEADER_BYTES;

  const f = (n: string) => `${devPath}/${n}`;
  const vendor = checkedId(raw.vendor, ID16, haveHeader ? cs.vendorId : null, 4, 'vendor', devPath, problems) ?? 'unknown';
  const device = checkedId(raw.device, ID16, haveHeader ? cs.deviceId : null, 4, 'device', devPath, problems) ?? 'unknown';
  const klass = checkedId(raw.class, CLASS24, haveHeader ? cs.classCode : null, 6, 'class', devPath, problems) ?? 'unknown';
  // The kernel fills these from the same config bytes (pci_setup_device) for a normal header, so the
  // files are read only when the header is missing; a bridge's subsystem ids come from a capability instead.
  const fromConfig = haveHeader && cs.layout === 'normal';
  const subsystemVendor = fromConfig
    ? hex(cs.subsystemVendorId!, 4)
    : checkedId(raw.subsystemVendor, ID16, cs.subsystemVendorId, 4, 'subsystem_vendor', devPath, problems);
  const subsystemDevice = fromConfig
    ? hex(cs.subsystemDeviceId!, 4)
    : checkedId(raw.subsystemDevice, ID16, cs.subsystemDeviceId, 4, 'subsystem_device', devPath, problems);
  const revision = haveHeader ? hex(cs.revision, 2) : checkedId(raw.revision, ID8, null, 2, 'revision', devPath, problems);
  if (haveHeader && vendor !== 'unknown' && parseInt(vendor, 16) !== cs.vendorId) {
    problems.push({ code: 'id-mismatch', file: f('vendor'), message: `${f('vendor')} says ${vendor} but config space says ${hex(cs.vendorId, 4)}` });
  }

  const driver = raw.driver;
  const physfnLink = raw.physfn;
  const virtfns = raw.virtfns.filter((b): b is Bdf => isBdf(b));
  const parts = splitBdf(name)!;
  const topo = topologyOf(devPath);
  const names = pciIds ? lookupNames(pciIds, vendor, device, klass, subsystemVendor, subsystemDevice) : null;
  const sysfsTotal = parseIntOrNull(raw.sriovTotalVfs);
  const sysfsNum = parseIntOrNull(raw.sriovNumVfs);
  const autoprobe = raw.sriovDriversAutoprobe;
  const hasSriovFiles = sysfsTotal !== null || raw.hasSriovNumVfs;
  const numa = parseIntOrNull(raw.numaNode);
  const resetRaw = raw.resetMethod;

  return {
    bdf: name,
    domain: parts.domain,
    bus: parts.bus,
    slot: parts.device,
    function: parts.fn,
    vendor,
    device,
    subsystemVendor,
    subsystemDevice,
    class: klass,
    revision,
    vendorName: names?.vendor ?? null,
    deviceName: names?.device ?? null,
    className: names?.className ?? null,
    driver,
    driverOverride: overrideValue(raw.driverOverride),
    vfioDriver: raw.vfioDev || isVfioDriverName(driver),
    kernelGroup: raw.iommuGroup,
    iommu: raw.iommu,
    numaNode: numa === null || numa < 0 ? null : numa,
    headerType: haveHeader ? cs.headerType : null,
    headerLayout: haveHeader ? cs.layout : 'unknown',
    isBridge: cs.layout === 'bridge' || cs.layout === 'cardbus',
    portType: cs.portType,
    pcieTypeCode: cs.pcie?.portTypeCode ?? null,
    multifunction: haveHeader ? cs.multifunction : false,
    secondaryBus: cs.secondaryBus,
    subordinateBus: cs.subordinateBus,
    acs: cs.acs,
    acsKnown: cs.extendedReadable || cs.portType === 'conventional',
    ari: cs.ari !== null,
    ariEnabled: raw.ariEnabled === null ? null : raw.ariEnabled === '1',
    sriov:
      cs.sriov || hasSriovFiles
        ? {
            ...(cs.sriov ?? {
              offset: 0,
              initialVfs: 0,
              totalVfs: sysfsTotal ?? 0,
              numVfs: sysfsNum ?? 0,
              firstVfOffset: 0,
              vfStride: 0,
              vfDeviceId: 'unknown',
              vfEnabled: (sysfsNum ?? 0) > 0,
            }),
            driversAutoprobe: autoprobe === null ? null : autoprobe === '1',
            sysfsNumVfs: sysfsNum,
            sysfsTotalVfs: sysfsTotal,
          }
        : null,
    physfn: physfnLink !== null && isBdf(physfnLink) ? (physfnLink as Bdf) : null,
    virtfns,
    isVirtfn: physfnLink !== null,
    resetMethods: resetRaw === null ? null : resetRaw.split(/\s+/).filter(Boolean),
    resetFile: raw.resetFile,
    resetCaps: cs.reset,
    bootVga: raw.bootVga === null ? null : raw.bootVga === '1',
    parent: topo.parent,
    busId: busIdOf(parts),
    rootBus: topo.rootBus,
    hostBridgeDevice: topo.hostBridgeDevice,
    sysfsPath: devPath,
    configSize: bytes.length,
    capabilities: cs.capabilities,
    extCapabilities: cs.extCapabilities,
    problems,
  };
};

export const parseReservedRegions = (text: string, file: string, problems: Problem[]): ReservedRegion[] => {
  const out: ReservedRegion[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const m = /^(0x[0-9a-fA-F]+)\s+(0x[0-9a-fA-F]+)\s+(\S+)$/.exec(t);
    if (!m) {
      problems.push({ code: 'bad-attribute', file, message: `${file}: cannot parse line ${JSON.stringify(t)}` });
      continue;
    }
    const start = BigInt(m[1]!);
    const end = BigInt(m[2]!);
    if (end < start) {
      problems.push({ code: 'bad-attribute', file, message: `${file}: region ${m[1]}-${m[2]} ends before it starts` });
      continue;
    }
    out.push({ start, end, type: m[3]! });
  }
  return out;
};

export const unitKind = (name: string): IommuUnit['kind'] =>
  name.startsWith('dmar') ? 'intel' : name.startsWith('ivhd') ? 'amd' : /smmu/.test(name) ? 'arm-smmu' : name.startsWith('virtio') ? 'virtio' : 'other';

import { isIsogroupError } from '../errors.js';
import { type Bdf, busIdOf, compareBdf, formatBdf, isBdf, splitBdf } from '../model/bdf.js';
import { HEADER_BYTES, hasNormalHeader, hex, parseConfigSpace } from '../model/config-space.js';
import type { GuardDeviceState, HostSnapshot, IommuUnit, KernelGroup, PciDevice, Problem, ReservedRegion } from '../model/device.js';
import { isVfioDriverName } from '../model/drivers.js';
import { lookupNames, type PciIds } from '../model/pci-ids.js';
import { IOMMU_CLASS, IOMMU_GROUPS, iommuGroup, iommuGroupDevices, isDeviceTreePath, PCI_DEVICES, PCI_DRIVERS_AUTOPROBE, pciDevice } from './paths.js';
import { type DirEntry, type DirReader, type EntryKind, linkTargetRel, NodeSysfsPort, openDir, type SysfsPort } from './port.js';
import { SCAN_CHUNK, startScanHelper } from './scan-helper.js';

const MAX_LINK_HOPS = 8;
const EMPTY = new Uint8Array(0);

export interface ScanOptions {
  /** pci.ids database for names; null disables names. Defaults to none (the CLI loads the host's). */
  pciIds?: PciIds | null;
  /** Threads reading devices: 1, or 2 (a helper reads the group directories, then both claim chunks of the list). Default 2 from PARALLEL_MIN_DEVICES devices on. */
  threads?: 1 | 2;
}

/** From this many devices on, a second thread pays for its start (~50 ms) several times over. */
export const PARALLEL_MIN_DEVICES = 2000;

/** driver_override as read (trimmed): "(null)" or empty means none. */
const overrideValue = (raw: string | null): string | null => (raw === null || raw === '(null)' || raw === '' ? null : raw);

class DeviceGone extends Error {
  /** false when the directory could not even be listed (the link may never have pointed anywhere). */
  constructor(
    dir: string,
    readonly listed = true,
  ) {
    super(dir);
  }
}

const errnoText = (error: unknown): string =>
  isIsogroupError(error) ? String(error.details.errno ?? error.message) : error instanceof Error ? error.message : String(error);

const isGone = (error: unknown): boolean => isIsogroupError(error) && (error.details.errno === 'ENOENT' || error.details.errno === 'ENODEV');

// Follow a chain of symlinks by path arithmetic, reporting dangling and looping links.
export const resolveLink = (port: SysfsPort, rel: string): { path: string } | { problem: Problem } => {
  let current = rel;
  const seen = new Set<string>();
  for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
    const kind = port.kind(current);
    if (kind === null) {
      return hop === 0
        ? { problem: { code: 'missing', file: rel, message: `${rel} does not exist` } }
        : { problem: { code: 'dangling-link', file: rel, message: `${rel} is a dangling symlink (target ${current} does not exist)` } };
    }
    if (kind !== 'link') return { path: current };
    if (seen.has(current)) return { problem: { code: 'link-loop', file: rel, message: `${rel} is a symlink loop` } };
    seen.add(current);
    let target: string;
    try {
      target = port.readLink(current);
    } catch (error) {
      return { problem: { code: 'unreadable-link', file: current, message: `cannot read link ${current}: ${errnoText(error)}` } };
    }
    const next = linkTargetRel(current, target);
    if (next === null) return { problem: { code: 'link-outside-root', file: rel, message: `${rel} points outside the root (${target})` } };
    current = next;
  }
  return { problem: { code: 'link-loop', file: rel, message: `${rel}: more than ${MAX_LINK_HOPS} symlink hops` } };
};

// The common case costs one readlink: the kernel's bus/pci/devices/X is a link straight to a device
// directory. Anything else (dangling, looping, chained, leaving the root) takes the careful path.
const deviceDirOf = (port: SysfsPort, rel: string, kind: DirEntry['kind']): { path: string } | { problem: Problem } => {
  if (kind === 'link') {
    try {
      const next = linkTargetRel(rel, port.readLink(rel));
      if (next !== null && isDeviceTreePath(next)) return { path: next };
    } catch {
      /* classified below */
    }
  }
  return resolveLink(port, rel);
};

/** The last component of a link target ("../../../kernel/iommu_groups/7" -> "7"). */
const basenameOf = (target: string): string | null => {
  let end = target.length;
  while (end > 0 && target.charCodeAt(end - 1) === 47) end--;
  return end === 0 ? null : target.slice(target.lastIndexOf('/', end - 1) + 1, end);
};

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

const parseIntOrNull = (raw: string | null): number | null => {
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

const VIRTFN = /^virtfn(\d+)$/;

// Read a device directory: list it once, then read only the attributes the listing shows.
const readDevice = (port: SysfsPort, bdf: Bdf, dir: string): RawDevice => {
  const reader = openDir(port, dir);
  try {
    return readDeviceWith(port, reader, bdf, dir);
  } finally {
    reader.close();
  }
};

const readDeviceWith = (port: SysfsPort, reader: DirReader, bdf: Bdf, dir: string): RawDevice => {
  let entries: ReadonlyMap<string, EntryKind>;
  try {
    entries = reader.entries();
  } catch (error) {
    if (isGone(error)) throw new DeviceGone(dir, false);
    throw error;
  }
  let virtfnLinks: { n: number; name: string }[] | null = null;
  for (const [name, kind] of entries) {
    if (kind === 'link' && name.startsWith('virtfn')) {
      const m = VIRTFN.exec(name);
      if (m) (virtfnLinks ??= []).push({ n: parseInt(m[1]!, 10), name });
    }
  }
  const problems: Problem[] = [];
  const text = (name: string): string | null => {
    if (!entries.has(name)) return null;
    try {
      return reader.readText(name).trim();
    } catch (error) {
      if (isGone(error) && !port.exists(dir)) throw new DeviceGone(dir);
      problems.push({ code: 'unreadable', file: `${dir}/${name}`, message: `cannot read ${dir}/${name}: ${errnoText(error)}` });
      return null;
    }
  };
  const link = (name: string): string | null => {
    if (entries.get(name) !== 'link') return null;
    try {
      return basenameOf(reader.readLink(name));
    } catch (error) {
      if (isGone(error)) return null;
      problems.push({ code: 'unreadable-link', file: `${dir}/${name}`, message: `cannot read link ${dir}/${name}: ${errnoText(error)}` });
      return null;
    }
  };

  let config: Uint8Array | null = null;
  let configProblem: Problem | null = null;
  if (entries.has('config')) {
    try {
      config = reader.readBytes('config');
    } catch (error) {
      if (isGone(error) && !port.exists(dir)) throw new DeviceGone(dir);
      configProblem = { code: 'unreadable', file: `${dir}/config`, message: `cannot read ${dir}/config: ${errnoText(error)}` };
    }
  } else {
    configProblem = { code: 'no-config', file: `${dir}/config`, message: `${dir}/config is missing: capabilities, port type and ACS unknown` };
  }
  const header = config !== null && config.length >= HEADER_BYTES;
  const normal = header && hasNormalHeader(config!);

  const raw: RawDevice = {
    bdf,
    path: dir,
    config,
    configProblem,
    vendor: text('vendor'),
    device: text('device'),
    class: text('class'),
    subsystemVendor: normal ? null : text('subsystem_vendor'),
    subsystemDevice: normal ? null : text('subsystem_device'),
    revision: header ? null : text('revision'),
    driverOverride: text('driver_override'),
    driver: link('driver'),
    physfn: link('physfn'),
    virtfns: [],
    sriovTotalVfs: text('sriov_totalvfs'),
    sriovNumVfs: text('sriov_numvfs'),
    hasSriovNumVfs: entries.has('sriov_numvfs'),
    sriovDriversAutoprobe: text('sriov_drivers_autoprobe'),
    ariEnabled: text('ari_enabled'),
    bootVga: text('boot_vga'),
    numaNode: text('numa_node'),
    resetMethod: text('reset_method'),
    iommuGroup: null,
    iommu: null,
    vfioDev: entries.has('vfio-dev'),
    problems,
  };
  if (virtfnLinks !== null) {
    virtfnLinks.sort((a, b) => a.n - b.n || (a.name < b.name ? -1 : 1));
    for (const v of virtfnLinks) {
      const target = link(v.name);
      if (target !== null) raw.virtfns.push(target);
    }
  }
  raw.iommuGroup = link('iommu_group');
  raw.iommu = link('iommu');
  return raw;
};

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
    resetMethods: resetRaw ? resetRaw.split(/\s+/).filter(Boolean) : [],
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

/** What a group directory holds, read but not yet checked (a scan helper thread reads these too). */
export interface RawGroup {
  id: string;
  members: { names: string[] } | { error: string; gone: boolean };
  type: string | null;
  reservedRegions: string | null;
}

export const readRawGroup = (port: SysfsPort, id: string): RawGroup => {
  const dir = iommuGroup(id);
  let members: RawGroup['members'];
  const listing = openDir(port, iommuGroupDevices(id));
  try {
    members = { names: listing.list().map((e) => e.name) };
  } catch (error) {
    members = { error: errnoText(error), gone: isGone(error) };
  } finally {
    listing.close();
  }
  const reader = openDir(port, dir);
  const text = (name: string): string | null => {
    try {
      return reader.readText(name);
    } catch {
      return null;
    }
  };
  try {
    return { id, members, type: text('type'), reservedRegions: text('reserved_regions') };
  } finally {
    reader.close();
  }
};

/** The group ids under IOMMU_GROUPS (null: no such directory). */
export const listGroupIds = (port: SysfsPort, problems: Problem[]): string[] | null => {
  if (port.kind(IOMMU_GROUPS) !== 'dir') return null;
  try {
    return port
      .list(IOMMU_GROUPS)
      .map((e) => e.name)
      .filter((n) => /^\d+$/.test(n));
  } catch (error) {
    problems.push({ code: 'unreadable', file: IOMMU_GROUPS, message: `cannot list ${IOMMU_GROUPS}: ${errnoText(error)}` });
    return [];
  }
};

const scanKernelGroups = (
  port: SysfsPort,
  devices: Map<Bdf, PciDevice>,
  problems: Problem[],
  ids: string[] | null,
  raw: Map<string, RawGroup>,
): Map<string, KernelGroup> => {
  const groups = new Map<string, KernelGroup>();
  const ensure = (id: string): KernelGroup => {
    let g = groups.get(id);
    if (!g) {
      g = { id, devices: [], type: null, reservedRegions: [] };
      groups.set(id, g);
    }
    return g;
  };
  // Device links are authoritative for membership; the groups directory adds type and regions.
  for (const d of devices.values()) if (d.kernelGroup !== null) ensure(d.kernelGroup).devices.push(d.bdf);
  // Most groups of a host list the same regions (the MSI window): parse each text once, copy per group.
  // Problems name the group's file, so only a clean text is reused.
  const parsed = new Map<string, ReservedRegion[]>();
  const regionsOf = (text: string, file: string): ReservedRegion[] => {
    let clean = parsed.get(text);
    if (!clean) {
      const found: Problem[] = [];
      const regions = parseReservedRegions(text, file, found);
      if (found.length > 0) {
        for (const p of found) problems.push(p);
        return regions;
      }
      parsed.set(text, (clean = regions));
    }
    return clean.map((region) => ({ ...region }));
  };
  if (ids !== null) {
    for (const name of ids) {
      const dir = iommuGroup(name);
      const r = raw.get(name) ?? readRawGroup(port, name);
      const g = ensure(name);
      if ('names' in r.members) {
        // A Set only for large groups: most hold one or two devices.
        const big = g.devices.length > 16 ? new Set<string>(g.devices) : null;
        for (const e of r.members.names) {
          if (isBdf(e) && !(big ? big.has(e) : g.devices.includes(e as Bdf))) {
            if (!devices.has(e as Bdf)) {
              problems.push({ code: 'group-member-missing', file: `${dir}/devices/${e}`, message: `group ${name} lists ${e}, which is not in ${PCI_DEVICES}` });
            } else {
              problems.push({
                code: 'group-link-mismatch',
                file: `${dir}/devices/${e}`,
                message: `group ${name} lists ${e}, but its iommu_group link says ${devices.get(e as Bdf)!.kernelGroup ?? 'none'}`,
              });
            }
          }
        }
      } else if (!r.members.gone) {
        problems.push({ code: 'unreadable', file: `${dir}/devices`, message: `cannot list ${dir}/devices: ${r.members.error}` });
      }
      g.type = r.type?.trim() || null;
      g.reservedRegions = r.reservedRegions === null ? [] : regionsOf(r.reservedRegions, `${dir}/reserved_regions`);
    }
  } else if (groups.size > 0) {
    problems.push({ code: 'no-groups-dir', file: IOMMU_GROUPS, message: `${IOMMU_GROUPS} is missing; groups taken from the devices' iommu_group links only` });
  }
  for (const g of groups.values()) g.devices.sort(compareBdf);
  return groups;
};

const unitKind = (name: string): IommuUnit['kind'] =>
  name.startsWith('dmar') ? 'intel' : name.startsWith('ivhd') ? 'amd' : /smmu/.test(name) ? 'arm-smmu' : name.startsWith('virtio') ? 'virtio' : 'other';

/** Read the listed device entries (the I/O half of a scan; the main thread and the scan helper both read with this). */
export const readEntries = (port: SysfsPort, entries: readonly DirEntry[]): RawChunk => {
  const raws: RawDevice[] = [];
  const problems: Problem[] = [];
  for (const entry of entries) {
    const parts = splitBdf(entry.name);
    if (parts === null) {
      problems.push({ code: 'bad-entry', file: pciDevice(entry.name), message: `${PCI_DEVICES}/${JSON.stringify(entry.name)} is not a PCI address; skipped` });
      continue;
    }
    const bdf = formatBdf(parts);
    const resolved = deviceDirOf(port, pciDevice(entry.name), entry.kind);
    if ('problem' in resolved) {
      problems.push(resolved.problem);
      continue;
    }
    try {
      raws.push(readDevice(port, bdf, resolved.path));
    } catch (error) {
      // The one-readlink path did not check the target: a dangling or looping link shows up here.
      if (!(error instanceof DeviceGone && error.listed)) {
        const why = resolveLink(port, pciDevice(entry.name));
        if ('problem' in why) {
          problems.push(why.problem);
          continue;
        }
      }
      if (error instanceof DeviceGone) {
        problems.push({ code: 'device-gone', file: resolved.path, message: `${bdf} vanished during the scan; skipped` });
        continue;
      }
      if (isIsogroupError(error)) {
        problems.push({ code: 'unreadable', file: resolved.path, message: `${bdf}: ${error.message}; skipped` });
        continue;
      }
      throw error;
    }
  }
  return { raws, problems };
};

/** Chunk `c` (SCAN_CHUNK entries) of the device list, read: each thread of a two-thread scan reads with this. */
export const readChunk = (port: SysfsPort, entries: readonly DirEntry[], c: number): RawChunk =>
  readEntries(port, entries.slice(c * SCAN_CHUNK, (c + 1) * SCAN_CHUNK));

interface BuiltChunk {
  devices: PciDevice[];
  config: Uint8Array[];
  problems: Problem[];
}

const buildChunk = (chunk: RawChunk, pciIds: PciIds | null): BuiltChunk => {
  const devices: PciDevice[] = [];
  const config: Uint8Array[] = [];
  for (const raw of chunk.raws) {
    devices.push(buildDevice(raw, pciIds));
    config.push(raw.config ?? EMPTY);
  }
  return { devices, config, problems: chunk.problems };
};

/** Read the PCI devices, kernel groups and IOMMU units below a root into one snapshot. */
export const scanHost = (port: SysfsPort, options: ScanOptions = {}): HostSnapshot => {
  const problems: Problem[] = [];
  const devices = new Map<Bdf, PciDevice>();
  const config = new Map<Bdf, Uint8Array>();
  let names: DirEntry[] = [];
  try {
    names = port.list(PCI_DEVICES);
  } catch (error) {
    problems.push({ code: 'no-pci-bus', file: PCI_DEVICES, message: `cannot list ${PCI_DEVICES}: ${errnoText(error)} (is this a Linux root with sysfs?)` });
  }
  const pciIds = options.pciIds ?? null;
  const threads = options.threads ?? (names.length >= PARALLEL_MIN_DEVICES ? 2 : 1);
  let scanThreads = 1;
  const groupProblems: Problem[] = [];
  const groupIds = listGroupIds(port, groupProblems);
  let rawGroups = new Map<string, RawGroup>();
  const chunks: BuiltChunk[] = [];
  if (threads > 1 && port instanceof NodeSysfsPort && names.length > 1) {
    // A second thread (lspci reads with one) reads the group directories, then claims chunks of the
    // device list from a shared counter while this thread does the same. It only reads; this thread
    // builds every device (parsing is cheaper than copying parsed objects between threads) as the
    // helper's chunks arrive, between chunks of its own.
    const helper = startScanHelper(port.root, names, groupIds ?? []);
    const take = (delivered: [number, RawChunk][]): void => {
      for (const [c, chunk] of delivered) chunks[c] = buildChunk(chunk, pciIds);
    };
    for (let c = helper.claim(); c !== null; c = helper.claim()) {
      chunks[c] = buildChunk(readChunk(port, names, c), pciIds);
      take(helper.delivered());
    }
    const { chunks: late, groups, used } = helper.finish();
    take(late);
    if (used) scanThreads = 2;
    rawGroups = new Map(groups.map((g) => [g.id, g]));
    // A chunk the helper claimed but never delivered (it failed or hung) is read here.
    for (let c = 0; c < helper.chunkCount; c++) chunks[c] ??= buildChunk(readChunk(port, names, c), pciIds);
  } else {
    chunks.push(buildChunk(readEntries(port, names), pciIds));
  }
  // In chunk order, as one thread reads them.
  for (const part of chunks) {
    for (let i = 0; i < part.devices.length; i++) {
      const d = part.devices[i]!;
      devices.set(d.bdf, d);
      if (part.config[i]!.length > 0) config.set(d.bdf, part.config[i]!);
    }
    for (const p of part.problems) problems.push(p);
  }
  const sorted = new Map([...devices.entries()].sort(([a], [b]) => compareBdf(a, b)));
  for (const d of sorted.values()) {
    if (d.physfn && sorted.has(d.physfn)) {
      const pf = sorted.get(d.physfn)!;
      if (!pf.virtfns.includes(d.bdf)) pf.virtfns.push(d.bdf);
    }
  }
  problems.push(...groupProblems);
  const kernelGroups = scanKernelGroups(port, sorted, problems, groupIds, rawGroups);
  const iommuUnits = new Map<string, IommuUnit>();
  if (port.kind(IOMMU_CLASS) === 'dir') {
    try {
      for (const e of port.list(IOMMU_CLASS)) iommuUnits.set(e.name, { name: e.name, kind: unitKind(e.name), devices: [] });
    } catch (error) {
      problems.push({ code: 'unreadable', file: IOMMU_CLASS, message: `cannot list ${IOMMU_CLASS}: ${errnoText(error)}` });
    }
  }
  for (const d of sorted.values()) {
    if (d.iommu === null) continue;
    let unit = iommuUnits.get(d.iommu);
    if (!unit) {
      unit = { name: d.iommu, kind: unitKind(d.iommu), devices: [] };
      iommuUnits.set(d.iommu, unit);
    }
    unit.devices.push(d.bdf);
  }
  let driversAutoprobe: boolean | null = null;
  try {
    driversAutoprobe = port.readText(PCI_DRIVERS_AUTOPROBE).trim() === '1';
  } catch {
    driversAutoprobe = null;
  }
  return {
    root: port.root,
    devices: sorted,
    kernelGroups,
    iommuUnits,
    config,
    iommuEnabled: iommuUnits.size > 0 || kernelGroups.size > 0,
    driversAutoprobe,
    problems,
    scanThreads,
  };
};

/** Read just the named devices (the daemon's pass over assigned groups); gone or unreadable ones are left out. */
export const scanDevices = (port: SysfsPort, bdfs: Bdf[]): PciDevice[] => {
  const out: PciDevice[] = [];
  for (const bdf of bdfs) {
    const resolved = resolveLink(port, pciDevice(bdf));
    if ('problem' in resolved) continue;
    try {
      out.push(buildDevice(readDevice(port, bdf, resolved.path), null));
    } catch (error) {
      if (error instanceof DeviceGone || isIsogroupError(error)) continue;
      throw error;
    }
  }
  return out;
};

/**
 * The fields the hotplug guard decides a device by, read as scanDevice reads them but with a handful of
 * reads instead of the device's whole directory (the daemon's path from a hint to its decision).
 * null: the device is gone.
 */
export const readGuardState = (port: SysfsPort, bdf: Bdf): GuardDeviceState | null => {
  const dir = pciDevice(bdf);
  const reader = openDir(port, dir);
  try {
    let bytes: Uint8Array = EMPTY;
    try {
      bytes = reader.readBytes('config');
    } catch {
      if (!port.exists(dir)) return null; // a device without a readable config is decided as scanDevice sees it
    }
    const cs = parseConfigSpace(bytes);
    const text = (name: string): string | null => {
      try {
        return reader.readText(name).trim();
      } catch {
        return null;
      }
    };
    // One listing answers which of driver, vfio-dev and the SR-IOV files exist (no failed lookups).
    let kinds: ReadonlyMap<string, EntryKind>;
    try {
      kinds = reader.entries();
    } catch {
      kinds = new Map();
    }
    let driver: string | null = null;
    if (kinds.get('driver') === 'link') {
      try {
        driver = basenameOf(reader.readLink('driver'));
      } catch {
        driver = null;
      }
    }
    const override = text('driver_override');
    const hasSriovFiles = kinds.get('sriov_totalvfs') === 'file';
    let sriov: GuardDeviceState['sriov'] = null;
    if (cs.sriov || hasSriovFiles) {
      const autoprobe = text('sriov_drivers_autoprobe');
      sriov = { totalVfs: cs.sriov?.totalVfs ?? parseIntOrNull(text('sriov_totalvfs')) ?? 0, driversAutoprobe: autoprobe === null ? null : autoprobe === '1' };
    }
    return {
      bdf,
      isBridge: cs.layout === 'bridge' || cs.layout === 'cardbus',
      driver,
      vfioDriver: kinds.get('vfio-dev') === 'dir' || isVfioDriverName(driver),
      driverOverride: overrideValue(override),
      sriov,
    };
  } finally {
    reader.close();
  }
};

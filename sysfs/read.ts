// Reading device and group directories (the I/O half of a scan): what each held, as strings and bytes,
// with every problem named by its file. Safe to run on the scan helper thread.

import { isIsogroupError } from '../errors.js';
import { type Bdf, formatBdf, splitBdf } from '../model/bdf.js';
import { overrideValue, parseIntOrNull, type RawChunk, type RawDevice } from '../model/build-device.js';
import { HEADER_BYTES, hasNormalHeader, parseConfigSpace } from '../model/config-space.js';
import type { GuardDeviceState, Problem } from '../model/device.js';
import { isVfioDriverName } from '../model/drivers.js';
import { IOMMU_GROUPS, iommuGroup, iommuGroupDevices, isDeviceTreePath, PCI_DEVICES, pciDevice } from './paths.js';
import { type DirEntry, type DirReader, type EntryKind, linkTargetRel, openDir, type SysfsPort } from './port.js';

/** Devices per chunk of the device list: the unit the two scan threads claim. */
export const SCAN_CHUNK = 64;
const MAX_LINK_HOPS = 8;
const EMPTY = new Uint8Array(0);

export class DeviceGone extends Error {
  /** false when the directory could not even be listed (the link may never have pointed anywhere). */
  constructor(
    dir: string,
    readonly listed = true,
  ) {
    super(dir);
  }
}

export const errnoText = (error: unknown): string =>
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

const VIRTFN = /^virtfn(\d+)$/;

// Read a device directory: list it once, then read only the attributes the listing shows.
export const readDevice = (port: SysfsPort, bdf: Bdf, dir: string): RawDevice => {
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
    resetFile: entries.has('reset'),
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

// A scan: every PCI device, kernel group and IOMMU unit below a root, read (sysfs/read.ts, on one or
// two threads) and built (model/build-device.ts) into one snapshot.

import { isIsogroupError } from '../errors.js';
import { type Bdf, compareBdf, isBdf } from '../model/bdf.js';
import { buildDevice, parseReservedRegions, type RawChunk, unitKind } from '../model/build-device.js';
import type { HostSnapshot, IommuUnit, KernelGroup, PciDevice, Problem, ReservedRegion } from '../model/device.js';
import type { PciIds } from '../model/pci-ids.js';
import { IOMMU_CLASS, IOMMU_GROUPS, iommuGroup, PCI_DEVICES, PCI_DRIVERS_AUTOPROBE, pciDevice } from './paths.js';
import { type DirEntry, NodeSysfsPort, type SysfsPort } from './port.js';
import { DeviceGone, errnoText, listGroupIds, type RawGroup, readChunk, readDevice, readEntries, readRawGroup, resolveLink } from './read.js';
import { startScanHelper } from './scan-helper.js';

const EMPTY = new Uint8Array(0);

export interface ScanOptions {
  /** pci.ids database for names; null disables names. Defaults to none (the CLI loads the host's). */
  pciIds?: PciIds | null;
  /** Threads reading devices: 1, or 2 (a helper reads the group directories, then both claim chunks of the list). Default 2 from PARALLEL_MIN_DEVICES devices on. */
  threads?: 1 | 2;
}

/** From this many devices on, a second thread pays for its start (~50 ms) several times over. */
export const PARALLEL_MIN_DEVICES = 2000;

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

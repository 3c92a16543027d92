import * as fs from 'node:fs';
import * as path from 'node:path';
import { IsogroupError } from '../errors.js';
import { type Bdf, parseBdf, splitBdf } from '../model/bdf.js';
import { hex, parseConfigSpace } from '../model/config-space.js';
import {
  iommuGroup,
  iommuGroupDevice,
  iommuGroupFile,
  iommuUnit,
  meta,
  PCI_BUS,
  PCI_DEVICES,
  PCI_DRIVERS,
  PCI_DRIVERS_AUTOPROBE,
  PCI_DRIVERS_PROBE,
  PCI_RESCAN,
  PCI_SLOTS,
  pciDevice,
  pciDriver,
  pciDriverDevice,
  SYS_DEVICES,
  virtualIommu,
  virtualIommuDevice,
} from '../sysfs/paths.js';

// Writes a fixture root with the layout of a real sysfs capture (oracle/captures): real device
// directories under sys/devices/pciDDDD:BB/..., relative symlinks exactly where the kernel has them.

export interface FixtureDeviceSpec {
  bdf: string;
  /** Upstream bridge; null or absent for a device on a root bus. */
  parent?: string | null;
  /** For root-bus devices behind a host bridge that is a PCI device itself (Intel VMD). */
  rootBusUnder?: string | null;
  config: Uint8Array;
  driver?: string | null;
  driverOverride?: string | null;
  group?: string | null;
  iommu?: string | null;
  numaNode?: number;
  resetMethod?: string[];
  physfn?: string | null;
  vfioDev?: boolean;
  /** Extra attribute files (name -> content) written as given. */
  attrs?: Record<string, string>;
  /** Children that are not PCI devices (net/eth0, nvme/nvme0, block/sda ...): empty directories. */
  children?: string[];
}

export interface FixtureGroupSpec {
  type?: string;
  reservedRegions?: string;
}

export interface FixtureSpec {
  devices: FixtureDeviceSpec[];
  groups?: Record<string, FixtureGroupSpec>;
  iommuUnits?: string[];
  driversAutoprobe?: boolean;
  /** Files under meta/ (name -> content). */
  meta?: Record<string, string>;
}

const DEFAULT_MSI_REGION = '0x00000000fee00000 0x00000000feefffff msi\n';

const rel = (fromDir: string, to: string): string => path.posix.relative(fromDir, to);

const mkdirp = (p: string): void => {
  fs.mkdirSync(p, { recursive: true });
};

const write = (p: string, content: string | Uint8Array, mode?: number): void => {
  mkdirp(path.dirname(p));
  fs.writeFileSync(p, content);
  if (mode !== undefined) fs.chmodSync(p, mode);
};

const link = (root: string, at: string, target: string): void => {
  const abs = path.join(root, at);
  mkdirp(path.dirname(abs));
  try {
    fs.unlinkSync(abs);
  } catch {
    /* not there yet */
  }
  fs.symlinkSync(rel(path.posix.dirname(at), target), abs);
};

export const ensureDriverDir = (root: string, driver: string): void => {
  const dir = path.join(root, pciDriver(driver));
  if (fs.existsSync(dir)) return;
  mkdirp(dir);
  for (const f of ['bind', 'unbind', 'new_id', 'remove_id', 'uevent']) write(path.join(dir, f), '', 0o200);
};

/** Root-relative directory of each device, from the parent chain. */
export const devicePaths = (devices: FixtureDeviceSpec[]): Map<Bdf, string> => {
  const byBdf = new Map<Bdf, FixtureDeviceSpec>();
  for (const d of devices) {
    const bdf = parseBdf(d.bdf, `fixture device ${d.bdf}`);
    if (byBdf.has(bdf)) throw new IsogroupError('E_INVALID_INPUT', `fixture lists ${bdf} twice`, { bdf });
    byBdf.set(bdf, d);
  }
  const paths = new Map<Bdf, string>();
  const resolve = (bdf: Bdf, depth: number): string => {
    const known = paths.get(bdf);
    if (known) return known;
    if (depth > 64) throw new IsogroupError('E_INVALID_INPUT', `fixture parent chain of ${bdf} loops`, { bdf });
    const spec = byBdf.get(bdf)!;
    let dir: string;
    if (spec.parent) {
      const parent = parseBdf(spec.parent, `parent of ${bdf}`);
      if (!byBdf.has(parent))
        throw new IsogroupError('E_INVALID_INPUT', `fixture device ${bdf} names parent ${parent}, which is not in the fixture`, { bdf, parent });
      dir = `${resolve(parent, depth + 1)}/${bdf}`;
    } else {
      const p = splitBdf(bdf)!;
      const rootBus = `pci${p.domain.toString(16).padStart(4, '0')}:${p.bus.toString(16).padStart(2, '0')}`;
      if (spec.rootBusUnder) {
        const host = parseBdf(spec.rootBusUnder, `host bridge of ${bdf}`);
        dir = `${resolve(host, depth + 1)}/${rootBus}/${bdf}`;
      } else {
        dir = `${SYS_DEVICES}/${rootBus}/${bdf}`;
      }
    }
    paths.set(bdf, dir);
    return dir;
  };
  for (const bdf of byBdf.keys()) resolve(bdf, 0);
  return paths;
};

export const writeFixtureRoot = (root: string, spec: FixtureSpec): void => {
  const paths = devicePaths(spec.devices);
  mkdirp(path.join(root, PCI_DEVICES));
  mkdirp(path.join(root, PCI_DRIVERS));
  mkdirp(path.join(root, PCI_SLOTS));
  write(path.join(root, PCI_DRIVERS_AUTOPROBE), spec.driversAutoprobe === false ? '0\n' : '1\n');
  write(path.join(root, PCI_DRIVERS_PROBE), '', 0o200);
  write(path.join(root, PCI_RESCAN), '', 0o200);
  const groups = new Map<string, Bdf[]>();
  const units = new Set(spec.iommuUnits ?? []);

  for (const d of spec.devices) {
    const bdf = parseBdf(d.bdf);
    const dir = paths.get(bdf)!;
    const abs = path.join(root, dir);
    mkdirp(abs);
    const cs = parseConfigSpace(d.config);
    const a = (name: string, value: string | Uint8Array, mode = 0o444): void => write(path.join(abs, name), value, mode);
    a('config', d.config, 0o644);
    if (d.config.length >= 0x30) {
      a('vendor', `${hex(cs.vendorId, 4)}\n`);
      a('device', `${hex(cs.deviceId, 4)}\n`);
      a('class', `${hex(cs.classCode, 6)}\n`);
      a('revision', `${hex(cs.revision, 2)}\n`);
      a('subsystem_vendor', `${hex(cs.subsystemVendorId ?? 0, 4)}\n`);
      a('subsystem_device', `${hex(cs.subsystemDeviceId ?? 0, 4)}\n`);
      a(
        'modalias',
        `pci:v0000${hex(cs.vendorId, 4).slice(2).toUpperCase()}d0000${hex(cs.deviceId, 4).slice(2).toUpperCase()}sv0000${hex(cs.subsystemVendorId ?? 0, 4)
          .slice(2)
          .toUpperCase()}sd0000${hex(cs.subsystemDeviceId ?? 0, 4)
          .slice(2)
          .toUpperCase()}bc${hex(cs.classCode >> 16, 2)
          .slice(2)
          .toUpperCase()}sc${hex((cs.classCode >> 8) & 0xff, 2)
          .slice(2)
          .toUpperCase()}i${hex(cs.classCode & 0xff, 2)
          .slice(2)
          .toUpperCase()}\n`,
      );
    }
    if (cs.layout === 'bridge' && cs.secondaryBus !== null) {
      a('secondary_bus_number', `${cs.secondaryBus}\n`);
      a('subordinate_bus_number', `${cs.subordinateBus}\n`);
    }
    a('driver_override', `${d.driverOverride ?? '(null)'}\n`, 0o644);
    a('numa_node', `${d.numaNode ?? -1}\n`, 0o644);
    a('enable', '1\n', 0o644);
    if (d.resetMethod && d.resetMethod.length > 0) a('reset_method', `${d.resetMethod.join(' ')}\n`, 0o644);
    for (const f of ['remove', 'rescan', 'reset']) if (f !== 'reset' || d.resetMethod?.length) a(f, '', 0o200);
    if (cs.sriov) {
      a('sriov_totalvfs', `${cs.sriov.totalVfs}\n`);
      a('sriov_numvfs', `${cs.sriov.numVfs}\n`, 0o644);
      a('sriov_drivers_autoprobe', '1\n', 0o644);
      a('sriov_offset', `${cs.sriov.firstVfOffset}\n`);
      a('sriov_stride', `${cs.sriov.vfStride}\n`);
      a('sriov_vf_device', `${cs.sriov.vfDeviceId.slice(2)}\n`);
    }
    for (const [name, value] of Object.entries(d.attrs ?? {})) a(name, value, 0o644);
    for (const child of d.children ?? []) mkdirp(path.join(abs, child));
    if (d.vfioDev) mkdirp(path.join(abs, 'vfio-dev/vfio0'));
    link(root, `${dir}/subsystem`, PCI_BUS);
    link(root, pciDevice(bdf), dir);
    if (d.driver) {
      ensureDriverDir(root, d.driver);
      link(root, `${dir}/driver`, pciDriver(d.driver));
      link(root, pciDriverDevice(d.driver, bdf), dir);
    }
    if (d.group !== undefined && d.group !== null) {
      if (!/^\d+$/.test(d.group)) throw new IsogroupError('E_INVALID_INPUT', `fixture group ${JSON.stringify(d.group)} of ${bdf} is not a number`, { bdf });
      link(root, `${dir}/iommu_group`, iommuGroup(d.group));
      link(root, iommuGroupDevice(d.group, bdf), dir);
      groups.set(d.group, [...(groups.get(d.group) ?? []), bdf]);
    }
    if (d.iommu) {
      units.add(d.iommu);
      link(root, `${dir}/iommu`, virtualIommu(d.iommu));
      link(root, virtualIommuDevice(d.iommu, bdf), dir);
    }
  }
  for (const d of spec.devices) {
    if (!d.physfn) continue;
    const vf = parseBdf(d.bdf);
    const pf = parseBdf(d.physfn, `physfn of ${vf}`);
    const pfDir = paths.get(pf);
    if (!pfDir) throw new IsogroupError('E_INVALID_INPUT', `fixture VF ${vf} names PF ${pf}, which is not in the fixture`, { vf, pf });
    link(root, `${paths.get(vf)!}/physfn`, pfDir);
    const existing = fs.readdirSync(path.join(root, pfDir)).filter((n) => /^virtfn\d+$/.test(n)).length;
    link(root, `${pfDir}/virtfn${existing}`, paths.get(vf)!);
  }
  for (const [id] of groups) {
    const g = spec.groups?.[id] ?? {};
    write(path.join(root, iommuGroupFile(id, 'type')), `${g.type ?? 'DMA'}\n`, 0o644);
    write(path.join(root, iommuGroupFile(id, 'reserved_regions')), g.reservedRegions ?? DEFAULT_MSI_REGION);
  }
  for (const unit of units) {
    mkdirp(path.join(root, `${virtualIommu(unit)}/devices`));
    link(root, iommuUnit(unit), virtualIommu(unit));
  }
  for (const [name, content] of Object.entries(spec.meta ?? {})) write(path.join(root, meta(name)), content);
};

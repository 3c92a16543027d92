import * as fs from 'node:fs';
import * as path from 'node:path';
import { ensureDriverDir } from '../capture/fixture-writer.js';
import { IsogroupError } from '../errors.js';
import { type Bdf, formatBdf, isBdf, parseBdf, splitBdf } from '../model/bdf.js';
import { hex, parseConfigSpace } from '../model/config-space.js';
import { isDmaManagedDriver, isVfioDriverName, VFIO_DRIVER } from '../model/drivers.js';
import {
  IOMMU_CLASS,
  IOMMU_GROUPS,
  iommuGroup,
  iommuGroupDevice,
  iommuGroupDevices,
  iommuGroupFile,
  isDeviceTreePath,
  moduleParameters,
  PCI_BUS,
  PCI_DEVICES,
  PCI_DRIVERS_AUTOPROBE,
  PCI_DRIVERS_PROBE,
  PCI_RESCAN,
  parsePciDriverFile,
  pciDevice,
  pciDeviceFile,
  pciDriver,
  pciDriverDevice,
  VFIO_CONTAINER,
  vfioGroup,
  virtualIommu,
  virtualIommuDevice,
} from '../sysfs/paths.js';
import { type DirEntry, type DirReader, type EntryKind, linkTargetRel, NodeSysfsPort, openDir, type SysfsPort, sysfsError } from '../sysfs/port.js';
import { scanHost } from '../sysfs/scan.js';
import { synthConfig, vfConfigFrom } from './config.js';
import { peersOf } from './grouping.js';
import { SIM_DIR, type SimFailure, type SimState, SimStateStore } from './state.js';

// The fixture kernel: gives a fixture root (a capture unpacked into a writable directory) the write
// semantics of Linux 6.1's PCI/driver-core sysfs, as observed in oracle/NOTES.md. The fixture files
// ARE the kernel's state (driver links, driver_override contents, group links), so any reader of the
// root (a NodeSysfsPort, scanHost, another process) sees what a real /sys would show.

/** Logically removed devices (`remove`), waiting for a rescan. */
const PARKED = `${SIM_DIR}/removed`;
const DEFAULT_MSI_REGION = '0x00000000fee00000 0x00000000feefffff msi\n';

const errnoError = (errno: string, message: string): NodeJS.ErrnoException => Object.assign(new Error(`${errno}: ${message}`), { code: errno });

/** A write(2) failing with the kernel's errno, reported as the port reports real ones. */
class KernelErrno extends Error {
  constructor(
    readonly errno: string,
    readonly why: string,
  ) {
    super(`${errno}: ${why}`);
  }
}

export interface AddDeviceOptions {
  /** Bridge the device lands behind; its secondary bus is the device's bus. */
  bridge: string;
  vendor: number;
  device: number;
  classCode?: number;
  /** Default host driver (what binds at once). null or absent: no driver matches it. */
  driver?: string | null;
  /** Exact address; default the first free slot on the bridge's secondary bus. */
  bdf?: string;
  multifunction?: boolean;
}

export interface AddDeviceResult {
  bdf: Bdf;
  /** Kernel group it joined (null while pending). */
  group: string | null;
  /** Driver bound right after the add (null when none or when the attach failed). */
  driver: string | null;
  /** Why no driver bound, as the kernel would log it. */
  attachError: string | null;
  /** The bridge's hotplug is dead (shpchp unbound): the device shows up only after a rescan. */
  pending: boolean;
}

export interface SimHooks {
  /** Called after each completed write with the number of writes this kernel handle has done. */
  afterWrite?: (count: number, rel: string) => void;
}

export interface SimKernelOptions {
  hooks?: SimHooks;
}

/** Crash rehearsals: SIGKILL this process right after its k-th sysfs write; or, after the k-th, create F.paused and wait until F.go exists. */
export interface CrashPoints {
  killAfter?: number;
  pauseAfter?: number;
  pauseFile?: string;
}

export const crashHooks = (points: CrashPoints): SimHooks => {
  const { killAfter, pauseAfter, pauseFile } = points;
  if (killAfter === undefined && (pauseAfter === undefined || pauseFile === undefined)) return {};
  return {
    afterWrite(count) {
      if (count === killAfter) process.kill(process.pid, 'SIGKILL');
      if (pauseFile !== undefined && count === pauseAfter) {
        fs.writeFileSync(`${pauseFile}.paused`, `${process.pid}\n`);
        const cell = new Int32Array(new SharedArrayBuffer(4));
        while (!fs.existsSync(`${pauseFile}.go`)) Atomics.wait(cell, 0, 0, 20);
      }
    },
  };
};

export class SimKernel {
  readonly root: string;
  readonly store: SimStateStore;
  private readonly node: NodeSysfsPort;
  private readonly hooks: SimHooks;
  private writes = 0;

  constructor(root: string, options: SimKernelOptions = {}) {
    let real: string;
    try {
      real = fs.realpathSync(root);
    } catch (error) {
      throw new IsogroupError('E_INVALID_INPUT', `fixture root ${root} does not exist`, { root }, { cause: error });
    }
    if (!fs.existsSync(path.join(real, PCI_DEVICES))) {
      throw new IsogroupError('E_INVALID_INPUT', `${root} is not a fixture root (no ${PCI_DEVICES}); unpack a capture with \`isogroup sim unpack\``, { root });
    }
    this.root = real;
    this.node = new NodeSysfsPort(real);
    this.store = new SimStateStore(real);
    this.hooks = { ...options.hooks };
    this.store.transact((st) => this.initialise(st));
  }

  // ---------------------------------------------------------------- small filesystem helpers
  private abs(rel: string): string {
    return this.node.abs(rel);
  }

  private readLinkRel(rel: string): string | null {
    try {
      return linkTargetRel(rel, fs.readlinkSync(this.abs(rel)));
    } catch {
      return null;
    }
  }

  private link(at: string, target: string): void {
    const abs = this.abs(at);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    try {
      fs.unlinkSync(abs);
    } catch {
      /* absent */
    }
    fs.symlinkSync(path.posix.relative(path.posix.dirname(at), target), abs);
  }

  private unlink(rel: string): void {
    try {
      fs.unlinkSync(this.abs(rel));
    } catch {
      /* absent */
    }
  }

  private writeFile(rel: string, content: string | Uint8Array, mode?: number): void {
    const abs = this.abs(rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, content);
    if (mode !== undefined) fs.chmodSync(abs, mode);
  }

  private log(line: string): void {
    fs.appendFileSync(path.join(this.root, SIM_DIR, 'dmesg'), `${line}\n`);
  }

  // ---------------------------------------------------------------- device model
  devDir(bdf: string): string | null {
    if (!isBdf(bdf)) return null;
    const known = this.dirMemo?.get(bdf);
    if (known !== undefined) return known;
    const rel = this.readLinkRel(pciDevice(bdf));
    const dir = rel !== null && fs.existsSync(this.abs(rel)) ? rel : null;
    this.dirMemo?.set(bdf, dir);
    return dir;
  }

  // A bind, unbind, probe or override write looks a device up many times and never moves one: within
  // such a write, each lookup is done once.
  private dirMemo: Map<string, string | null> | null = null;
  private withDirMemo<T>(fn: () => T): T {
    this.dirMemo = new Map();
    try {
      return fn();
    } finally {
      this.dirMemo = null;
    }
  }

  driverOf(bdf: string): string | null {
    const dir = this.devDir(bdf);
    if (!dir) return null;
    const t = this.readLinkRel(`${dir}/driver`);
    return t === null ? null : path.posix.basename(t);
  }

  overrideOf(bdf: string): string | null {
    const dir = this.devDir(bdf);
    if (!dir) return null;
    try {
      const v = fs.readFileSync(this.abs(`${dir}/driver_override`), 'utf8').replace(/\n$/, '');
      return v === '' || v === '(null)' ? null : v;
    } catch {
      return null;
    }
  }

  groupOf(bdf: string): string | null {
    const dir = this.devDir(bdf);
    if (!dir) return null;
    const t = this.readLinkRel(`${dir}/iommu_group`);
    return t === null ? null : path.posix.basename(t);
  }

  groupMembers(group: string): Bdf[] {
    try {
      return fs
        .readdirSync(this.abs(iommuGroupDevices(group)))
        .filter(isBdf)
        .sort() as Bdf[];
    } catch {
      return [];
    }
  }

  devices(): Bdf[] {
    try {
      return fs.readdirSync(this.abs(PCI_DEVICES)).filter(isBdf).sort() as Bdf[];
    } catch {
      return [];
    }
  }

  private config(dir: string): Uint8Array {
    try {
      return fs.readFileSync(this.abs(`${dir}/config`));
    } catch {
      return new Uint8Array(0);
    }
  }

  private isBridge(dir: string): boolean {
    const c = this.config(dir);
    return c.length > 0x0e && (c[0x0e]! & 0x7f) !== 0;
  }

  driverLoaded(driver: string): boolean {
    return fs.existsSync(this.abs(pciDriver(driver)));
  }

  /** The group's DMA owner is claimed: a VFIO user set a container on it. */
  private claimed(st: SimState, group: string | null): boolean {
    return group !== null && (st.holds[group]?.container ?? null) !== null;
  }

  private defaultDriverOf(st: SimState, bdf: string): string | null {
    return st.defaultDrivers[bdf] ?? null;
  }

  private ensureVfioNodes(group: string): void {
    if (!fs.existsSync(this.abs(VFIO_CONTAINER))) this.writeFile(VFIO_CONTAINER, '');
    if (!fs.existsSync(this.abs(vfioGroup(group)))) this.writeFile(vfioGroup(group), '');
  }

  // ---------------------------------------------------------------- binding (drivers/base/dd.c)
  private bindLinks(st: SimState, bdf: string, dir: string, driver: string): void {
    ensureDriverDir(this.root, driver);
    this.link(`${dir}/driver`, pciDriver(driver));
    this.link(pciDriverDevice(driver, bdf), dir);
    if (isVfioDriverName(driver)) {
      fs.mkdirSync(this.abs(`${dir}/vfio-dev/vfio${st.nextVfioDev++}`), { recursive: true });
      const group = this.groupOf(bdf);
      if (group !== null) this.ensureVfioNodes(group);
    }
  }

  private unbindLinks(bdf: string, dir: string): void {
    const driver = this.driverOf(bdf);
    if (driver === null) return;
    this.unlink(`${dir}/driver`);
    this.unlink(pciDriverDevice(driver, bdf));
    if (isVfioDriverName(driver)) {
      fs.rmSync(this.abs(`${dir}/vfio-dev`), { recursive: true, force: true });
      this.dropVfioNodeIfUnused(this.groupOf(bdf));
    }
  }

  // /dev/vfio/N lives while at least one device of group N is bound to a vfio driver.
  private dropVfioNodeIfUnused(group: string | null): void {
    if (group === null) return;
    if (this.groupMembers(group).some((m) => isVfioDriverName(this.driverOf(m)))) return;
    this.unlink(vfioGroup(group));
  }

  /**
   * really_probe(): negative errno = the bus refused before probe (reported by every caller),
   * positive = the driver's probe failed (drivers_probe swallows it), 0 = bound.
   */
  private probe(st: SimState, bdf: string, dir: string, driver: string): { rc: number; errno?: string; why?: string } {
    const group = this.groupOf(bdf);
    // pci_dma_configure -> iommu_device_use_default_domain: -EBUSY inside a claimed group.
    if (!isDmaManagedDriver(driver) && this.claimed(st, group)) {
      this.log(`pci ${bdf}: ${driver}: DMA ownership of group ${group} is claimed by a VFIO user: probe refused (-16)`);
      return { rc: -16, errno: 'EBUSY', why: `group ${group} is owned by a VFIO user` };
    }
    // vfio_pci_probe() refuses anything that is not a normal (type 0) header.
    if (isVfioDriverName(driver) && this.isBridge(dir)) {
      this.log(`${driver}: probe of ${bdf} failed with error -22`);
      return { rc: 22, errno: 'EINVAL', why: `${driver} does not take bridges` };
    }
    this.bindLinks(st, bdf, dir, driver);
    return { rc: 0 };
  }

  /** pci_match_device(): driver_override decides alone; vfio-pci matches nothing without it. */
  private matches(st: SimState, bdf: string, driver: string): boolean {
    const override = this.overrideOf(bdf);
    if (override !== null) return override === driver;
    if (isVfioDriverName(driver) || driver === 'pci-stub') return false;
    return this.defaultDriverOf(st, bdf) === driver && this.vfMayProbe(bdf);
  }

  // pci_device_can_probe(): VFs of a PF with sriov_drivers_autoprobe=0 only bind with an override.
  private vfMayProbe(bdf: string): boolean {
    const dir = this.devDir(bdf);
    if (!dir) return false;
    const pf = this.readLinkRel(`${dir}/physfn`);
    if (pf === null) return true;
    try {
      return fs.readFileSync(this.abs(`${pf}/sriov_drivers_autoprobe`), 'utf8').trim() !== '0' || this.overrideOf(bdf) !== null;
    } catch {
      return true;
    }
  }

  /** device_attach(): 1 bound, 0 no driver matched, negative errno from the bus. */
  private deviceAttach(st: SimState, bdf: string): { rc: number; errno?: string; driver?: string } {
    const dir = this.devDir(bdf);
    if (!dir) return { rc: -19, errno: 'ENODEV' };
    if (this.driverOf(bdf) !== null) return { rc: 1 };
    const override = this.overrideOf(bdf);
    const candidate = override ?? this.defaultDriverOf(st, bdf);
    if (candidate === null || !this.driverLoaded(candidate) || !this.matches(st, bdf, candidate)) return { rc: 0 };
    const r = this.probe(st, bdf, dir, candidate);
    if (r.rc < 0) return { rc: r.rc, errno: r.errno!, driver: candidate };
    return { rc: r.rc === 0 ? 1 : 0, driver: candidate };
  }

  // ---------------------------------------------------------------- registration (pci_device_add)
  private initialise(st: SimState): void {
    if (Object.keys(st.defaultDrivers).length > 0 || st.writeCount > 0) return;
    // First open: each device's default driver is the one the capture shows, unless that is a vfio
    // driver (then the host driver it had before is unknown: none).
    for (const bdf of this.devices()) {
      const d = this.driverOf(bdf);
      st.defaultDrivers[bdf] = d !== null && !isVfioDriverName(d) ? d : null;
      if (isVfioDriverName(d)) {
        const g = this.groupOf(bdf);
        if (g !== null) this.ensureVfioNodes(g);
      }
    }
  }

  private lowestFreeGroup(): string {
    let ids: Set<number>;
    try {
      ids = new Set(
        fs
          .readdirSync(this.abs(IOMMU_GROUPS))
          .filter((n) => /^\d+$/.test(n))
          .map(Number),
      );
    } catch {
      ids = new Set();
    }
    let n = 0;
    while (ids.has(n)) n++;
    return String(n);
  }

  private iommuUnitFor(dir: string): string | null {
    // Inherit the unit of the nearest ancestor that has one, else the first registered unit.
    let cur = path.posix.dirname(dir);
    while (isDeviceTreePath(cur)) {
      const t = this.readLinkRel(`${cur}/iommu`);
      if (t !== null) return path.posix.basename(t);
      cur = path.posix.dirname(cur);
    }
    try {
      return fs.readdirSync(this.abs(IOMMU_CLASS))[0] ?? null;
    } catch {
      return null;
    }
  }

  /** Put a device whose directory exists into the bus, the IOMMU and a group (iommu_probe_device). */
  private register(bdf: Bdf, dir: string): string | null {
    this.link(pciDevice(bdf), dir);
    this.link(`${dir}/subsystem`, PCI_BUS);
    this.unlink(`${dir}/iommu_group`);
    this.unlink(`${dir}/driver`);
    fs.rmSync(this.abs(`${dir}/vfio-dev`), { recursive: true, force: true });
    const unit = this.iommuUnitFor(dir);
    if (unit === null) return null; // no IOMMU: no group
    this.link(`${dir}/iommu`, virtualIommu(unit));
    this.link(virtualIommuDevice(unit, bdf), dir);
    const snap = scanHost(this.neighbourhood(dir), { pciIds: null });
    let group: string | null = null;
    for (const peer of peersOf(snap, bdf)) {
      if (peer === bdf) continue;
      const g = snap.devices.get(peer)?.kernelGroup ?? null;
      if (g !== null) {
        group = g;
        break;
      }
    }
    if (group === null) {
      group = this.lowestFreeGroup();
      const type = this.siblingGroupFile('type') ?? 'DMA\n';
      this.writeFile(iommuGroupFile(group, 'type'), type, 0o644);
      this.writeFile(iommuGroupFile(group, 'reserved_regions'), this.siblingGroupFile('reserved_regions') ?? DEFAULT_MSI_REGION, 0o444);
    }
    this.link(`${dir}/iommu_group`, iommuGroup(group));
    this.link(iommuGroupDevice(group, bdf), dir);
    return group;
  }

  /**
   * A view of the root with only the devices that can decide a new device's group: those on its bus
   * and on the bus of every bridge above it (aliases, ACS path, multifunction slots). Keeps a hot-add
   * from rescanning the whole tree, so bursts of thousands stay linear.
   */
  private neighbourhood(dir: string): SysfsPort {
    const keep = new Set<string>();
    let cur = path.posix.dirname(dir);
    for (;;) {
      try {
        for (const e of fs.readdirSync(this.abs(cur))) if (isBdf(e)) keep.add(e);
      } catch {
        /* gone */
      }
      if (!isBdf(path.posix.basename(cur))) {
        // A root bus (pciDDDD:BB): done unless it hangs below a host-bridge device (VMD).
        const up = path.posix.dirname(cur);
        if (!isBdf(path.posix.basename(up))) break;
      }
      const next = path.posix.dirname(cur);
      if (next === cur || !isDeviceTreePath(`${next}/`)) break;
      cur = next;
    }
    keep.add(path.posix.basename(dir));
    const node = this.node;
    // Only the groups of kept devices: a device's group comes from its own link, and the others' type and
    // reserved_regions files (three reads per group of the whole host) decide nothing here.
    let keepGroups: Set<string> | null = null;
    const groupsOfKept = (): Set<string> => {
      if (keepGroups) return keepGroups;
      keepGroups = new Set();
      for (const bdf of keep) {
        const t = this.readLinkRel(pciDeviceFile(bdf, 'iommu_group'));
        if (t !== null) keepGroups.add(path.posix.basename(t));
      }
      return keepGroups;
    };
    return {
      root: node.root,
      readText: (rel) => node.readText(rel),
      readBytes: (rel) => node.readBytes(rel),
      readLink: (rel) => node.readLink(rel),
      kind: (rel) => node.kind(rel),
      exists: (rel) => node.exists(rel),
      writeText: () => {
        throw new IsogroupError('E_INTERNAL', 'read-only view');
      },
      list: (rel) => {
        const all = node.list(rel);
        if (rel === PCI_DEVICES) return all.filter((e) => keep.has(e.name));
        if (rel === IOMMU_GROUPS) return all.filter((e) => groupsOfKept().has(e.name));
        if (rel.startsWith(`${IOMMU_GROUPS}/`) && rel.endsWith('/devices')) return all.filter((e) => keep.has(e.name));
        return all;
      },
    };
  }

  private siblingGroupFile(name: 'type' | 'reserved_regions'): string | null {
    try {
      for (const g of fs.readdirSync(this.abs(IOMMU_GROUPS))) {
        const f = this.abs(iommuGroupFile(g, name));
        if (fs.existsSync(f)) return fs.readFileSync(f, 'utf8');
      }
    } catch {
      /* no groups */
    }
    return null;
  }

  private unregister(st: SimState, bdf: Bdf, dir: string): void {
    this.unbindLinks(bdf, dir);
    const group = this.groupOf(bdf);
    const unit = this.readLinkRel(`${dir}/iommu`);
    if (unit !== null) this.unlink(virtualIommuDevice(path.posix.basename(unit), bdf));
    if (group !== null) {
      this.unlink(iommuGroupDevice(group, bdf));
      if (this.groupMembers(group).length === 0) {
        fs.rmSync(this.abs(iommuGroup(group)), { recursive: true, force: true });
        this.unlink(vfioGroup(group));
        delete st.holds[group];
      } else this.dropVfioNodeIfUnused(group);
    }
    this.unlink(pciDevice(bdf));
    // A VF leaving drops its PF's virtfn link.
    const pf = this.readLinkRel(`${dir}/physfn`);
    if (pf !== null) {
      for (const e of fs.readdirSync(this.abs(pf))) {
        if (/^virtfn\d+$/.test(e) && this.readLinkRel(`${pf}/${e}`) === dir) this.unlink(`${pf}/${e}`);
      }
    }
  }

  /** Device directories below dir (itself first, children after). */
  private subtree(dir: string): { bdf: Bdf; dir: string }[] {
    const out: { bdf: Bdf; dir: string }[] = [];
    const walk = (d: string): void => {
      const name = path.posix.basename(d);
      if (isBdf(name)) out.push({ bdf: name as Bdf, dir: d });
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(this.abs(d), { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) if (e.isDirectory() && isBdf(e.name)) walk(`${d}/${e.name}`);
    };
    walk(dir);
    return out;
  }

  private removeDevice(st: SimState, bdf: Bdf, park: boolean): void {
    const dir = this.devDir(bdf);
    if (!dir) throw new KernelErrno('ENODEV', `${bdf} is not present`);
    // VFs go with their PF (sriov_numvfs is reset by the PF's removal).
    for (const e of fs.readdirSync(this.abs(dir))) {
      if (/^virtfn\d+$/.test(e)) {
        const vf = this.readLinkRel(`${dir}/${e}`);
        if (vf !== null) {
          const vfBdf = path.posix.basename(vf) as Bdf;
          if (this.devDir(vfBdf)) this.removeDevice(st, vfBdf, false);
        }
      }
    }
    const devs = this.subtree(dir).reverse();
    for (const d of devs) {
      this.unregister(st, d.bdf, d.dir);
      this.log(`pci ${d.bdf}: removed`);
    }
    if (park) {
      // Parked on disk, not in the state file (which every write re-serialises): PARKED/<bdf>/device is
      // the subtree, PARKED/<bdf>/origin where it lived. A later removal of the same address replaces it.
      const slot = `${PARKED}/${bdf}`;
      fs.rmSync(this.abs(slot), { recursive: true, force: true });
      fs.mkdirSync(this.abs(slot), { recursive: true });
      fs.renameSync(this.abs(dir), this.abs(`${slot}/device`));
      fs.writeFileSync(this.abs(`${slot}/origin`), dir);
    } else {
      fs.rmSync(this.abs(dir), { recursive: true, force: true });
    }
  }

  private rescan(st: SimState): Bdf[] {
    const added: Bdf[] = [];
    let parked: string[] = [];
    try {
      parked = fs.readdirSync(this.abs(PARKED)).filter(isBdf).sort();
    } catch {
      parked = [];
    }
    for (const bdf of parked) {
      const slot = `${PARKED}/${bdf}`;
      let dir: string;
      try {
        dir = fs.readFileSync(this.abs(`${slot}/origin`), 'utf8');
      } catch {
        continue;
      }
      if (!fs.existsSync(this.abs(path.posix.dirname(dir)))) continue; // parent gone too
      if (this.devDir(bdf)) {
        fs.rmSync(this.abs(slot), { recursive: true, force: true }); // the address was taken again meanwhile
        continue;
      }
      fs.renameSync(this.abs(`${slot}/device`), this.abs(dir));
      fs.rmSync(this.abs(slot), { recursive: true, force: true });
      for (const d of this.subtree(dir)) {
        this.register(d.bdf, d.dir);
        added.push(d.bdf);
      }
    }
    const pending = st.pending;
    st.pending = [];
    for (const p of pending) added.push(this.createDevice(st, p.bridge, parseBdf(p.bdf), p).bdf);
    // pci_bus_add_device(): device_attach() at once, whatever drivers_autoprobe says.
    for (const bdf of added) this.attachNew(st, bdf);
    return added;
  }

  private attachNew(st: SimState, bdf: Bdf): { driver: string | null; attachError: string | null } {
    const r = this.deviceAttach(st, bdf);
    if (r.rc < 0) {
      this.log(`pci ${bdf}: device attach failed (${r.rc})`);
      return { driver: null, attachError: `device attach failed (${r.rc}): ${r.errno}` };
    }
    const driver = this.driverOf(bdf);
    if (driver) this.log(`${driver} ${bdf}: bound`);
    return { driver, attachError: null };
  }

  private createDevice(
    st: SimState,
    bridgeDir: string,
    bdf: Bdf,
    spec: { vendor: number; device: number; classCode: number; driver: string | null; multifunction?: boolean },
  ): { bdf: Bdf; dir: string; group: string | null } {
    const bridgeCs = parseConfigSpace(this.config(bridgeDir));
    const pcie = bridgeCs.portType === 'root-port' || bridgeCs.portType === 'downstream-port';
    const dir = `${bridgeDir}/${bdf}`;
    const config = synthConfig({ vendor: spec.vendor, device: spec.device, classCode: spec.classCode, pcie, multifunction: spec.multifunction ?? false });
    const a = (name: string, value: string | Uint8Array, mode = 0o444): void => this.writeFile(`${dir}/${name}`, value, mode);
    a('config', config, 0o644);
    a('vendor', `${hex(spec.vendor, 4)}\n`);
    a('device', `${hex(spec.device, 4)}\n`);
    a('class', `${hex(spec.classCode, 6)}\n`);
    a('revision', '0x01\n');
    a('subsystem_vendor', `${hex(spec.vendor, 4)}\n`);
    a('subsystem_device', '0x0001\n');
    a('driver_override', '(null)\n', 0o644);
    a('numa_node', '-1\n', 0o644);
    a('enable', '0\n', 0o644);
    a('remove', '', 0o200);
    a('rescan', '', 0o200);
    st.defaultDrivers[bdf] = spec.driver;
    const group = this.register(bdf, dir);
    this.log(`pci ${bdf}: [${hex(spec.vendor, 4).slice(2)}:${hex(spec.device, 4).slice(2)}] added, group ${group ?? 'none'}`);
    return { bdf, dir, group };
  }

  private freeSlot(bridgeDir: string, bus: number, domain: number, pcieOnly: boolean): Bdf {
    // Function 0 of every slot first, then further functions (a bus holds 256 functions).
    for (let fn = 0; fn < 8; fn++) {
      for (let slot = 0; slot < (pcieOnly ? 1 : 32); slot++) {
        const bdf = formatBdf({ domain, bus, device: slot, fn });
        if (!this.devDir(bdf) && !fs.existsSync(this.abs(`${bridgeDir}/${bdf}`))) return bdf;
      }
    }
    throw new IsogroupError('E_INVALID_INPUT', `no free slot behind bridge ${path.posix.basename(bridgeDir)} (bus ${hex(bus, 2)})`, { bridge: bridgeDir });
  }

  // ---------------------------------------------------------------- SR-IOV (drivers/pci/iov.c)
  private setNumVfs(st: SimState, pf: Bdf, dir: string, text: string): void {
    const n = Number(text.trim());
    if (!Number.isInteger(n) || n < 0) throw new KernelErrno('EINVAL', `sriov_numvfs: ${JSON.stringify(text)}`);
    const cs = parseConfigSpace(this.config(dir));
    if (!cs.sriov) throw new KernelErrno('ENOENT', `${pf} has no SR-IOV capability`);
    const current = Number(fs.readFileSync(this.abs(`${dir}/sriov_numvfs`), 'utf8').trim() || '0');
    if (n === current) return;
    if (n > cs.sriov.totalVfs) throw new KernelErrno('ERANGE', `${n} VFs requested, ${pf} supports ${cs.sriov.totalVfs}`);
    if (n > 0 && current > 0) throw new KernelErrno('EBUSY', `${current} VFs already enabled on ${pf}`);
    if (n === 0) {
      for (const e of fs.readdirSync(this.abs(dir)).filter((x) => /^virtfn\d+$/.test(x))) {
        const vf = this.readLinkRel(`${dir}/${e}`);
        if (vf !== null) {
          const vfBdf = path.posix.basename(vf) as Bdf;
          if (this.devDir(vfBdf)) this.removeDevice(st, vfBdf, false);
        }
        this.unlink(`${dir}/${e}`);
      }
      this.writeFile(`${dir}/sriov_numvfs`, '0\n');
      return;
    }
    const p = splitBdf(pf)!;
    const rid = (p.bus << 8) | (p.device << 3) | p.fn;
    const parentDir = path.posix.dirname(dir);
    const pfDriver = this.driverOf(pf);
    const vfDriver = st.vfDrivers[pf] !== undefined ? st.vfDrivers[pf]! : this.defaultDriverOf(st, pf);
    const vfConfig = vfConfigFrom(this.config(dir), parseInt(cs.sriov.vfDeviceId, 16) || cs.deviceId);
    const created: Bdf[] = [];
    for (let i = 0; i < n; i++) {
      const vrid = rid + cs.sriov.firstVfOffset + i * cs.sriov.vfStride;
      const vf = formatBdf({ domain: p.domain, bus: (vrid >> 8) & 0xff, device: (vrid >> 3) & 0x1f, fn: vrid & 7 });
      const vdir = `${parentDir}/${vf}`;
      const a = (name: string, value: string | Uint8Array, mode = 0o444): void => this.writeFile(`${vdir}/${name}`, value, mode);
      a('config', vfConfig, 0o644);
      a('vendor', `${hex(cs.vendorId, 4)}\n`);
      a('device', `${cs.sriov.vfDeviceId}\n`);
      a('class', `${hex(cs.classCode, 6)}\n`);
      a('revision', `${hex(cs.revision, 2)}\n`);
      // vfio_pci_bus_notifier(): a PF on vfio-pci captures its new VFs for itself.
      a('driver_override', isVfioDriverName(pfDriver) ? `${pfDriver}\n` : '(null)\n', 0o644);
      a('numa_node', '-1\n', 0o644);
      a('remove', '', 0o200);
      this.link(`${vdir}/physfn`, dir);
      this.link(`${dir}/virtfn${i}`, vdir);
      st.defaultDrivers[vf] = vfDriver;
      this.register(vf, vdir);
      created.push(vf);
    }
    this.writeFile(`${dir}/sriov_numvfs`, `${n}\n`);
    for (const vf of created) this.attachNew(st, vf);
  }

  // ---------------------------------------------------------------- the write(2) entry point
  /** Canonical root-relative path of a write target (symlinked directories resolved, as the kernel does). */
  private canonical(rel: string): { canon: string; abs: string } {
    const abs = this.abs(rel);
    let realDir: string;
    try {
      realDir = fs.realpathSync.native(path.dirname(abs));
    } catch {
      throw new KernelErrno('ENOENT', `${rel} does not exist`);
    }
    const canon = path.posix.join(path.relative(this.root, realDir).split(path.sep).join('/'), path.basename(abs));
    return { canon, abs: path.join(realDir, path.basename(abs)) };
  }

  private injected(st: SimState, rel: string, canon: string): SimFailure | null {
    const i = st.failures.findIndex(
      (f) => (f.at !== undefined && f.at === st.writeCount) || (f.file !== undefined && (rel.endsWith(f.file) || canon.endsWith(f.file))),
    );
    if (i < 0) return null;
    const f = st.failures[i]!;
    if (!f.persistent) st.failures.splice(i, 1);
    return f;
  }

  write(rel: string, text: string): void {
    this.store.transact((st) => {
      st.writeCount++;
      let target: { canon: string; abs: string };
      try {
        target = this.canonical(rel);
        const f = this.injected(st, rel, target.canon);
        if (f) throw new KernelErrno(f.errno, `injected failure (write #${st.writeCount})`);
        this.dispatch(st, target.canon, target.abs, text);
      } catch (error) {
        if (error instanceof KernelErrno) throw sysfsError('write', rel, this.abs(rel), errnoError(error.errno, error.why));
        throw error;
      }
    });
    this.writes++;
    this.hooks.afterWrite?.(this.writes, rel);
  }

  private dispatch(st: SimState, canon: string, abs: string, text: string): void {
    if (canon === PCI_DRIVERS_PROBE) {
      const bdf = text.trim();
      if (!this.devDir(bdf)) throw new KernelErrno('ENODEV', `no device ${JSON.stringify(bdf)}`);
      const r = this.withDirMemo(() => this.deviceAttach(st, bdf));
      // Probe failures inside the driver are swallowed (NOTES.md: returns OK, device stays driverless);
      // only errors from the bus itself (the DMA-ownership guard) reach the writer.
      if (r.rc < 0) throw new KernelErrno(r.errno ?? 'EIO', `attach of ${bdf} refused`);
      return;
    }
    if (canon === PCI_DRIVERS_AUTOPROBE) {
      const v = text.trim();
      if (!/^[01yYnN]/.test(v)) throw new KernelErrno('EINVAL', `drivers_autoprobe: ${JSON.stringify(text)}`);
      fs.writeFileSync(abs, /^[1yY]/.test(v) ? '1\n' : '0\n');
      return;
    }
    if (canon === PCI_RESCAN) {
      if (text.trim() !== '0') this.rescan(st);
      return;
    }
    const drv = parsePciDriverFile(canon);
    if (drv) {
      const { driver, op } = drv;
      const bdf = text.trim();
      if (op === 'new_id' || op === 'remove_id') return; // id tables are not modelled; isogroup never writes them
      const dir = this.devDir(bdf);
      if (!dir) throw new KernelErrno('ENODEV', `no device ${JSON.stringify(bdf)}`);
      if (op === 'unbind') {
        if (this.driverOf(bdf) !== driver) throw new KernelErrno('ENODEV', `${bdf} is not bound to ${driver}`);
        this.withDirMemo(() => this.unbindLinks(bdf, dir));
        this.log(`${driver} ${bdf}: unbound`);
        return;
      }
      if (!this.matches(st, bdf, driver)) throw new KernelErrno('ENODEV', `${driver} does not match ${bdf}`);
      if (this.driverOf(bdf) !== null) throw new KernelErrno('EBUSY', `${bdf} already has a driver`);
      const r = this.withDirMemo(() => this.probe(st, bdf, dir, driver));
      if (r.rc !== 0) throw new KernelErrno(r.errno ?? 'EIO', r.why ?? 'probe failed');
      return;
    }
    const dirRel = path.posix.dirname(canon);
    const name = path.posix.basename(canon);
    const bdf = path.posix.basename(dirRel);
    if (isBdf(bdf) && this.devDir(bdf) === dirRel) {
      switch (name) {
        case 'driver_override': {
          if (text.length >= 4095) throw new KernelErrno('EINVAL', 'driver_override too long');
          const v = text.endsWith('\n') ? text.slice(0, -1) : text;
          fs.writeFileSync(abs, v === '' ? '(null)\n' : `${v}\n`);
          return;
        }
        case 'remove':
          if (text.trim() !== '0') this.removeDevice(st, bdf as Bdf, true);
          return;
        case 'rescan':
          if (text.trim() !== '0') this.rescan(st);
          return;
        case 'sriov_numvfs':
          this.setNumVfs(st, bdf as Bdf, dirRel, text);
          return;
        case 'reset':
          if (!fs.existsSync(abs)) throw new KernelErrno('ENOENT', `${bdf} has no reset`);
          return;
        default:
          break;
      }
    }
    let mode: number;
    try {
      mode = fs.statSync(abs).mode;
    } catch {
      throw new KernelErrno('ENOENT', `${canon} does not exist`);
    }
    if ((mode & 0o222) === 0) throw new KernelErrno('EACCES', `${canon} is read-only`);
    if ((mode & 0o444) === 0) return; // write-only trigger we do not model
    fs.writeFileSync(abs, text);
  }

  // ---------------------------------------------------------------- operations outside write(2)
  /** Hot-add a device behind a bridge, as QEMU's device_add + the PCI hotplug driver do. */
  addDevice(options: AddDeviceOptions): AddDeviceResult {
    const bridge = parseBdf(options.bridge, 'bridge');
    const classCode = options.classCode ?? 0x020000;
    return this.store.transact((st) => {
      const bridgeDir = this.devDir(bridge);
      if (!bridgeDir) throw new IsogroupError('E_NOT_FOUND', `no bridge ${bridge} under ${this.root}`, { bridge });
      const cs = parseConfigSpace(this.config(bridgeDir));
      if (cs.layout !== 'bridge' || cs.secondaryBus === null) throw new IsogroupError('E_INVALID_INPUT', `${bridge} is not a PCI bridge`, { bridge });
      const p = splitBdf(bridge)!;
      const pcieOnly = cs.portType === 'root-port' || cs.portType === 'downstream-port';
      const bdf = options.bdf !== undefined ? parseBdf(options.bdf, 'bdf') : this.freeSlot(bridgeDir, cs.secondaryBus, p.domain, pcieOnly);
      const bp = splitBdf(bdf)!;
      if (bp.bus !== cs.secondaryBus || bp.domain !== p.domain)
        throw new IsogroupError('E_INVALID_INPUT', `${bdf} is not on bridge ${bridge}'s secondary bus ${hex(cs.secondaryBus, 2)}`, { bdf, bridge });
      if (this.devDir(bdf) || st.pending.some((x) => x.bdf === bdf)) throw new IsogroupError('E_INVALID_INPUT', `${bdf} is already present`, { bdf });
      const spec = { vendor: options.vendor, device: options.device, classCode, driver: options.driver ?? null, multifunction: options.multifunction ?? false };
      // Native SHPC hotplug is dead once shpchp is unbound from the bridge: the device shows up on rescan only.
      if (st.defaultDrivers[bridge] === 'shpchp' && this.driverOf(bridge) !== 'shpchp') {
        st.pending.push({ bridge: bridgeDir, bdf, ...spec });
        this.log(`shpchp: ${bridge} has no hotplug driver; ${bdf} waits for a rescan`);
        return { bdf, group: null, driver: null, attachError: null, pending: true };
      }
      const created = this.createDevice(st, bridgeDir, bdf, spec);
      // The host driver binds at once, whatever drivers_autoprobe says (pci_bus_add_device).
      const r = this.attachNew(st, bdf);
      return { bdf, group: created.group, driver: r.driver, attachError: r.attachError, pending: false };
    });
  }

  /** modprobe: register a driver (vfio-pci also brings /dev/vfio/vfio). */
  loadModule(name: string): void {
    const driver = name.replace(/_/g, '-');
    this.store.transact((st) => {
      const fresh = !this.driverLoaded(driver);
      ensureDriverDir(this.root, driver);
      fs.mkdirSync(this.abs(moduleParameters(name)), { recursive: true });
      if (driver === VFIO_DRIVER) this.writeFile(VFIO_CONTAINER, '');
      this.log(`modprobe ${name}`);
      // bus_add_driver(): a newly registered driver attaches to matching driverless devices, but only
      // while drivers_autoprobe is 1 (the one place the knob is honoured; NOTES.md hotplug step 6).
      if (!fresh || this.readAutoprobe() === false) return;
      for (const bdf of this.devices()) {
        const dir = this.devDir(bdf);
        if (dir && this.driverOf(bdf) === null && this.matches(st, bdf, driver)) this.probe(st, bdf, dir, driver);
      }
    });
  }

  private readAutoprobe(): boolean {
    try {
      return fs.readFileSync(this.abs(PCI_DRIVERS_AUTOPROBE), 'utf8').trim() !== '0';
    } catch {
      return true;
    }
  }

  /** Fail the n-th write from now (1 = the next one), or every write to a file, with errno. */
  injectFailure(f: { nth?: number; file?: string; errno?: string; persistent?: boolean }): void {
    this.store.transact((st) => {
      const failure: SimFailure = { errno: f.errno ?? 'EIO' };
      if (f.nth !== undefined) failure.at = st.writeCount + f.nth;
      if (f.file !== undefined) failure.file = f.file;
      if (f.persistent) failure.persistent = true;
      st.failures.push(failure);
    });
  }

  clearFailures(): void {
    this.store.transact((st) => {
      st.failures = [];
    });
  }

  setDefaultDriver(bdf: string, driver: string | null): void {
    const b = parseBdf(bdf);
    this.store.transact((st) => {
      st.defaultDrivers[b] = driver;
    });
  }

  defaultDriver(bdf: string): string | null {
    return this.store.transact((st) => this.defaultDriverOf(st, bdf));
  }

  /** Total sysfs writes this simulated kernel has seen (all processes). */
  writeCount(): number {
    return this.store.transact((st) => st.writeCount);
  }

  /** Writes done through this handle. */
  get writesByThisHandle(): number {
    return this.writes;
  }

  dmesg(): string[] {
    try {
      return fs
        .readFileSync(path.join(this.root, SIM_DIR, 'dmesg'), 'utf8')
        .split('\n')
        .filter(Boolean);
    } catch {
      return [];
    }
  }

  /** Low-level access for the VFIO simulation. */
  withState<T>(fn: (st: SimState) => T): T {
    return this.store.transact(fn);
  }

  port(): SimulatedSysfsPort {
    return new SimulatedSysfsPort(this);
  }

  reader(): SysfsPort {
    return this.node;
  }
}

/** SysfsPort over a fixture root whose writes have the kernel's semantics. Reads are the files. */
export class SimulatedSysfsPort implements SysfsPort {
  readonly root: string;
  readonly simulated = true;

  constructor(readonly kernel: SimKernel) {
    this.root = kernel.root;
  }

  /** The fixture kernel's port over a writable fixture root. */
  static open(root: string): SimulatedSysfsPort {
    return new SimKernel(root).port();
  }

  private get node(): SysfsPort {
    return this.kernel.reader();
  }

  readText(rel: string): string {
    return this.node.readText(rel);
  }
  readBytes(rel: string): Buffer {
    return this.node.readBytes(rel);
  }
  readLink(rel: string): string {
    return this.node.readLink(rel);
  }
  list(rel: string): DirEntry[] {
    return this.node.list(rel);
  }
  openDir(rel: string): DirReader {
    return openDir(this.node, rel);
  }
  kind(rel: string): EntryKind | null {
    return this.node.kind(rel);
  }
  exists(rel: string): boolean {
    return this.node.exists(rel);
  }
  writeText(rel: string, text: string): void {
    this.kernel.write(rel, text);
  }
}

export const isSimulatedPort = (port: SysfsPort): port is SimulatedSysfsPort => (port as { simulated?: unknown }).simulated === true;

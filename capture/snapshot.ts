import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { execaSync } from 'execa';
import { Header, Pax } from 'tar';
import { errnoOf, IsogroupError } from '../errors.js';
import {
  IOMMU_CLASS,
  IOMMU_GROUPS,
  iommuGroup,
  iommuUnit,
  isModulePath,
  meta,
  moduleParameters,
  PCI_BUS,
  PCI_DEVICES,
  PCI_DRIVERS,
  PCI_SLOTS,
  pciDriver,
  SYS_DEVICES,
  sysClass,
} from '../sysfs/paths.js';
import { linkTargetRel, resolveUnder, type SysfsPort } from '../sysfs/port.js';
import { scanHost } from '../sysfs/scan.js';

// Capture the PCI/IOMMU part of a sysfs into a .tar.gz with the layout of the oracle captures
// (shared/oracle/guest/capture_sysfs.py): the same members, symlinks stored as the kernel has them
// (relative), attribute files by content, write-only and unsafe files (resourceN, rom, vpd, bind ...)
// as empty placeholders with the kernel's mode bits. Never follows a symlink to read or list
// anything: links are only read as links, and directories are entered only when they are real
// directories below ROOT/sys. One deliberate superset of the script: VMD domains (pci10000:00 below
// the VMD endpoint, 5-digit-domain BDFs) are walked too, where the script would leave them dangling.

export interface SnapshotResult {
  out: string;
  root: string;
  members: number;
  devices: number;
  groups: number;
  /** Files that could not be read (stored empty), as "sys/...: ERRNO". */
  errors: string[];
}

/** The file operations the capture needs; root-relative paths. Tests wrap it to inject EIO/EACCES. */
export interface SnapshotFs {
  lstat(rel: string): { kind: 'file' | 'dir' | 'link' | 'other'; mode: number; size: number } | null;
  readdir(rel: string): string[];
  readlink(rel: string): string;
  readFile(rel: string): Buffer;
}

export const nodeSnapshotFs = (root: string): SnapshotFs => ({
  lstat(rel) {
    try {
      const st = fs.lstatSync(resolveUnder(root, rel));
      const kind = st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
      return { kind, mode: st.mode & 0o7777, size: st.size };
    } catch {
      return null;
    }
  },
  readdir: (rel) => fs.readdirSync(resolveUnder(root, rel)),
  readlink: (rel) => fs.readlinkSync(resolveUnder(root, rel)),
  // O_NOFOLLOW: a file that turned into a symlink since lstat is not followed.
  readFile: (rel) => {
    const fd = fs.openSync(resolveUnder(root, rel), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      return fs.readFileSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  },
});

const BDF_RE = /^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
const HOST_BRIDGE_RE = /^pci[0-9a-f]{4,8}:[0-9a-f]{2}$/;
const PLACEHOLDER_RE = /^(resource\d+(_wc)?|rom|vpd|remove|rescan|reset|bind|unbind|new_id|remove_id|drivers_probe|dev_rescan|sriov_vf_msix_count)$/;
const NAMED_CHILD_DIRS = new Set(['net', 'nvme', 'block', 'drm', 'sound', 'vfio-dev', 'host0']);
const NAMED_CHILD_RE = /^(virtio\d+|usb\d+|ata\d+|host\d+|vfio-dev)$/;
const SUBDIRS_WITH_FILES = new Set(['power', 'msi_irqs', 'link']);
const MAX_FILE = 1 << 20;

type Member = { name: string; type: 'Directory' | 'File' | 'SymbolicLink'; mode: number; data?: Buffer; linkpath?: string; uname?: string };

class Capture {
  readonly members: Member[] = [];
  readonly errors: string[] = [];
  private readonly seen = new Set<string>();
  private readonly links: string[] = [];

  constructor(private readonly fsx: SnapshotFs) {}

  private isDir(rel: string): boolean {
    return this.fsx.lstat(rel)?.kind === 'dir';
  }

  private list(rel: string): string[] {
    try {
      return this.fsx.readdir(rel).sort();
    } catch (error) {
      // A directory the kernel does not have here (no slots, no drivers dir) is not an error.
      if (errnoOf(error) !== 'ENOENT') this.errors.push(`${rel}: ${errnoOf(error) ?? String(error)}`);
      return [];
    }
  }

  // True when every component of rel is a real directory (no symlink anywhere on the way).
  private isRealDir(rel: string): boolean {
    const parts = rel.split('/');
    for (let i = 1; i <= parts.length; i++) if (this.fsx.lstat(parts.slice(0, i).join('/'))?.kind !== 'dir') return false;
    return true;
  }

  addDir(rel: string): void {
    if (this.seen.has(rel)) return;
    const parent = path.posix.dirname(rel);
    if (rel !== 'sys' && parent !== '.' && parent !== rel) this.addDir(parent);
    this.seen.add(rel);
    const st = this.fsx.lstat(rel);
    this.members.push({ name: `${rel}/`, type: 'Directory', mode: st ? st.mode : 0o755 });
  }

  addLink(rel: string): void {
    if (this.seen.has(rel)) return;
    let target: string;
    try {
      target = this.fsx.readlink(rel);
    } catch (error) {
      this.errors.push(`${rel}: ${errnoOf(error) ?? String(error)}`);
      return;
    }
    this.addDir(path.posix.dirname(rel));
    this.seen.add(rel);
    this.links.push(rel);
    this.members.push({ name: rel, type: 'SymbolicLink', mode: 0o777, linkpath: target });
  }

  addFile(rel: string, mode: number, size: number, placeholder: boolean): void {
    if (this.seen.has(rel)) return;
    let data: Buffer = Buffer.alloc(0);
    if (!placeholder && (mode & 0o444) !== 0) {
      if (size > MAX_FILE) this.errors.push(`${rel}: larger than ${MAX_FILE} bytes, stored empty`);
      else {
        try {
          data = this.fsx.readFile(rel);
        } catch (error) {
          // EIO/EINVAL/EACCES on some attributes: keep an empty file, as the capture script does.
          this.errors.push(`${rel}: ${errnoOf(error) ?? String(error)}`);
        }
      }
    }
    this.addDir(path.posix.dirname(rel));
    this.seen.add(rel);
    this.members.push({ name: rel, type: 'File', mode, data });
  }

  addEntry(rel: string): void {
    const st = this.fsx.lstat(rel);
    if (!st) return;
    if (st.kind === 'link') this.addLink(rel);
    else if (st.kind === 'file') this.addFile(rel, st.mode, st.size, PLACEHOLDER_RE.test(path.posix.basename(rel)));
  }

  // A directory with its files and links; only subdirectories named in `recurse` are entered.
  addFlatDir(rel: string, recurse: ReadonlySet<string> = new Set()): void {
    if (!this.isDir(rel)) return;
    this.addDir(rel);
    for (const e of this.list(rel)) {
      const p = `${rel}/${e}`;
      const st = this.fsx.lstat(p);
      if (st?.kind === 'dir') {
        if (recurse.has(e)) this.addFlatDir(p, recurse);
      } else this.addEntry(p);
    }
  }

  addHostBridge(rel: string): void {
    this.addDir(rel);
    for (const c of this.list(rel)) {
      const p = `${rel}/${c}`;
      const st = this.fsx.lstat(p);
      if (BDF_RE.test(c) && st?.kind === 'dir') this.addPciDevice(p);
      else if (c === 'pci_bus' && st?.kind === 'dir') for (const b of this.list(p)) this.addFlatDir(`${p}/${b}`);
      else if (c === 'uevent' || st?.kind === 'link') this.addEntry(p);
      else if (c === 'power') this.addFlatDir(p);
    }
  }

  addPciDevice(rel: string): void {
    this.addDir(rel);
    for (const e of this.list(rel)) {
      const p = `${rel}/${e}`;
      const st = this.fsx.lstat(p);
      if (!st) continue;
      if (st.kind === 'link' || st.kind === 'file') this.addEntry(p);
      else if (st.kind === 'dir') {
        if (BDF_RE.test(e)) this.addPciDevice(p);
        else if (HOST_BRIDGE_RE.test(e)) this.addHostBridge(p);
        else if (SUBDIRS_WITH_FILES.has(e)) this.addFlatDir(p);
        else if (e === 'pci_bus') for (const b of this.list(p)) this.addFlatDir(`${p}/${b}`);
        else if (NAMED_CHILD_DIRS.has(e) || NAMED_CHILD_RE.test(e)) {
          this.addDir(p);
          for (const c of this.list(p)) if (this.isDir(`${p}/${c}`)) this.addDir(`${p}/${c}`);
        }
      }
    }
  }

  // Follow a link by path arithmetic only; null when it leaves sys/ or loops.
  private target(rel: string): string | null {
    let cur = rel;
    for (let hop = 0; hop < 8; hop++) {
      const st = this.fsx.lstat(cur);
      if (st?.kind !== 'link') return cur;
      let t: string;
      try {
        t = this.fsx.readlink(cur);
      } catch {
        return null;
      }
      const next = linkTargetRel(cur, t);
      if (next === null || !next.startsWith('sys/')) return null;
      cur = next;
    }
    return null;
  }

  private realTarget(rel: string): string | null {
    const t = this.target(rel);
    return t !== null && this.isRealDir(t) ? t : null;
  }

  run(): void {
    // 1. PCI host bridges and everything under them.
    for (const e of this.list(SYS_DEVICES)) if (e.startsWith('pci') && this.isDir(`${SYS_DEVICES}/${e}`)) this.addHostBridge(`${SYS_DEVICES}/${e}`);
    // 2. /sys/bus/pci: device links, drivers (bound-device links, placeholders), slots, knobs.
    this.addFlatDir(PCI_BUS);
    this.addFlatDir(PCI_DEVICES);
    for (const d of this.list(PCI_DRIVERS)) this.addFlatDir(pciDriver(d));
    if (this.isDir(PCI_SLOTS)) {
      this.addDir(PCI_SLOTS);
      for (const s of this.list(PCI_SLOTS)) this.addFlatDir(`${PCI_SLOTS}/${s}`);
    }
    // 3. IOMMU groups, in numeric order.
    if (this.isDir(IOMMU_GROUPS)) {
      this.addDir(IOMMU_GROUPS);
      const ids = this.list(IOMMU_GROUPS)
        .filter((n) => /^\d+$/.test(n))
        .sort((a, b) => Number(a) - Number(b));
      for (const n of ids) this.addFlatDir(iommuGroup(n), new Set(['devices']));
    }
    // 4. The IOMMU class and the IOMMU devices it links to.
    if (this.isDir(IOMMU_CLASS)) {
      this.addFlatDir(IOMMU_CLASS);
      for (const e of this.list(IOMMU_CLASS)) {
        const real = this.realTarget(iommuUnit(e));
        if (real) this.addFlatDir(real, new Set(['intel-iommu', 'amd-iommu', 'devices', 'power']));
      }
    }
    // 5. vfio-related module parameters and class directories.
    for (const m of ['vfio', 'vfio_pci', 'vfio_pci_core', 'vfio_iommu_type1', 'pcieport', 'pci_stub']) this.addFlatDir(moduleParameters(m));
    for (const cls of ['vfio', 'vfio-dev', 'pci_bus']) if (this.isDir(sysClass(cls))) this.addFlatDir(sysClass(cls));
    // 6. "module" links resolve to (empty) sys/module/<name> directories.
    for (const l of [...this.links]) {
      let t: string;
      try {
        t = this.fsx.readlink(l);
      } catch {
        continue;
      }
      const real = linkTargetRel(l, t);
      if (real !== null && isModulePath(real)) this.addDir(real);
    }
  }
}

const pad512 = (n: number): number => (512 - (n % 512)) % 512;

// One tar stream (ustar headers, pax records for long names), built with the tar package's encoders.
export const encodeTar = (members: Member[]): Buffer => {
  const chunks: Buffer[] = [];
  const epoch = new Date(0);
  for (const m of members) {
    const size = m.type === 'File' ? (m.data?.length ?? 0) : 0;
    const data = {
      path: m.name,
      mode: m.mode,
      uid: 0,
      gid: 0,
      size,
      mtime: epoch,
      type: m.type,
      uname: m.uname ?? 'root',
      gname: m.uname ?? 'root',
      ...(m.linkpath !== undefined ? { linkpath: m.linkpath } : {}),
    };
    const header = new Header(data);
    header.encode();
    if (header.needPax) {
      const pax = new Pax({ path: m.name, ...(m.linkpath !== undefined ? { linkpath: m.linkpath } : {}), mtime: epoch }).encode();
      chunks.push(pax);
    }
    chunks.push(header.block!);
    if (size > 0) {
      chunks.push(m.data!);
      chunks.push(Buffer.alloc(pad512(size)));
    }
  }
  chunks.push(Buffer.alloc(1024));
  return Buffer.concat(chunks);
};

const tryText = (file: string): string | null => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
};

// meta/: what the capture script records next to sys/. For the live host: uname, cmdline, modules and
// lspci's own views; for a root that already carries meta/ (an unpacked capture), its files as they are.
const metaFiles = (root: string, errors: string[]): Map<string, Buffer> => {
  const out = new Map<string, Buffer>();
  const metaDir = path.join(root, 'meta');
  if (root !== '/' && fs.existsSync(metaDir) && fs.lstatSync(metaDir).isDirectory()) {
    for (const name of fs.readdirSync(metaDir).sort()) {
      if (name === 'snapshot.json') continue;
      const st = fs.lstatSync(path.join(metaDir, name));
      if (st.isFile() && st.size <= 16 * MAX_FILE) out.set(name, fs.readFileSync(path.join(metaDir, name)));
    }
    return out;
  }
  if (root !== '/') return out;
  out.set('uname', Buffer.from(`${os.type()} ${os.hostname()} ${os.release()} ${os.version()} ${os.machine()}\n`));
  for (const [name, file] of [
    ['cmdline', '/proc/cmdline'],
    ['modules', '/proc/modules'],
  ] as const) {
    const t = tryText(file);
    if (t !== null) out.set(name, Buffer.from(t));
  }
  for (const [name, args] of [
    ['lspci-nn.txt', ['-nn']],
    ['lspci-tv.txt', ['-tv']],
    ['lspci-vvv.txt', ['-vvv']],
  ] as const) {
    try {
      const r = execaSync('lspci', [...args], { timeout: 20_000, reject: false, all: true });
      if (r.exitCode === 0) out.set(name, Buffer.from(`${r.all ?? ''}\n`));
      else errors.push(`${meta(name)}: lspci exited ${r.exitCode ?? r.signal ?? 'abnormally'}`);
    } catch (error) {
      errors.push(`${meta(name)}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
    }
  }
  return out;
};

/** Capture a root's sysfs (port.root) into `out` (.tar.gz), atomically. */
export const writeSnapshot = (port: SysfsPort, out: string, fsx: SnapshotFs = nodeSnapshotFs(port.root)): SnapshotResult => {
  if (fsx.lstat('sys')?.kind !== 'dir') {
    throw new IsogroupError('E_INVALID_INPUT', `${port.root} has no sys/ directory to capture`, { root: port.root });
  }
  const capture = new Capture(fsx);
  capture.run();
  const snap = scanHost(port, { pciIds: null });
  const members = capture.members;
  const metas = metaFiles(port.root, capture.errors);
  const summary = {
    tool: 'isogroup snapshot',
    capturedAt: new Date().toISOString(),
    root: port.root,
    members: members.length + metas.size + 1, // sys/ members, meta files, and this file
    devices: snap.devices.size,
    groups: snap.kernelGroups.size,
    readErrors: capture.errors,
  };
  metas.set('snapshot.json', Buffer.from(`${JSON.stringify(summary, null, 1)}\n`));
  for (const [name, data] of metas) members.push({ name: meta(name), type: 'File', mode: 0o644, data, uname: '' });
  const gz = zlib.gzipSync(encodeTar(members), { level: 6 });
  const dest = path.resolve(out);
  const tmp = `${dest}.tmp-${process.pid}`;
  try {
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(tmp, gz);
    fs.renameSync(tmp, dest);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw new IsogroupError('E_INVALID_INPUT', `cannot write ${out}: ${errnoOf(error) ?? String(error)}`, { out }, { cause: error });
  }
  return { out: dest, root: port.root, members: members.length, devices: snap.devices.size, groups: snap.kernelGroups.size, errors: capture.errors };
};

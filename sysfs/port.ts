import * as fs from 'node:fs';
import * as path from 'node:path';
import { codeForErrno, errnoOf, IsogroupError } from '../errors.js';
import { type FileCalls, fileCalls } from '../os/libc.js';

export type EntryKind = 'file' | 'dir' | 'link' | 'other';

export interface DirEntry {
  name: string;
  kind: EntryKind;
}

/**
 * The only seam to the kernel's files. Paths are root-relative ("sys/bus/pci/devices").
 * Synchronous on purpose: sysfs attributes are generated in memory by the kernel, and at
 * 10k devices the thread-pool hop of fs/promises costs more than the reads themselves.
 */
export interface SysfsPort {
  readonly root: string;
  readText(rel: string): string;
  readBytes(rel: string): Buffer;
  readLink(rel: string): string;
  list(rel: string): DirEntry[];
  kind(rel: string): EntryKind | null;
  exists(rel: string): boolean;
  writeText(rel: string, text: string): void;
  /** A reader for many entries of one directory (see openDir); ports without one read each entry by path. */
  openDir?(rel: string): DirReader;
}

/**
 * The entries of one directory, read by name: a device scan reads ~20 from one directory. Names are
 * single components (anything else is read by its path, with the port's checks). Close it after.
 */
export interface DirReader {
  /** As SysfsPort.list: sorted by name, as node:fs (libuv's scandir) returns them. */
  list(): DirEntry[];
  /** The same entries by name, in no particular order (no sort: a scan only looks names up). */
  entries(): ReadonlyMap<string, EntryKind>;
  readText(name: string): string;
  readBytes(name: string): Buffer;
  readLink(name: string): string;
  close(): void;
}

/** Each entry read by its path through the port (ports without a directory reader of their own). */
export const pathReader = (port: SysfsPort, rel: string): DirReader => ({
  list: () => port.list(rel),
  entries: () => new Map(port.list(rel).map((e) => [e.name, e.kind])),
  readText: (name) => port.readText(`${rel}/${name}`),
  readBytes: (name) => port.readBytes(`${rel}/${name}`),
  readLink: (name) => port.readLink(`${rel}/${name}`),
  close() {},
});

/** The port's own directory reader, or one that reads each entry by its path. */
export const openDir = (port: SysfsPort, rel: string): DirReader => port.openDir?.(rel) ?? pathReader(port, rel);

// Resolve a root-relative path, refusing anything that climbs out of the root.
export const resolveUnder = (root: string, rel: string): string => {
  const clean = path.posix.normalize(`/${rel}`);
  if (clean.split('/').includes('..')) {
    throw new IsogroupError('E_INVALID_INPUT', `path ${JSON.stringify(rel)} leaves the root`, { path: rel });
  }
  return path.join(root, clean);
};

export const sysfsError = (op: string, rel: string, abs: string, error: unknown): IsogroupError => {
  const errno = errnoOf(error);
  const reason = error instanceof Error ? error.message : String(error);
  return new IsogroupError(codeForErrno(errno), `${op} ${abs}: ${errno ?? reason}`, { op, path: rel, file: abs, errno }, { cause: error });
};

const kindOf = (d: fs.Dirent | fs.Stats): EntryKind => (d.isSymbolicLink() ? 'link' : d.isDirectory() ? 'dir' : d.isFile() ? 'file' : 'other');

// A path built from listed names and normalized link targets needs no normalizing: no leading "/", no
// component starting with "." (so no "." or ".."), no "//", no NUL. Checking that is far cheaper than
// path.normalize, which at 10,000 devices cost as much as the reads themselves.
const isCleanRel = (rel: string): boolean =>
  rel.length > 0 && rel.charCodeAt(0) !== 47 && rel.charCodeAt(0) !== 46 && !rel.includes('/.') && !rel.includes('//') && !rel.includes('\0');

// One buffer for every read: open, read, close (no fstat, no allocation per file).
let scratch = Buffer.allocUnsafe(8192);
const readAll = (fd: number, read: (fd: number, buf: Buffer, at: number, len: number) => number): Buffer => {
  let len = 0;
  for (;;) {
    if (len === scratch.length) {
      const bigger = Buffer.allocUnsafe(scratch.length * 2);
      scratch.copy(bigger, 0, 0, len);
      scratch = bigger;
    }
    const n = read(fd, scratch, len, scratch.length - len);
    if (n < 0) return READ_FAILED;
    if (n === 0) break;
    len += n;
    // sysfs returns a whole attribute in one read; a short read of a regular file is its end.
    if (len < scratch.length) break;
  }
  return scratch.subarray(0, len);
};
const READ_FAILED = Buffer.alloc(0);

const fsRead = (fd: number, buf: Buffer, at: number, len: number): number => fs.readSync(fd, buf, at, len, null);

const readWhole = (abs: string): Buffer => {
  const fd = fs.openSync(abs, 'r');
  try {
    return readAll(fd, fsRead);
  } finally {
    fs.closeSync(fd);
  }
};

// biome-ignore lint/suspicious/noControlCharactersInRegex: a name is plain when every byte is 0x01-0x7f.
const ASCII = /^[\x01-\x7f]*$/;
const DT_DIR = 4;
const DT_REG = 8;
const DT_LNK = 10;
const O_DIR = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY;
const isPlainName = (name: string): boolean => name.length > 0 && name.charCodeAt(0) !== 46 && !name.includes('/') && !name.includes('\0');

// A directory held open: entries are opened relative to it (openat, readlinkat, getdents64 through
// koffi), so the kernel walks one component per read instead of the whole path, and node:fs's
// per-call cost is skipped. Any failure is retried by path (pathReader), so errors (and their
// messages) are exactly node:fs's.
class FdDirReader implements DirReader {
  private fd: number;
  private readonly byPath: DirReader;
  private readonly readAt = (fd: number, buf: Buffer, at: number, len: number): number => this.calls.read(fd, at === 0 ? buf : buf.subarray(at), len);

  constructor(
    port: NodeSysfsPort,
    rel: string,
    fd: number,
    private readonly calls: FileCalls,
  ) {
    this.fd = fd;
    this.byPath = pathReader(port, rel);
  }

  list(): DirEntry[] {
    const read = this.readEntries();
    if (read === null) return this.byPath.list();
    const out: DirEntry[] = [];
    for (const [name, kind] of read) out.push({ name, kind });
    // libuv sorts by strcmp; for ASCII names (readEntries returns null for others) that is string order.
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  entries(): ReadonlyMap<string, EntryKind> {
    return this.readEntries() ?? this.byPath.entries();
  }

  // The directory is read once per reader (its offset stays at the end).
  private listed: Map<string, EntryKind> | null | undefined;

  private readEntries(): ReadonlyMap<string, EntryKind> | null {
    if (this.listed === undefined) this.listed = this.getdents();
    return this.listed;
  }

  // getdents64 into a map; null when node:fs must answer instead (a failed call, a type the
  // filesystem left unknown (node:fs then asks lstat), a name that is not ASCII).
  private getdents(): Map<string, EntryKind> | null {
    const out = new Map<string, EntryKind>();
    const buf = direntBuffer;
    for (;;) {
      const n = this.fd < 0 ? -1 : this.calls.getdents64(this.fd, buf, buf.length);
      if (n < 0) return null;
      if (n === 0) return out;
      for (let at = 0; at < n; ) {
        const reclen = buf.readUInt16LE(at + 16);
        const type = buf[at + 18]!;
        const end = buf.indexOf(0, at + 19);
        const name = buf.toString('latin1', at + 19, end);
        at += reclen;
        if (name === '.' || name === '..') continue;
        if (type !== DT_DIR && type !== DT_REG && type !== DT_LNK) return null;
        if (!ASCII.test(name)) return null;
        out.set(name, type === DT_LNK ? 'link' : type === DT_DIR ? 'dir' : 'file');
      }
    }
  }

  private readRaw(name: string): Buffer | null {
    if (this.fd < 0 || !isPlainName(name)) return null;
    const fd = this.calls.openat(this.fd, name, fs.constants.O_RDONLY);
    if (fd < 0) return null;
    try {
      const data = readAll(fd, this.readAt);
      return data === READ_FAILED ? null : data;
    } finally {
      this.calls.close(fd);
    }
  }

  readText(name: string): string {
    const data = this.readRaw(name);
    return data === null ? this.byPath.readText(name) : data.toString('utf8');
  }

  readBytes(name: string): Buffer {
    const data = this.readRaw(name);
    return data === null ? this.byPath.readBytes(name) : Buffer.from(data);
  }

  readLink(name: string): string {
    if (this.fd >= 0 && isPlainName(name)) {
      const n = this.calls.readlinkat(this.fd, name, linkBuffer, linkBuffer.length);
      if (n >= 0 && n < linkBuffer.length) return linkBuffer.toString('utf8', 0, n);
    }
    return this.byPath.readLink(name);
  }

  close(): void {
    if (this.fd >= 0) this.calls.close(this.fd);
    this.fd = -1;
  }
}

const direntBuffer = Buffer.allocUnsafe(32768);
const linkBuffer = Buffer.allocUnsafe(4096);

export class NodeSysfsPort implements SysfsPort {
  readonly root: string;
  private readonly prefix: string;

  constructor(root = '/') {
    this.root = path.resolve(root);
    this.prefix = this.root.endsWith('/') ? this.root : `${this.root}/`;
  }

  // The directory part of the last clean path: a scan reads ~20 attributes of one directory in a row,
  // and then only the name after it needs checking.
  private cleanDir = '';

  abs(rel: string): string {
    const dir = this.cleanDir;
    const slash = rel.lastIndexOf('/');
    if (slash > 0 && slash === dir.length && rel.startsWith(dir)) {
      const c = rel.charCodeAt(slash + 1);
      if (slash + 1 < rel.length && c !== 46 && rel.indexOf('\0', slash) < 0) return this.prefix + rel;
    }
    if (!isCleanRel(rel)) return resolveUnder(this.root, rel);
    if (slash > 0) this.cleanDir = rel.slice(0, slash);
    return this.prefix + rel;
  }

  openDir(rel: string): DirReader {
    const calls = fileCalls();
    if (calls === null) return pathReader(this, rel);
    const fd = calls.open(this.abs(rel), O_DIR);
    // Not there, or not a directory: the path reads give the errors node:fs gives.
    return fd < 0 ? pathReader(this, rel) : new FdDirReader(this, rel, fd, calls);
  }

  readText(rel: string): string {
    const abs = this.abs(rel);
    try {
      return readWhole(abs).toString('utf8');
    } catch (error) {
      throw sysfsError('read', rel, abs, error);
    }
  }

  readBytes(rel: string): Buffer {
    const abs = this.abs(rel);
    try {
      return Buffer.from(readWhole(abs));
    } catch (error) {
      throw sysfsError('read', rel, abs, error);
    }
  }

  readLink(rel: string): string {
    const abs = this.abs(rel);
    try {
      return fs.readlinkSync(abs);
    } catch (error) {
      throw sysfsError('readlink', rel, abs, error);
    }
  }

  list(rel: string): DirEntry[] {
    const abs = this.abs(rel);
    try {
      const dirents = fs.readdirSync(abs, { withFileTypes: true });
      const out: DirEntry[] = new Array(dirents.length);
      for (let i = 0; i < dirents.length; i++) out[i] = { name: dirents[i]!.name, kind: kindOf(dirents[i]!) };
      return out;
    } catch (error) {
      throw sysfsError('list', rel, abs, error);
    }
  }

  kind(rel: string): EntryKind | null {
    try {
      return kindOf(fs.lstatSync(this.abs(rel)));
    } catch {
      return null;
    }
  }

  exists(rel: string): boolean {
    return fs.existsSync(this.abs(rel));
  }

  // One write(2) of the whole value, as `echo v > attr` does (O_TRUNC is ignored by sysfs; no O_CREAT).
  writeText(rel: string, text: string): void {
    const abs = this.abs(rel);
    let fd: number | undefined;
    try {
      fd = fs.openSync(abs, fs.constants.O_WRONLY | fs.constants.O_TRUNC);
      fs.writeSync(fd, text);
    } catch (error) {
      throw sysfsError('write', rel, abs, error);
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
}

// Resolve a symlink found at `linkRel` to a root-relative target path (no fs access); null when it
// climbs out of the root.
export const linkTargetRel = (linkRel: string, target: string): string | null => {
  if (target.startsWith('/')) return path.posix.normalize(target).replace(/^\/+/, '');
  // sysfs links are "../../../devices/..." from a clean path: drop components instead of normalizing
  // (path.normalize was a visible share of a 10,000-device scan).
  let up = 0;
  while (target.startsWith('../', up * 3)) up++;
  const rest = target.slice(up * 3);
  const slash = linkRel.lastIndexOf('/');
  if (slash > 0 && slash < linkRel.length - 1 && isCleanRel(linkRel) && isCleanRel(rest) && !rest.endsWith('/')) {
    const dir = linkRel.slice(0, slash);
    let end = dir.length;
    for (let i = 0; i < up && end >= 0; i++) end = dir.lastIndexOf('/', end - 1);
    if (end >= 0) return `${dir.slice(0, end)}/${rest}`;
    // Climbed past the last "/": the target is `rest` itself when exactly every component was popped.
    return up === dir.split('/').length ? rest : null;
  }
  const joined = path.posix.normalize(path.posix.join(path.posix.dirname(linkRel), target));
  if (joined.startsWith('..')) return null;
  return joined;
};

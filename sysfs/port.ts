import * as fs from 'node:fs';
import * as path from 'node:path';
import { IsogroupError, codeForErrno, errnoOf } from '../errors.js';

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
}

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

const kindOf = (d: fs.Dirent | fs.Stats): EntryKind =>
  d.isSymbolicLink() ? 'link' : d.isDirectory() ? 'dir' : d.isFile() ? 'file' : 'other';

export class NodeSysfsPort implements SysfsPort {
  readonly root: string;

  constructor(root = '/') {
    this.root = path.resolve(root);
  }

  abs(rel: string): string {
    return resolveUnder(this.root, rel);
  }

  readText(rel: string): string {
    const abs = this.abs(rel);
    try {
      return fs.readFileSync(abs, 'utf8');
    } catch (error) {
      throw sysfsError('read', rel, abs, error);
    }
  }

  readBytes(rel: string): Buffer {
    const abs = this.abs(rel);
    try {
      return fs.readFileSync(abs);
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
      return fs.readdirSync(abs, { withFileTypes: true }).map((d) => ({ name: d.name, kind: kindOf(d) }));
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

// Resolve a symlink found at `linkRel` to a root-relative target path (no fs access).
export const linkTargetRel = (linkRel: string, target: string): string | null => {
  if (target.startsWith('/')) return path.posix.normalize(target).replace(/^\/+/, '');
  const joined = path.posix.normalize(path.posix.join(path.posix.dirname(linkRel), target));
  if (joined.startsWith('..')) return null;
  return joined;
};

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tar from 'tar';
import { IsogroupError } from '../errors.js';

// A root is a directory that looks like "/" (the live host or a fixture), or a capture tarball
// (oracle/captures layout: sys/... and meta/...), unpacked once into a cache for read-only use.

export const isTarball = (p: string): boolean => /\.(tar\.gz|tgz|tar)$/.test(p);

const cacheBase = (): string => process.env.ISOGROUP_CACHE ?? path.join(os.homedir(), '.cache', 'isogroup', 'roots');

export const unpackCapture = (tarball: string, into?: string): string => {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(tarball);
  } catch (error) {
    throw new IsogroupError('E_INVALID_INPUT', `capture ${tarball} cannot be read: ${(error as NodeJS.ErrnoException).code ?? error}`, { file: tarball }, { cause: error });
  }
  const key = crypto.createHash('sha256').update(`${path.resolve(tarball)}:${stat.size}:${stat.mtimeMs}`).digest('hex').slice(0, 16);
  const dest = into ?? path.join(cacheBase(), `${path.basename(tarball).replace(/\.(tar\.gz|tgz|tar)$/, '')}-${key}`);
  if (!into && fs.existsSync(path.join(dest, '.complete'))) return dest;
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    tar.x({ file: tarball, cwd: tmp, sync: true, preservePaths: false, strict: true });
  } catch (error) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new IsogroupError('E_INVALID_INPUT', `capture ${tarball} is not a readable tar archive: ${(error as Error).message}`, { file: tarball }, { cause: error });
  }
  if (!fs.existsSync(path.join(tmp, 'sys'))) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new IsogroupError('E_INVALID_INPUT', `capture ${tarball} has no sys/ directory at its top`, { file: tarball });
  }
  fs.writeFileSync(path.join(tmp, '.complete'), `${tarball}\n`);
  fs.rmSync(dest, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.renameSync(tmp, dest);
  return dest;
};

/** Turn a --root argument into a directory. */
export const resolveRoot = (root: string | undefined): string => {
  const r = root ?? '/';
  if (isTarball(r)) return unpackCapture(r);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(r);
  } catch {
    throw new IsogroupError('E_INVALID_INPUT', `root ${r} does not exist`, { root: r });
  }
  if (!stat.isDirectory()) throw new IsogroupError('E_INVALID_INPUT', `root ${r} is neither a directory nor a capture tarball`, { root: r });
  return path.resolve(r);
};

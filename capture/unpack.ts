import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar';
import { IsogroupError } from '../errors.js';

// A root is a directory that looks like "/" (the live host or a fixture), or a capture tarball
// (oracle/captures layout: sys/... and meta/...), unpacked once into a cache for read-only use.

export const isTarball = (p: string): boolean => /\.(tar\.gz|tgz|tar)$/.test(p);

/**
 * Unpack a capture into `into` (a new directory), or, without `into`, into `cacheDir` under a name
 * keyed by the tarball's path, size and mtime, so the same capture is unpacked once.
 */
export const unpackCapture = (tarball: string, into: string | null, cacheDir?: string): string => {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(tarball);
  } catch (error) {
    throw new IsogroupError(
      'E_INVALID_INPUT',
      `capture ${tarball} cannot be read: ${(error as NodeJS.ErrnoException).code ?? error}`,
      { file: tarball },
      { cause: error },
    );
  }
  const key = crypto
    .createHash('sha256')
    .update(`${path.resolve(tarball)}:${stat.size}:${stat.mtimeMs}`)
    .digest('hex')
    .slice(0, 16);
  if (into === null && cacheDir === undefined) throw new IsogroupError('E_INTERNAL', 'unpackCapture needs a directory or a cache', { file: tarball });
  const dest = into ?? path.join(cacheDir!, `${path.basename(tarball).replace(/\.(tar\.gz|tgz|tar)$/, '')}-${key}`);
  if (!into && fs.existsSync(path.join(dest, '.complete'))) return dest;
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    tar.x({ file: tarball, cwd: tmp, sync: true, preservePaths: false, strict: true });
  } catch (error) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new IsogroupError(
      'E_INVALID_INPUT',
      `capture ${tarball} is not a readable tar archive: ${(error as Error).message}`,
      { file: tarball },
      { cause: error },
    );
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

/** A --root argument as a directory: itself, or a capture tarball unpacked into the cache. */
export const rootDirectory = (root: string, cacheDir: string): string => {
  if (isTarball(root)) return unpackCapture(root, null, cacheDir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(root);
  } catch {
    throw new IsogroupError('E_INVALID_INPUT', `root ${root} does not exist`, { root });
  }
  if (!stat.isDirectory()) throw new IsogroupError('E_INVALID_INPUT', `root ${root} is neither a directory nor a capture tarball`, { root });
  return path.resolve(root);
};

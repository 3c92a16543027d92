import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixturesDir = path.join(repoRoot, 'fixtures');
export const bundledCapture = (name: string): string => path.join(fixturesDir, 'captures', `${name}.tar.gz`);

/** ../shared (the oracle and the real-machine data). Tests that need it fail loudly if it is missing. */
export const sharedDir = (): string => {
  const dir = process.env.ISOGROUP_SHARED ?? path.resolve(repoRoot, '..', 'shared');
  if (!fs.existsSync(path.join(dir, 'oracle'))) throw new Error(`shared data not found at ${dir} (set ISOGROUP_SHARED)`);
  return dir;
};

/** Whether ../shared is there: tests over it skip (visibly, by name) in a fresh clone without it. */
export const haveShared = (): boolean => {
  try {
    sharedDir();
    return true;
  } catch {
    return false;
  }
};

export const oracleCaptures = (): { name: string; tarball: string; groupsJson: string }[] => {
  const dir = path.join(sharedDir(), 'oracle', 'captures');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.tar.gz'))
    .map((f) => {
      const name = f.replace(/\.tar\.gz$/, '');
      return { name, tarball: path.join(dir, f), groupsJson: path.join(dir, `${name}.groups.json`) };
    });
};

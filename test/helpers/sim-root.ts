import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onTestFinished } from 'vitest';
import { unpackCapture } from '../../capture/unpack.js';
import { openSimulatedRoot, type SimulatedRoot } from '../../sim/index.js';
import { bundledCapture } from './paths.js';

// Writable copies of a bundled capture for the fixture kernel. The capture is unpacked once per
// worker; each test gets its own `cp -a` copy (cheap next to a tar extraction).

const pristine = new Map<string, string>();

// Fixture roots are thousands of small files: keep them on tmpfs when the machine has one.
const base = (): string => (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());

/** A scratch directory on tmpfs, removed when the test finishes. */
export const fastTmpDir = (): string => {
  const dir = fs.mkdtempSync(path.join(base(), 'isogroup-sim-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
};

export const pristineRoot = (name: string): string => {
  let dir = pristine.get(name);
  if (!dir) {
    dir = path.join(fs.mkdtempSync(path.join(base(), `isogroup-pristine-${name}-`)), 'root');
    unpackCapture(bundledCapture(name), dir);
    pristine.set(name, dir);
    process.once('exit', () => fs.rmSync(path.dirname(dir!), { recursive: true, force: true }));
  }
  return dir;
};

/** A fresh writable fixture root (auto-removed) copied from a bundled capture. */
export const copyRoot = (name: string): string => {
  const dir = path.join(fastTmpDir(), 'root');
  execFileSync('cp', ['-a', pristineRoot(name), dir]);
  return dir;
};

/** A fresh fixture kernel over a copy of a bundled capture, vfio-pci loaded. */
export const simCopy = (name = 'mixed', loadVfio = true): SimulatedRoot & { root: string } => {
  const root = copyRoot(name);
  const sim = openSimulatedRoot(root);
  if (loadVfio) sim.kernel.loadModule('vfio-pci');
  return { ...sim, root: sim.kernel.root };
};

/** driver + override of each device, for before/after comparisons. */
export const driverState = (sim: SimulatedRoot, bdfs: string[]): Record<string, { driver: string | null; override: string | null }> =>
  Object.fromEntries(bdfs.map((b) => [b, { driver: sim.kernel.driverOf(b), override: sim.kernel.overrideOf(b) }]));

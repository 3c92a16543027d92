import * as fs from 'node:fs';
import * as path from 'node:path';
import { isTarball, unpackCapture } from '../capture/unpack.js';
import { IsogroupError } from '../errors.js';
import { SimKernel, type SimKernelOptions, type SimulatedSysfsPort } from './kernel.js';
import { SimulatedVfioBackend } from './vfio.js';

export { type PeerFinder, setPeerFinder, topologyPeers } from './grouping.js';
export {
  type AddDeviceOptions,
  type AddDeviceResult,
  type CrashPoints,
  crashHooks,
  isSimulatedPort,
  type SimHooks,
  SimKernel,
  SimulatedSysfsPort,
} from './kernel.js';
export { SIM_DIR, type SimState } from './state.js';
export { SimulatedVfioBackend, simGroupViable } from './vfio.js';

export interface SimulatedRoot {
  kernel: SimKernel;
  port: SimulatedSysfsPort;
  vfio: SimulatedVfioBackend;
}

/** Open the fixture kernel over a writable fixture root (several processes may share one). */
export const openSimulatedRoot = (root: string, options: SimKernelOptions = {}): SimulatedRoot => {
  if (isTarball(root)) {
    throw new IsogroupError('E_USAGE', `--simulate needs a writable directory, not the capture ${root}; run \`isogroup sim unpack ${root} --out DIR\` first`, {
      root,
    });
  }
  const kernel = new SimKernel(root, options);
  return { kernel, port: kernel.port(), vfio: new SimulatedVfioBackend(kernel) };
};

/** Unpack a capture tarball into a fresh writable fixture root for the fixture kernel. */
export const unpackForSimulation = (tarball: string, out: string): SimulatedRoot => {
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0) {
    throw new IsogroupError('E_INVALID_INPUT', `${out} exists and is not empty`, { out });
  }
  fs.mkdirSync(out, { recursive: true });
  unpackCapture(tarball, path.resolve(out));
  // Capture placeholders for write-only files are mode 0200; the simulation writes them as root would.
  return openSimulatedRoot(out);
};

import { type MessagePort, workerData } from 'node:worker_threads';
import type { Bdf } from './bdf.js';
import type { PciDevice, Problem } from './model.js';
import { NodeSysfsPort } from './port.js';
import { type RawGroup, readRawGroup, scanEntries } from './scan.js';
import { type ChunkResult, SCAN_CHUNK, type ScanHelperJob, type ScanHelperResult } from './scan-helper.js';

// The second thread of a two-thread scan: reads the group directories, then claims chunks of the
// device list until none are left.
// Names are left to the main thread (no second copy of pci.ids).

const job = workerData as ScanHelperJob & { port: MessagePort };
const chunkCount = Math.ceil(job.entries.length / SCAN_CHUNK);
const chunks: [number, ChunkResult][] = [];
const groups: RawGroup[] = [];
let error: string | undefined;
try {
  const port = new NodeSysfsPort(job.root);
  for (const id of job.groupIds) groups.push(readRawGroup(port, id));
  for (let c = Atomics.add(job.shared, 1, 1); c < chunkCount; c = Atomics.add(job.shared, 1, 1)) {
    const devices = new Map<Bdf, PciDevice>();
    const config = new Map<Bdf, Uint8Array>();
    const problems: Problem[] = [];
    scanEntries(port, job.entries.slice(c * SCAN_CHUNK, (c + 1) * SCAN_CHUNK), null, { devices, config, problems });
    chunks.push([c, { devices: [...devices.values()], config: [...config.entries()], problems }]);
  }
} catch (e) {
  error = String(e);
}
job.port.postMessage({ chunks, groups, ...(error ? { error } : {}) } satisfies ScanHelperResult);
Atomics.store(job.shared, 0, 1);
Atomics.notify(job.shared, 0);

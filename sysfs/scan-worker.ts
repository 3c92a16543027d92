import { type MessagePort, workerData } from 'node:worker_threads';
import { NodeSysfsPort } from './port.js';
import { type RawGroup, readRawGroup, scanChunk } from './scan.js';
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
  for (let c = Atomics.add(job.shared, 1, 1); c < chunkCount; c = Atomics.add(job.shared, 1, 1)) chunks.push([c, scanChunk(port, job.entries, c, null)]);
} catch (e) {
  error = String(e);
}
job.port.postMessage({ chunks, groups, ...(error ? { error } : {}) } satisfies ScanHelperResult);
Atomics.store(job.shared, 0, 1);
Atomics.notify(job.shared, 0);

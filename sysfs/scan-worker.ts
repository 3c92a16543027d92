import { type MessagePort, workerData } from 'node:worker_threads';
import { NodeSysfsPort } from './port.js';
import { type RawGroup, readChunk, readRawGroup, SCAN_CHUNK } from './read.js';
import type { ScanHelperJob, ScanHelperMessage } from './scan-helper.js';

// The second thread of a two-thread scan: reads the group directories, then claims chunks of the
// device list until none are left, posting each as soon as it is read. It only reads; the main thread
// builds the devices (and names them: no second copy of pci.ids here).

const job = workerData as ScanHelperJob & { port: MessagePort };
const chunkCount = Math.ceil(job.entries.length / SCAN_CHUNK);

const post = (msg: ScanHelperMessage, transfer: ArrayBuffer[] = []): void => {
  job.port.postMessage(msg, transfer);
  Atomics.add(job.shared, 1, 1);
  Atomics.notify(job.shared, 1);
};

let error: string | undefined;
try {
  const port = new NodeSysfsPort(job.root);
  const groups: RawGroup[] = [];
  for (const id of job.groupIds) groups.push(readRawGroup(port, id));
  post({ kind: 'groups', groups });
  for (let c = Atomics.add(job.shared, 0, 1); c < chunkCount; c = Atomics.add(job.shared, 0, 1)) {
    const chunk = readChunk(port, job.entries, c);
    // One buffer for the chunk's config bytes, handed over rather than copied.
    let total = 0;
    for (const raw of chunk.raws) total += raw.config?.length ?? 0;
    const all = new Uint8Array(total);
    let at = 0;
    for (const raw of chunk.raws) {
      if (raw.config === null) continue;
      all.set(raw.config, at);
      raw.config = all.subarray(at, at + raw.config.length);
      at += raw.config.length;
    }
    post({ kind: 'chunk', index: c, chunk }, [all.buffer]);
  }
} catch (e) {
  error = String(e);
}
post({ kind: 'done', ...(error ? { error } : {}) });

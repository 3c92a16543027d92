import { MessageChannel, receiveMessageOnPort, Worker } from 'node:worker_threads';
import type { Bdf } from './bdf.js';
import type { PciDevice, Problem } from './model.js';
import type { DirEntry } from './port.js';
import type { RawGroup } from './scan.js';
import { workerScript } from './worker-script.js';

// The main thread's side of a two-thread scan (see scanHost). The device list is cut into chunks that
// both threads claim from one shared counter, so neither waits on the other's start or speed; results
// are merged in chunk order, so the snapshot is exactly the one-thread one. Synchronous on purpose,
// like every SysfsPort read: the helper reports through shared memory and a message port read without
// the event loop, so scanHost stays a plain function for every caller.

export const SCAN_CHUNK = 64;

export interface ScanHelperJob {
  root: string;
  entries: DirEntry[];
  /** Group directories to read first (while the main thread starts on the devices). */
  groupIds: string[];
  /** [0]: 1 once the helper's results are posted; [1]: the next unclaimed chunk. */
  shared: Int32Array;
}

export interface ChunkResult {
  devices: PciDevice[];
  config: [Bdf, Uint8Array][];
  problems: Problem[];
}

export interface ScanHelperResult {
  chunks: [number, ChunkResult][];
  groups: RawGroup[];
  error?: string;
}

export interface ScanHelper {
  /** Claim the next chunk (its index), or null when all are claimed. */
  claim(): number | null;
  readonly chunkCount: number;
  /** The helper's chunks by index, and the groups it read (empty when it failed or did not finish in time: the caller reads what is missing). */
  results(): { chunks: Map<number, ChunkResult>; groups: RawGroup[] };
}

const SLICE_MS = 50;

export const startScanHelper = (root: string, entries: DirEntry[], groupIds: string[]): ScanHelper => {
  const shared = new Int32Array(new SharedArrayBuffer(8));
  const chunkCount = Math.ceil(entries.length / SCAN_CHUNK);
  const { port1, port2 } = new MessageChannel();
  const started = performance.now();
  let worker: Worker | null = null;
  try {
    worker = new Worker(workerScript('./scan-worker.js', import.meta.url), {
      workerData: { root, entries, groupIds, shared, port: port2 },
      transferList: [port2],
    });
    worker.unref();
  } catch {
    worker = null;
  }
  return {
    chunkCount,
    claim() {
      const c = Atomics.add(shared, 1, 1);
      return c < chunkCount ? c : null;
    },
    results() {
      const out = new Map<number, ChunkResult>();
      if (!worker) return { chunks: out, groups: [] };
      // The helper is at most one chunk behind; allow it as long again as the scan took (at least 5 s).
      const deadline = performance.now() + Math.max(5000, performance.now() - started);
      while (Atomics.load(shared, 0) === 0 && performance.now() < deadline) Atomics.wait(shared, 0, 0, SLICE_MS);
      const got = Atomics.load(shared, 0) === 1 ? receiveMessageOnPort(port1) : undefined;
      port1.close();
      void worker.terminate();
      const r = got?.message as ScanHelperResult | undefined;
      if (!r || r.error) return { chunks: out, groups: [] };
      for (const [i, chunk] of r.chunks) {
        // Structured clone turned the config Buffers into plain Uint8Arrays: views again, no copy.
        chunk.config = chunk.config.map(([bdf, u8]) => [bdf, Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength)]);
        out.set(i, chunk);
      }
      return { chunks: out, groups: r.groups };
    },
  };
};

import { MessageChannel, receiveMessageOnPort, Worker } from 'node:worker_threads';
import type { RawChunk } from '../model/build-device.js';
import { workerScript } from '../os/worker-script.js';
import type { DirEntry } from './port.js';
import { type RawGroup, SCAN_CHUNK } from './read.js';

// The main thread's side of a two-thread scan (see scanHost). The device list is cut into chunks that
// both threads claim from one shared counter, so neither waits on the other's start or speed. The
// helper only reads (RawChunk: strings and bytes, cheap to copy between threads) and posts each chunk
// as soon as it has read it; the main thread builds the devices and merges in chunk order, so the
// snapshot is exactly the one-thread one. Synchronous on purpose, like every SysfsPort read: the
// helper reports through shared memory and a message port read without the event loop, so scanHost
// stays a plain function for every caller.

export interface ScanHelperJob {
  root: string;
  entries: DirEntry[];
  /** Group directories to read first (while the main thread starts on the devices). */
  groupIds: string[];
  /** [0]: the next unclaimed chunk; [1]: messages posted so far (the main thread waits on it). */
  shared: Int32Array;
}

/** What the helper posts, in this order: its groups, each chunk as it is read, then done. */
export type ScanHelperMessage = { kind: 'groups'; groups: RawGroup[] } | { kind: 'chunk'; index: number; chunk: RawChunk } | { kind: 'done'; error?: string };

export interface ScanHelper {
  /** Claim the next chunk (its index), or null when all are claimed. */
  claim(): number | null;
  readonly chunkCount: number;
  /** Chunks the helper has delivered since the last call (never blocks). */
  delivered(): [number, RawChunk][];
  /**
   * Wait for the helper to finish (bounded) and stop it: the chunks delivered meanwhile, the groups it
   * read, and whether it contributed anything. A chunk it claimed but never delivered is the caller's to read.
   */
  finish(): { chunks: [number, RawChunk][]; groups: RawGroup[]; used: boolean };
}

const SLICE_MS = 50;

/** The posted config bytes of a chunk as Buffers (structured clone makes them plain Uint8Arrays; views, no copy). */
const asBuffers = (chunk: RawChunk): RawChunk => {
  for (const raw of chunk.raws) if (raw.config !== null) raw.config = Buffer.from(raw.config.buffer, raw.config.byteOffset, raw.config.byteLength);
  return chunk;
};

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
  let groups: RawGroup[] = [];
  let done = false;
  let failed = false;
  let used = false;
  let seen = 0;
  const drain = (): [number, RawChunk][] => {
    const out: [number, RawChunk][] = [];
    if (!worker || done) return out;
    for (let m = receiveMessageOnPort(port1); m !== undefined; m = receiveMessageOnPort(port1)) {
      const msg = m.message as ScanHelperMessage;
      seen++;
      if (msg.kind === 'groups') {
        groups = msg.groups;
        used = true;
      } else if (msg.kind === 'chunk') {
        out.push([msg.index, asBuffers(msg.chunk)]);
        used = true;
      } else {
        done = true;
        failed = msg.error !== undefined;
      }
    }
    return out;
  };
  return {
    chunkCount,
    claim() {
      const c = Atomics.add(shared, 0, 1);
      return c < chunkCount ? c : null;
    },
    delivered: drain,
    finish() {
      const chunks: [number, RawChunk][] = [];
      if (worker) {
        // The helper is at most one chunk behind; allow it as long again as the scan took (at least 5 s).
        const deadline = performance.now() + Math.max(5000, performance.now() - started);
        for (;;) {
          chunks.push(...drain());
          if (done || performance.now() >= deadline) break;
          Atomics.wait(shared, 1, seen, SLICE_MS);
        }
        port1.close();
        void worker.terminate();
      }
      // Groups from a helper that failed part-way may be partial: the caller reads them itself.
      return { chunks, groups: failed ? [] : groups, used };
    },
  };
};

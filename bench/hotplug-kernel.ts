import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { openSimulatedRoot } from '../sim/index.js';
import { pciDeviceFile } from '../sysfs/paths.js';

// The "kernel" side of the hotplug benchmark, in its own thread: the fixture kernel hot-adds devices
// (and removes them again) on request and reports each completed add as a uevent would (the device is
// registered, the host driver has bound or been refused). Running it beside the daemon rather than in
// its event loop keeps the simulator's own cost out of the daemon's figures, as a real kernel's would
// be; both share the fixture root and its flock, as the daemon and the kernel share /sys.

export interface KernelJob {
  root: string;
}

export type KernelCommand =
  | { op: 'add'; bridges: string[] }
  | { op: 'remove'; bdfs: string[] }
  /** Send each device's `add` uevent at its due time: every 1000/rate ms from now, or all at once (rate 0). */
  | { op: 'replay'; bdfs: string[]; rate: number }
  | { op: 'exit' };

/** One uevent, as the daemon's event source would receive it from the kernel's socket. */
export interface KernelUevent {
  type: 'uevent';
  index: number;
  bdf: string;
  /** When it was due by the pacing schedule (epoch ms, sub-ms). */
  due: number;
  /** When the kernel thread actually sent it (it may wake late when both cores are busy): the event's moment. */
  sent: number;
}

export interface KernelAdd {
  type: 'add';
  bdf: string;
  group: string | null;
  driver: string | null;
  attachError: string | null;
  /** The simulator's own cost of this add (ms). */
  ms: number;
}

export interface KernelBatchDone {
  type: 'done';
  op: 'add' | 'remove' | 'replay';
  /** Per-operation simulator cost (ms). */
  ms: number[];
  adds: KernelAdd[];
  heapUsed: number;
}

const job = workerData as KernelJob;
const now = (): number => performance.timeOrigin + performance.now();
const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** Sleep without spinning (a spinning emitter would take a core from the daemon it measures). */
const sleepUntil = (t: number): void => {
  const ms = t - now();
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
};
const { kernel, port } = openSimulatedRoot(job.root);

parentPort!.on('message', (cmd: KernelCommand) => {
  if (cmd.op === 'exit') {
    parentPort!.close();
    return;
  }
  const ms: number[] = [];
  const adds: KernelAdd[] = [];
  if (cmd.op === 'replay') {
    const t0 = now() + 1;
    cmd.bdfs.forEach((bdf, index) => {
      const due = cmd.rate > 0 ? t0 + (index * 1000) / cmd.rate : t0;
      sleepUntil(due);
      parentPort!.postMessage({ type: 'uevent', index, bdf, due, sent: now() } satisfies KernelUevent);
    });
  } else if (cmd.op === 'add') {
    for (const bridge of cmd.bridges) {
      const t0 = performance.now();
      const r = kernel.addDevice({ bridge, vendor: 0x8086, device: 0x100e, driver: 'e1000' });
      const t = performance.now() - t0;
      ms.push(t);
      adds.push({ type: 'add', bdf: r.bdf, group: r.group, driver: r.driver, attachError: r.attachError, ms: t });
    }
  } else {
    for (const bdf of cmd.bdfs) {
      const t0 = performance.now();
      port.writeText(pciDeviceFile(bdf, 'remove'), '1');
      ms.push(performance.now() - t0);
    }
  }
  parentPort!.postMessage({ type: 'done', op: cmd.op, ms, adds, heapUsed: process.memoryUsage().heapUsed } satisfies KernelBatchDone);
});

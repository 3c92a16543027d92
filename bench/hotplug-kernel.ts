import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { openSimulatedRoot } from '../sysfs/sim/index.js';

// The "kernel" side of the hotplug benchmark, in its own thread: the fixture kernel hot-adds devices
// (and removes them again) on request and reports each completed add as a uevent would (the device is
// registered, the host driver has bound or been refused). Running it beside the daemon rather than in
// its event loop keeps the simulator's own cost out of the daemon's figures, as a real kernel's would
// be; both share the fixture root and its flock, as the daemon and the kernel share /sys.

export interface KernelJob {
  root: string;
}

export type KernelCommand = { op: 'add'; bridges: string[] } | { op: 'remove'; bdfs: string[] } | { op: 'exit' };

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
  op: 'add' | 'remove';
  /** Per-operation simulator cost (ms). */
  ms: number[];
  adds: KernelAdd[];
  heapUsed: number;
}

const job = workerData as KernelJob;
const { kernel, port } = openSimulatedRoot(job.root);

parentPort!.on('message', (cmd: KernelCommand) => {
  if (cmd.op === 'exit') {
    parentPort!.close();
    return;
  }
  const ms: number[] = [];
  const adds: KernelAdd[] = [];
  if (cmd.op === 'add') {
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
      port.writeText(`sys/bus/pci/devices/${bdf}/remove`, '1');
      ms.push(performance.now() - t0);
    }
  }
  parentPort!.postMessage({ type: 'done', op: cmd.op, ms, adds, heapUsed: process.memoryUsage().heapUsed } satisfies KernelBatchDone);
});

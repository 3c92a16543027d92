import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { assignGroup } from '../api/assign.js';
import { type FixtureDeviceSpec, type FixtureSpec, writeFixtureRoot } from '../capture/fixture-writer.js';
import { GuardDaemon } from '../daemon/daemon.js';
import { ManualSource } from '../os/uevent.js';
import { openSimulatedRoot } from '../sim/index.js';
import { buildConfig, type ConfigOptions } from './config-builder.js';
import { generateHost } from './generate.js';
import type { KernelBatchDone, KernelCommand, KernelJob, KernelUevent } from './hotplug-kernel.js';
import type { BenchContext, BenchModule } from './types.js';

// Hot-add bursts into the fixture kernel with the guard daemon embedded in this process (issue 5).
// The host: a synthetic server (bench/generate.ts) plus a PCI expansion chassis: a root port with a PCIe
// switch whose downstream ports each lead to a PCIe-to-PCI bridge and its conventional bus (32 slots, a
// card already in slot 0). Each such bus is one IOMMU group (everything behind the bridge aliases to
// it); every 4th is assigned to a user, so about a quarter of the hot-adds land inside assigned groups.
// The fixture kernel runs in a worker thread, as a real kernel runs beside the daemon. It costs far more
// per add than a real kernel, and runs on the same 2 cores, so a burst goes in chunks: the kernel
// hot-adds a chunk (the groups are held, so host drivers are refused inside them), then sends the
// chunk's uevents to the daemon's thread at their due times (1,000/s, or all at once), sleeping in
// between as a kernel does (the daemon's thread idles in its event loop until a uevent arrives, as it
// does on a netlink socket), then unplugs the chunk again. Latencies run from each uevent's due time.

const PER_BUS = 24; // hot-adds per conventional bus at most (32 slots, one taken; leave headroom)
const ASSIGN_EVERY = 4;
const CHUNK = 200; // hot-adds staged, replayed, then unplugged together
const PACED_RATE = 1000;
const PORT_ACS = { cap: 0x5f, ctrl: 0x1d };

const bdfOf = (domain: number, bus: number, dev: number, fn = 0): string =>
  `${domain.toString(16).padStart(4, '0')}:${bus.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}.${fn}`;

interface ExpansionBus {
  /** The PCIe-to-PCI bridge in front of the conventional bus. */
  bridge: string;
  group: string;
  assigned: boolean;
  owner: string;
}

interface HotplugHost {
  spec: FixtureSpec;
  buses: ExpansionBus[];
}

/** A server plus one PCI expansion chassis per 32 conventional buses (`buses` of them in all). */
export const hotplugHost = (buses: number): HotplugHost => {
  const base = generateHost(200);
  const devices: FixtureDeviceSpec[] = [...base.devices];
  let group = Math.max(...devices.map((d) => Number(d.group ?? 0))) + 1;
  const firstDomain = Math.max(...devices.map((d) => parseInt(d.bdf.slice(0, 4), 16))) + 1;
  const out: ExpansionBus[] = [];
  const add = (bdf: string, cfg: ConfigOptions, more: Partial<FixtureDeviceSpec> = {}): void => {
    devices.push({ bdf, config: buildConfig(cfg), iommu: 'dmar0', numaNode: 0, group: more.group ?? String(group++), ...more });
  };
  for (let domain = firstDomain; out.length < buses; domain++) {
    add(bdfOf(domain, 0, 0), { vendor: 0x8086, device: 0x2020, classCode: 0x060000, pcieType: 9 });
    let nextBus = 1;
    for (let rp = 1; rp <= 3 && out.length < buses; rp++) {
      const dps = Math.min(32, buses - out.length);
      const rpBus = nextBus++;
      const internal = nextBus++;
      const last = nextBus + 2 * dps - 1;
      const rpBdf = bdfOf(domain, 0, rp);
      add(
        rpBdf,
        { vendor: 0x8086, device: 0x2030, classCode: 0x060400, bridge: true, primary: 0, secondary: rpBus, subordinate: last, pcieType: 4, acs: PORT_ACS },
        { driver: 'pcieport' },
      );
      const up = bdfOf(domain, rpBus, 0);
      add(
        up,
        { vendor: 0x10b5, device: 0x8747, classCode: 0x060400, bridge: true, primary: rpBus, secondary: internal, subordinate: last, pcieType: 5 },
        { parent: rpBdf, driver: 'pcieport' },
      );
      for (let p = 0; p < dps; p++) {
        const dpBus = nextBus++;
        const convBus = nextBus++;
        const dp = bdfOf(domain, internal, p);
        add(
          dp,
          {
            vendor: 0x10b5,
            device: 0x8747,
            classCode: 0x060400,
            bridge: true,
            primary: internal,
            secondary: dpBus,
            subordinate: convBus,
            pcieType: 6,
            acs: PORT_ACS,
          },
          { parent: up, driver: 'pcieport' },
        );
        // Pericom PI7C9X111 PCIe-to-PCI bridge: no driver (no SHPC), the conventional slots behind it.
        const bridge = bdfOf(domain, dpBus, 0);
        const g = String(group++);
        add(
          bridge,
          { vendor: 0x12d8, device: 0xe111, classCode: 0x060400, bridge: true, primary: dpBus, secondary: convBus, subordinate: convBus, pcieType: 7 },
          { parent: dp, group: g },
        );
        add(bdfOf(domain, convBus, 0), { vendor: 0x8086, device: 0x100e, classCode: 0x020000 }, { parent: bridge, group: g, driver: 'e1000' });
        const assigned = out.length % ASSIGN_EVERY === 0;
        out.push({ bridge, group: g, assigned, owner: out.length % (2 * ASSIGN_EVERY) === 0 ? 'alice' : 'bob' });
      }
    }
  }
  return { spec: { devices, iommuUnits: ['dmar0'] }, buses: out };
};

/** Seeded spread of `n` hot-adds over the buses, none beyond PER_BUS per chunk. */
const planAdds = (buses: ExpansionBus[], n: number): ExpansionBus[] => {
  let seed = 12345;
  const random = (k: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % k;
  };
  const used = new Map<string, number>();
  const out: ExpansionBus[] = [];
  for (let i = 0; i < n; i++) {
    if (i % CHUNK === 0) used.clear(); // each chunk is unplugged before the next
    let b = random(buses.length);
    while ((used.get(buses[b]!.bridge) ?? 0) >= PER_BUS) b = (b + 1) % buses.length;
    const bus = buses[b]!;
    used.set(bus.bridge, (used.get(bus.bridge) ?? 0) + 1);
    out.push(bus);
  }
  return out;
};

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};
const max = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => (b > a ? b : a), -Infinity) : NaN);
const f = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : '-');
const mb = (bytes: number): string => (bytes / 1048576).toFixed(1);
const now = (): number => performance.timeOrigin + performance.now();
const gc = (): void => (globalThis as { gc?: () => void }).gc?.();

type Mode = 'paced' | 'unpaced';

interface RunResult {
  mode: Mode;
  burst: number;
  chunks: number;
  rootDevices: number;
  rate: number;
  /** Hints handled per second: summed over chunks, first due hint -> last hint handled. */
  sustained: number;
  /** Summed over chunks: first due hint -> daemon idle (the coalesced reconciles done). */
  settleMs: number;
  /** The simulator's own cost per hot-add / removal (worker thread, daemon idle). */
  addMs: number[];
  removeMs: number[];
  /** Uevent sent -> handled on the daemon's thread (message transit plus any wait while the loop is busy). */
  queueMs: number[];
  /** The kernel thread's lateness: due by the pacing schedule -> actually sent (its own wait for a core). */
  lateMs: number[];
  /** Daemon's own hint -> decision (daemon.latencies), inside assigned groups. */
  hintDecision: number[];
  /** Event (uevent sent) -> decision inside assigned groups (queue + daemon). */
  eventDecision: number[];
  /** The same from the pacing schedule's due time (adds the kernel thread's lateness). */
  dueDecision: number[];
  /** Hint -> the action thread reports the device on vfio-pci (override set, probed, read back), inside assigned groups. */
  hintAction: number[];
  /** Elsewhere: hint -> the daemon has looked and left it alone; and the same from the event's due time. */
  hintElsewhere: number[];
  eventElsewhere: number[];
  /** In-group hints whose fast path acted (the rest found the device already moved by a reconcile). */
  actedByHint: number;
  reconciles: number;
  reconcileMs: number[];
  inGroup: number;
  inGroupOnVfio: number;
  elsewhere: number;
  elsewhereOnHost: number;
  hostBindsInAssigned: number;
  refusedAttaches: number;
  rss: [number, number, number];
  heap: [number, number, number];
  workerHeap: number;
}

class KernelThread {
  private readonly worker: Worker;
  private waiting: { resolve: (m: KernelBatchDone) => void; reject: (e: Error) => void } | null = null;
  private failed: Error | null = null;
  /** Called for each uevent of a replay, in order, before the replay's `done`. */
  onUevent: (e: KernelUevent) => void = () => undefined;

  constructor(root: string) {
    this.worker = new Worker(new URL('./hotplug-kernel.js', import.meta.url), { workerData: { root } satisfies KernelJob });
    this.worker.on('message', (m: KernelBatchDone | KernelUevent) => (m.type === 'uevent' ? this.onUevent(m) : this.waiting?.resolve(m)));
    this.worker.on('error', (e) => {
      this.failed = e;
      this.waiting?.reject(e);
    });
  }

  run(cmd: KernelCommand): Promise<KernelBatchDone> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.worker.postMessage(cmd);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

const runOnce = async (ctx: BenchContext, mode: Mode, burst: number, host: HotplugHost): Promise<RunResult> => {
  const dir = path.join(ctx.workDir, `${mode}-${burst}`);
  const root = path.join(dir, 'root');
  const stateDir = path.join(dir, 'state');
  writeFixtureRoot(root, host.spec);
  const sim = openSimulatedRoot(root);
  const assigned = host.buses.filter((b) => b.assigned);
  for (const b of assigned) await assignGroup(b.group, { root, simulate: true, stateDir, owner: b.owner });
  const assignedGroups = new Set(assigned.map((b) => b.group));
  const plan = planAdds(host.buses, burst);
  const rate = mode === 'paced' ? PACED_RATE : 0;

  gc();
  const m0 = process.memoryUsage();
  const manual = new ManualSource();
  const daemon = await GuardDaemon.start({ root, simulate: true, stateDir, socket: null, rescanMs: 0, sources: [manual] });
  const kernel = new KernelThread(root);
  gc();
  const m1 = process.memoryUsage();
  const startReconciles = daemon.stats.reconciles;

  // Decision moments, stamped synchronously as the daemon publishes them; reconcile durations.
  let decidedAt = NaN;
  let acted = false;
  // Hint -> the action thread's result (override set, vfio-pci probed, driver read back), per device.
  const hintAt = new Map<string, number>();
  daemon.hub.onEvent((e) => {
    if (e.type === 'decision') {
      decidedAt = now();
      acted = Array.isArray(e.data.actions) && e.data.actions.length > 0;
    } else if (e.type === 'action' && typeof e.data.bdf === 'string') {
      const at = hintAt.get(e.data.bdf);
      if (at !== undefined && e.data.ok === true && e.data.driverAfter === 'vfio-pci') r.hintAction.push(now() - at);
      hintAt.delete(e.data.bdf);
    }
  });
  const r: RunResult = {
    mode,
    burst,
    chunks: 0,
    rootDevices: 0,
    rate,
    sustained: 0,
    settleMs: 0,
    addMs: [],
    removeMs: [],
    queueMs: [],
    lateMs: [],
    dueDecision: [],
    hintDecision: [],
    eventDecision: [],
    hintAction: [],
    hintElsewhere: [],
    eventElsewhere: [],
    actedByHint: 0,
    reconciles: 0,
    reconcileMs: [],
    inGroup: 0,
    inGroupOnVfio: 0,
    elsewhere: 0,
    elsewhereOnHost: 0,
    hostBindsInAssigned: 0,
    refusedAttaches: 0,
    rss: [m0.rss, m1.rss, 0],
    heap: [m0.heapUsed, m1.heapUsed, 0],
    workerHeap: 0,
  };
  const origReconcile = daemon.reconcile.bind(daemon);
  daemon.reconcile = async (reason: string): Promise<void> => {
    const t0 = performance.now();
    await origReconcile(reason);
    r.reconcileMs.push(performance.now() - t0);
  };
  const everInAssigned = new Set<string>();
  let handledMs = 0;
  try {
    for (let done = 0; done < burst; done += CHUNK) {
      r.chunks++;
      // Stage: the kernel adds the chunk (the daemon is idle and hears nothing yet): the simulator's cost.
      const staged = await kernel.run({ op: 'add', bridges: plan.slice(done, done + CHUNK).map((b) => b.bridge) });
      r.addMs.push(...staged.ms);
      r.workerHeap = staged.heapUsed;
      // Replay the chunk's uevents from the kernel thread: each handled as it arrives, at once.
      const adds = staged.adds;
      const byBdf = new Map(adds.map((a) => [a.bdf, a]));
      let first = NaN;
      let last = NaN;
      kernel.onUevent = (u) => {
        const a = byBdf.get(u.bdf)!;
        const recv = now();
        if (Number.isNaN(first)) first = u.due;
        r.queueMs.push(recv - u.sent);
        r.lateMs.push(u.sent - u.due);
        decidedAt = NaN;
        acted = false;
        manual.emit({ action: 'add', bdf: a.bdf as never });
        const ret = now();
        last = ret;
        if (a.group !== null && assignedGroups.has(a.group)) {
          everInAssigned.add(a.bdf);
          r.eventDecision.push(decidedAt - u.sent);
          r.dueDecision.push(decidedAt - u.due);
          if (acted) {
            r.actedByHint++;
            hintAt.set(a.bdf, recv);
          }
        } else {
          r.hintElsewhere.push(ret - recv);
          r.eventElsewhere.push(ret - u.sent);
        }
      };
      await kernel.run({ op: 'replay', bdfs: adds.map((a) => a.bdf), rate });
      const t0 = first;
      handledMs += last - t0;
      await daemon.idle();
      r.settleMs += now() - t0;
      // Where each device of the chunk ended up.
      for (const a of adds) {
        if (a.attachError) r.refusedAttaches++;
        const driver = sim.kernel.driverOf(a.bdf);
        if (a.group !== null && assignedGroups.has(a.group)) {
          r.inGroup++;
          if (driver === 'vfio-pci') r.inGroupOnVfio++;
        } else {
          r.elsewhere++;
          if (driver === 'e1000') r.elsewhereOnHost++;
        }
      }
      r.rootDevices = Math.max(r.rootDevices, sim.kernel.devices().length);
      // Unplug the chunk again (keeps the host realistic for 10,000 adds); the daemon hears the removals.
      const removed = await kernel.run({ op: 'remove', bdfs: adds.map((a) => a.bdf) });
      r.removeMs.push(...removed.ms);
      for (const a of adds) manual.emit({ action: 'remove', bdf: a.bdf as never });
      await daemon.idle();
    }
    r.sustained = (burst / handledMs) * 1000;
    r.hintDecision = [...daemon.latencies];
    r.reconciles = daemon.stats.reconciles - startReconciles;
    gc();
    const m2 = process.memoryUsage();
    r.rss[2] = m2.rss;
    r.heap[2] = m2.heapUsed;
  } finally {
    await kernel.close();
    await daemon.close();
  }
  // A host driver bound inside an assigned group at any time (BDFs are reused, always on the same bus and group).
  for (const line of sim.kernel.dmesg()) {
    const bound = /^(\S+) (\S+): bound$/.exec(line);
    if (bound && !bound[1]!.startsWith('vfio') && everInAssigned.has(bound[2]!)) r.hostBindsInAssigned++;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return r;
};

export const hotplugBench: BenchModule = {
  name: 'hotplug',
  description: `guard daemon under hot-add bursts on the fixture kernel (uevents paced at ${PACED_RATE}/s, and unpaced)`,
  async run(ctx: BenchContext) {
    const modes = (process.env.ISOGROUP_BENCH_HOTPLUG_MODES ?? 'paced,unpaced').split(',') as Mode[];
    const host = hotplugHost(Math.max(16, Math.ceil((2 * CHUNK) / PER_BUS)));
    ctx.log(
      `host: ${host.spec.devices.length} devices, ${host.buses.length} conventional expansion buses behind PCIe-to-PCI bridges, ${host.buses.filter((b) => b.assigned).length} of their groups assigned (owners alice, bob)`,
    );
    ctx.log(
      `each burst: chunks of ${CHUNK} hot-adds staged by the fixture kernel in a worker thread (its cost = "sim add"), then their uevents replayed to the daemon, then unplugged`,
    );
    if (!(globalThis as { gc?: unknown }).gc) ctx.log('(run node with --expose-gc for steadier heap figures)');
    const results: RunResult[] = [];
    for (const burst of ctx.sizes) {
      for (const mode of modes) {
        const t0 = performance.now();
        const r = await runOnce(ctx, mode, burst, host);
        results.push(r);
        ctx.log(`  ${mode} x${burst}: ${((performance.now() - t0) / 1000).toFixed(1)} s wall (fixture, assign, staging included)`);
      }
    }
    const label = (r: RunResult): string => `${r.mode}${r.rate ? `@${r.rate}/s` : ''} x${r.burst}`;
    ctx.log(
      '\nthroughput (events/s: hints handled per second of replay; settle: replay until the coalesced reconciles are done; sim = fixture kernel thread, daemon idle)',
    );
    ctx.table(
      [
        'run',
        'max devs',
        'events/s',
        'settle ms',
        'sim add p50',
        'p99',
        'sim remove p50',
        'kernel late p50',
        'p99',
        'queue p50',
        'p99',
        'max',
        'reconciles',
        'reconcile p50 ms',
        'max',
      ],
      results.map((r) => [
        label(r),
        r.rootDevices,
        f(r.sustained, 0),
        f(r.settleMs, 0),
        f(pct(r.addMs, 50), 2),
        f(pct(r.addMs, 99), 2),
        f(pct(r.removeMs, 50), 2),
        f(pct(r.lateMs, 50), 3),
        f(pct(r.lateMs, 99), 2),
        f(pct(r.queueMs, 50), 3),
        f(pct(r.queueMs, 99), 2),
        f(max(r.queueMs), 1),
        r.reconciles,
        f(pct(r.reconcileMs, 50), 1),
        f(max(r.reconcileMs), 1),
      ]),
    );
    ctx.log(
      "\nlatency, ms (inside assigned groups: hint->decision = daemon.latencies; event->decision = uevent sent by the kernel thread -> decision, so it adds the transit and any wait before the hint is handled; due->decision adds the kernel thread's own lateness against the pacing schedule; hint->action = the action thread result back: override set, vfio-pci probed, driver read back)",
    );
    ctx.table(
      [
        'run',
        'in-group',
        'acted by hint',
        'hint->dec p50',
        'p99',
        'max',
        'event->dec p50',
        'p99',
        'max',
        'due->dec p99',
        'hint->action p50',
        'p99',
        'elsewhere hint p50',
        'p99',
        'elsewhere event p99',
      ],
      results.map((r) => [
        label(r),
        r.inGroup,
        r.actedByHint,
        f(pct(r.hintDecision, 50), 3),
        f(pct(r.hintDecision, 99), 3),
        f(max(r.hintDecision), 2),
        f(pct(r.eventDecision, 50), 3),
        f(pct(r.eventDecision, 99), 2),
        f(max(r.eventDecision), 1),
        f(pct(r.dueDecision, 99), 2),
        f(pct(r.hintAction, 50), 3),
        f(pct(r.hintAction, 99), 3),
        f(pct(r.hintElsewhere, 50), 3),
        f(pct(r.hintElsewhere, 99), 3),
        f(pct(r.eventElsewhere, 99), 2),
      ]),
    );
    ctx.log('\ncorrectness and memory (RSS: whole process, fixture-kernel thread included; heap: the daemon thread)');
    ctx.table(
      [
        'run',
        'in group on vfio-pci',
        'elsewhere on host drv',
        'host binds in assigned',
        'EBUSY refusals',
        'RSS before MB',
        'daemon up',
        'after',
        'heap before MB',
        'daemon up',
        'after',
        'sim heap MB',
      ],
      results.map((r) => [
        label(r),
        `${r.inGroupOnVfio}/${r.inGroup} (${f((100 * r.inGroupOnVfio) / (r.inGroup || 1), 1)}%)`,
        `${r.elsewhereOnHost}/${r.elsewhere} (${f((100 * r.elsewhereOnHost) / (r.elsewhere || 1), 1)}%)`,
        r.hostBindsInAssigned,
        r.refusedAttaches,
        mb(r.rss[0]),
        mb(r.rss[1]),
        mb(r.rss[2]),
        mb(r.heap[0]),
        mb(r.heap[1]),
        mb(r.heap[2]),
        mb(r.workerHeap),
      ]),
    );
    // Ratios against baselines measured in this run: the smallest burst (growth) and the simulator's own add (overhead).
    ctx.log('\nratios');
    const smallest = Math.min(...ctx.sizes);
    for (const mode of modes) {
      const base = results.find((r) => r.mode === mode && r.burst === smallest);
      if (!base) continue;
      for (const r of results.filter((x) => x.mode === mode && x.burst !== smallest)) {
        ctx.log(
          `  ${mode} growth x${smallest} -> x${r.burst} (events x${r.burst / smallest}): events/s x${f(r.sustained / base.sustained)}, hint->decision p99 x${f(pct(r.hintDecision, 99) / pct(base.hintDecision, 99))}, event->decision p99 x${f(pct(r.eventDecision, 99) / pct(base.eventDecision, 99))}, sim add p50 x${f(pct(r.addMs, 50) / pct(base.addMs, 50))}, RSS after/daemon-up ${mb(r.rss[2] - r.rss[1])} MB vs ${mb(base.rss[2] - base.rss[1])} MB, heap ${mb(r.heap[2] - r.heap[1])} MB vs ${mb(base.heap[2] - base.heap[1])} MB`,
        );
      }
    }
    for (const r of results) {
      const simAdd = pct(r.addMs, 50);
      ctx.log(
        `  ${label(r)} vs the simulator's own add (p50 ${f(simAdd, 2)} ms): hint->decision p50 x${f(pct(r.hintDecision, 50) / simAdd, 3)}, hint->action p50 x${f(pct(r.hintAction, 50) / simAdd, 3)}, elsewhere hint p50 x${f(pct(r.hintElsewhere, 50) / simAdd, 3)}`,
      );
    }
    for (const r of results.filter((x) => x.mode === 'paced')) {
      const p99 = pct(r.eventDecision, 99);
      const own = pct(r.hintDecision, 99);
      // With fewer than 100 samples the 99th percentile is the slowest sample.
      const n = r.eventDecision.length;
      const few = n < 100 ? ` (${n} samples: p99 = the maximum)` : ` (${n} samples)`;
      ctx.log(
        `  target p99 < 2 ms at ${PACED_RATE}/s, x${r.burst}: event->decision ${f(p99, 3)} ms ${p99 < 2 ? 'MET' : 'MISSED'}${few}; daemon's own hint->decision ${f(own, 3)} ms ${own < 2 ? 'met' : 'missed'}; from the pacing schedule's due time ${f(pct(r.dueDecision, 99), 3)} ms`,
      );
    }
  },
};

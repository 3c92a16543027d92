import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { IsogroupError, isIsogroupError } from '../errors.js';
import { assignGroup, recover, releaseGroup, parseGroupArg, DEFAULT_STATE_DIR, type AssignResult } from '../api/bind.js';
import { listDevices } from '../api/devices.js';
import { listGroups } from '../api/groups.js';
import { type JournalEntry, readJournal, assignedGroups } from '../bind/journal.js';
import { prepareStateDir } from '../bind/lock.js';
import { journalStatus } from '../bind/status.js';
import { decideDevice, decideGuard, type GuardAction, type GuardEvent } from '../bind/guard.js';
import { applyGuardAction, type GuardActionResult } from '../bind/guard-apply.js';
import { type Bdf, isBdf } from '../sysfs/bdf.js';
import { NodeSysfsPort, type SysfsPort } from '../sysfs/port.js';
import { resolveRoot } from '../sysfs/roots.js';
import { scanDevices, scanHost } from '../sysfs/scan.js';
import { openSimulatedRoot, SIM_DIR } from '../sysfs/sim/index.js';
import { type HotplugHint, type HotplugSource, FixtureWatchSource, IntervalSource, combineSources, openLiveHotplugSource } from '../sysfs/uevent.js';
import type { VfioBackend, VfioContainerHandle, VfioGroupHandle } from '../sysfs/vfio.js';
import { KernelVfioBackend } from '../sysfs/vfio-kernel.js';
import { EventHub } from './events.js';
import { UnixHttpServer, removeStaleSocket, type RequestContext } from './http-unix.js';
import { silentLogger, type Logger } from './log.js';

// The hotplug guard. It holds every assigned group open and attached to its owner's container, so the
// kernel itself refuses host drivers for devices that appear inside (DMA ownership: -EBUSY), and it
// moves such devices to vfio-pci. A watcher that reacts to uevents cannot win the race against the
// probe (NOTES.md: the driver link appears 1-40 ms after `add`), and drivers_autoprobe=0 does not stop
// hot-added PCI devices; so events here are only hints: look, decide, act, and repair what slipped in.

export interface GuardDaemonOptions {
  root?: string;
  simulate?: boolean;
  stateDir?: string;
  /** Socket path; null: no socket (embedded use, benchmarks). */
  socket?: string | null;
  socketMode?: number;
  socketGid?: number;
  logger?: Logger;
  /** Backstop rescan interval (ms); 0 disables. Default 5000 on a live host, 2000 on a fixture. */
  rescanMs?: number;
  /** Replace the event sources (tests, benchmarks). */
  sources?: HotplugSource[];
  vfio?: VfioBackend;
  port?: SysfsPort;
  /** Largest SSE queue per subscriber. */
  maxQueue?: number;
}

interface OwnerHold {
  container: VfioContainerHandle;
  groups: Map<string, VfioGroupHandle>;
  iommuSet: boolean;
}

export interface DaemonStats {
  hints: number;
  fastDecisions: number;
  reconciles: number;
  actions: number;
  failedActions: number;
  violations: number;
  holdFailures: number;
}

const LATENCY_SAMPLES = 100_000;

export class GuardDaemon {
  readonly hub: EventHub;
  readonly port: SysfsPort;
  readonly root: string;
  readonly simulate: boolean;
  readonly stateDir: string;
  readonly stats: DaemonStats = { hints: 0, fastDecisions: 0, reconciles: 0, actions: 0, failedActions: 0, violations: 0, holdFailures: 0 };
  /** Hint-to-decision latencies in ms (ring buffer) for the benchmark and `status`. */
  readonly latencies: number[] = [];
  private latencyNext = 0;
  private readonly vfio: VfioBackend;
  private readonly logger: Logger;
  private readonly holds = new Map<string, OwnerHold>();
  private readonly holdErrors = new Map<string, string>();
  private assigned = new Map<string, JournalEntry>();
  private source: HotplugSource | null = null;
  private server: UnixHttpServer | null = null;
  private socketPath: string | null = null;
  private running: Promise<void> | null = null;
  private queued = false;
  private closed = false;
  private closing: Promise<void> | null = null;

  private constructor(options: GuardDaemonOptions) {
    this.logger = options.logger ?? silentLogger;
    if (options.port) {
      this.port = options.port;
      this.simulate = options.simulate ?? false;
      if (!options.vfio) throw new IsogroupError('E_USAGE', 'a daemon given its own port needs its own VFIO backend', {});
      this.vfio = options.vfio;
    } else if (options.simulate) {
      const sim = openSimulatedRoot(options.root ?? '/');
      this.port = sim.port;
      this.vfio = options.vfio ?? sim.vfio;
      this.simulate = true;
    } else {
      const root = resolveRoot(options.root);
      if (root !== '/') {
        throw new IsogroupError('E_USAGE', `${root} is not the live host: nothing there can hold a group. Use --simulate to run the guard on the fixture kernel`, { root });
      }
      this.port = new NodeSysfsPort(root);
      this.vfio = options.vfio ?? new KernelVfioBackend();
      this.simulate = false;
    }
    this.root = this.port.root;
    this.stateDir = path.resolve(options.stateDir ?? (this.simulate ? path.join(this.root, SIM_DIR, 'state') : DEFAULT_STATE_DIR));
    this.hub = new EventHub({ logger: this.logger, ...(options.maxQueue ? { maxQueue: options.maxQueue } : {}) });
  }

  /** Start: recover unfinished transactions, hold every assigned group, repair, then serve. */
  static async start(options: GuardDaemonOptions = {}): Promise<GuardDaemon> {
    const d = new GuardDaemon(options);
    try {
      await d.boot(options);
    } catch (error) {
      await d.close();
      throw error;
    }
    return d;
  }

  private async boot(options: GuardDaemonOptions): Promise<void> {
    prepareStateDir(this.stateDir);
    const unfinished = readJournal(this.stateDir).entries.filter((e) => e.state !== 'assigned');
    if (unfinished.length) {
      const r = recover({ port: this.port, stateDir: this.stateDir });
      this.logger.warn('recovered unfinished transactions from the journal', { groups: unfinished.map((e) => e.groupId), recovered: r.recovered.length });
      this.hub.publish('recover', { groups: unfinished.map((e) => e.groupId) });
    }
    this.loadAssigned();
    // Hold first, so the kernel protects the groups while the repair pass runs.
    for (const entry of this.assigned.values()) this.hold(entry);
    await this.reconcile('start');
    const sources = options.sources ?? this.defaultSources(options.rescanMs);
    this.source = combineSources(sources);
    this.source.start((hint) => this.onHint(hint));
    for (const s of sources) if (s instanceof FixtureWatchSource) await s.ready();
    if (options.socket !== null) {
      const socketPath = options.socket ?? '/run/isogroup.sock';
      await removeStaleSocket(socketPath);
      this.server = this.routes(new UnixHttpServer({ logger: this.logger }));
      await this.server.listen(socketPath, { mode: options.socketMode ?? 0o660, ...(options.socketGid !== undefined ? { gid: options.socketGid } : {}) });
      this.socketPath = socketPath;
    }
    this.logger.info('guard started', { root: this.root, simulate: this.simulate, stateDir: this.stateDir, socket: this.socketPath, held: [...this.heldGroups()] });
  }

  private defaultSources(rescanMs: number | undefined): HotplugSource[] {
    const every = rescanMs ?? (this.root === '/' ? 5000 : 2000);
    const sources: HotplugSource[] = [];
    if (this.root === '/') {
      const live = openLiveHotplugSource();
      if (live.fallbackReason) this.logger.warn('kernel uevents through udevadm', { reason: live.fallbackReason });
      sources.push(live.source);
    } else {
      sources.push(new FixtureWatchSource(this.root));
    }
    if (every > 0) sources.push(new IntervalSource(every));
    return sources;
  }

  private loadAssigned(): void {
    this.assigned = new Map(assignedGroups(this.stateDir).map((e) => [e.groupId, e]));
  }

  /** Group ids this daemon holds open in a container now. */
  heldGroups(): Set<string> {
    const out = new Set<string>();
    for (const h of this.holds.values()) for (const id of h.groups.keys()) out.add(id);
    return out;
  }

  private ownerOf(groupId: string): string | null {
    for (const [owner, h] of this.holds) if (h.groups.has(groupId)) return owner;
    return null;
  }

  /** Open /dev/vfio/N and attach it to the owner's container (created on first use). */
  hold(entry: JournalEntry): boolean {
    if (this.ownerOf(entry.groupId) !== null) return true;
    let owner = this.holds.get(entry.owner);
    let created = false;
    let group: VfioGroupHandle | null = null;
    try {
      if (!owner) {
        owner = { container: this.vfio.openContainer(), groups: new Map(), iommuSet: false };
        created = true;
      }
      group = this.vfio.openGroup(entry.groupId);
      group.setContainer(owner.container);
      if (!owner.iommuSet) {
        owner.container.setIommu('type1v2');
        owner.iommuSet = true;
      }
      owner.groups.set(entry.groupId, group);
      if (created) this.holds.set(entry.owner, owner);
      this.holdErrors.delete(entry.groupId);
      this.hub.publish('hold', { group: entry.groupId, owner: entry.owner, ok: true });
      this.logger.info('holding group', { group: entry.groupId, owner: entry.owner });
      return true;
    } catch (error) {
      group?.close();
      if (created) owner?.container.close();
      const message = isIsogroupError(error) ? `${error.code}: ${error.message}` : String(error);
      if (this.holdErrors.get(entry.groupId) !== message) {
        this.stats.holdFailures++;
        this.hub.publish('hold', { group: entry.groupId, owner: entry.owner, ok: false, error: message });
        this.logger.warn('cannot hold group yet', { group: entry.groupId, owner: entry.owner, error: message });
      }
      this.holdErrors.set(entry.groupId, message);
      return false;
    }
  }

  /** Close the group (and the owner's container when it was the last group). */
  unhold(groupId: string): void {
    const owner = this.ownerOf(groupId);
    if (owner === null) return;
    const h = this.holds.get(owner)!;
    h.groups.get(groupId)!.close();
    h.groups.delete(groupId);
    if (h.groups.size === 0) {
      h.container.close();
      this.holds.delete(owner);
    }
    this.hub.publish('unhold', { group: groupId, owner });
  }

  private recordLatency(ms: number): void {
    if (this.latencies.length < LATENCY_SAMPLES) this.latencies.push(ms);
    else this.latencies[this.latencyNext++ % LATENCY_SAMPLES] = ms;
  }

  private onHint(hint: HotplugHint): void {
    if (this.closed) return;
    const t0 = performance.now();
    this.stats.hints++;
    this.hub.publish('hotplug', { source: hint.source, action: hint.action, ...(hint.bdf ? { bdf: hint.bdf } : {}), ...(hint.driver ? { driver: hint.driver } : {}) });
    if (hint.bdf && isBdf(hint.bdf) && (hint.action === 'add' || hint.action === 'bind' || hint.action === 'change')) {
      try {
        this.fastPath(hint.bdf, t0);
      } catch (error) {
        this.logger.warn('fast path failed; a rescan follows', { bdf: hint.bdf, error: (error as Error).message });
      }
    }
    this.schedule(`${hint.source}:${hint.action}`);
  }

  // One device named by a hint: read it alone, decide, act; the full rescan that follows catches the rest.
  private fastPath(bdf: Bdf, t0: number): void {
    const rel = `sys/bus/pci/devices/${bdf}/iommu_group`;
    if (this.port.kind(rel) !== 'link') return;
    const groupId = path.posix.basename(this.port.readLink(rel));
    const entry = this.assigned.get(groupId);
    if (!entry) return;
    const [device] = scanDevices(this.port, [bdf]);
    if (!device) return;
    const decision = decideDevice(device, entry, entry.members.some((m) => m.bdf === bdf));
    this.stats.fastDecisions++;
    this.recordLatency(performance.now() - t0);
    this.hub.publish('decision', { bdf, group: groupId, owner: entry.owner, via: 'hint', actions: decision.actions.map((a) => ({ kind: a.kind, reason: a.reason })) });
    this.carryOut(decision.actions, decision.events);
  }

  private carryOut(actions: GuardAction[], events: GuardEvent[]): GuardActionResult[] {
    for (const ev of events) {
      if (ev.type === 'violation') this.stats.violations++;
      this.hub.publish(ev.type, { group: ev.groupId, owner: ev.owner, ...(ev.bdf ? { bdf: ev.bdf } : {}), ...(ev.driver ? { driver: ev.driver } : {}), ...(ev.added ? { added: ev.added, removed: ev.removed } : {}), message: ev.message });
      this.logger[ev.type === 'violation' ? 'warn' : 'info'](ev.message, { event: ev.type, group: ev.groupId, bdf: ev.bdf, driver: ev.driver });
    }
    const results: GuardActionResult[] = [];
    for (const action of actions) {
      const r = applyGuardAction(this.port, action);
      this.stats.actions++;
      if (!r.ok) this.stats.failedActions++;
      results.push(r);
      this.hub.publish('action', { kind: action.kind, bdf: action.bdf, group: action.groupId, owner: action.owner, ok: r.ok, driverAfter: r.driverAfter, ...(r.error ? { error: r.error } : {}) });
      if (!r.ok) this.logger.error('guard action failed', { kind: action.kind, bdf: action.bdf, error: r.error });
    }
    // A repaired group may be viable again: hold what is not held yet.
    if (results.some((r) => r.ok)) for (const e of this.assigned.values()) if (this.ownerOf(e.groupId) === null) this.hold(e);
    return results;
  }

  /** Coalesce: one reconcile running, at most one queued; never inside the hint's own call stack. */
  private schedule(reason: string): void {
    if (this.closed) return;
    if (this.running) {
      this.queued = true;
      return;
    }
    this.running = (async () => {
      try {
        // Let the fast path of this and any burst of further hints finish first.
        await new Promise((r) => setImmediate(r));
        await this.reconcile(reason);
        while (this.queued && !this.closed) {
          this.queued = false;
          await new Promise((r) => setImmediate(r));
          await this.reconcile('queued');
        }
      } catch (error) {
        this.logger.error('reconcile failed', { reason, error: (error as Error).message });
      } finally {
        this.running = null;
      }
    })();
  }

  /** Wait until no reconcile is running or queued (tests, benchmarks). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Full pass: journal -> holds -> scan -> decide -> act. */
  async reconcile(reason: string): Promise<void> {
    if (this.closed) return;
    this.stats.reconciles++;
    try {
      this.loadAssigned();
    } catch (error) {
      this.logger.error('cannot read the journal; keeping the last known assignments', { error: (error as Error).message });
    }
    for (const id of this.heldGroups()) if (!this.assigned.has(id)) this.unhold(id);
    for (const entry of this.assigned.values()) this.hold(entry);
    const snap = scanHost(this.port, { pciIds: null });
    const decision = decideGuard(
      snap,
      [...this.assigned.values()].map((e) => ({ groupId: e.groupId, owner: e.owner, devices: e.members.map((m) => m.bdf as Bdf) })),
    );
    if (decision.actions.length || decision.events.length) this.logger.debug('reconcile', { reason, actions: decision.actions.length, events: decision.events.length });
    this.carryOut(decision.actions, decision.events);
  }

  /** Status with the daemon's own view: held groups, hold errors, counters. */
  status(): Record<string, unknown> {
    const held = this.heldGroups();
    const st = journalStatus(this.stateDir);
    return {
      ...st,
      groups: st.groups.map((g) => ({ ...g, held: held.has(g.id), ...(this.holdErrors.has(g.id) ? { holdError: this.holdErrors.get(g.id) } : {}) })),
      daemon: { pid: process.pid, root: this.root, simulate: this.simulate, stateDir: this.stateDir, socket: this.socketPath, stats: this.stats, subscribers: this.hub.subscriberCount },
    };
  }

  private requireTarget(body: unknown): { target: string; body: Record<string, unknown> } {
    if (typeof body !== 'object' || body === null) throw new IsogroupError('E_USAGE', 'request body must be a JSON object with "target" (a group number or a PCI address)', {});
    const b = body as Record<string, unknown>;
    if (typeof b.target !== 'string' && typeof b.target !== 'number') throw new IsogroupError('E_USAGE', '"target" must be a group number or a PCI address', {});
    const target = String(b.target);
    parseGroupArg(target);
    return { target, body: b };
  }

  // Only root changes assignments over the socket until a policy says otherwise.
  private authorize(ctx: RequestContext, what: string): void {
    if (ctx.peer && ctx.peer.uid !== 0) {
      throw new IsogroupError('E_PERMISSION', `uid ${ctx.peer.uid} may not ${what}: only root changes assignments`, { uid: ctx.peer.uid });
    }
  }

  private routes(server: UnixHttpServer): UnixHttpServer {
    return server
      .route('GET', '/health', () => ({ ok: true, pid: process.pid }))
      .route('GET', '/status', () => this.status())
      .route('GET', '/devices', () => listDevices({ port: this.port, pciIds: null }))
      .route('GET', '/groups', (ctx) => {
        const source = ctx.query.get('source') ?? 'auto';
        if (source !== 'auto' && source !== 'kernel' && source !== 'derived') throw new IsogroupError('E_USAGE', `source must be kernel, derived or auto, got ${JSON.stringify(source)}`, { source });
        return listGroups({ port: this.port, pciIds: null, source });
      })
      .route('POST', '/assign', (ctx) => {
        this.authorize(ctx, 'assign groups');
        const { target, body } = this.requireTarget(ctx.body);
        const result: AssignResult = assignGroup(target, {
          port: this.port,
          stateDir: this.stateDir,
          ...(typeof body.owner === 'string' ? { owner: body.owner } : {}),
          force: body.force === true,
          dryRun: body.dryRun === true,
          onAssigned: (entry) => {
            this.assigned.set(entry.groupId, entry);
            this.hold(entry);
          },
        });
        if (!result.dryRun) this.hub.publish('assign', { group: result.groupId, owner: result.owner, devices: result.devices ?? [] });
        return { ...result, held: this.heldGroups().has(result.groupId) };
      })
      .route('POST', '/release', (ctx) => {
        this.authorize(ctx, 'release groups');
        const { target, body } = this.requireTarget(ctx.body);
        const arg = parseGroupArg(target);
        const groupId = 'groupId' in arg ? arg.groupId : [...this.assigned.values()].find((e) => e.members.some((m) => m.bdf === arg.bdf))?.groupId;
        if (groupId && body.dryRun !== true) this.unhold(groupId);
        try {
          const result = releaseGroup(target, { port: this.port, stateDir: this.stateDir, dryRun: body.dryRun === true });
          if (!result.dryRun) {
            this.assigned.delete(result.groupId);
            this.hub.publish('release', { group: result.groupId, owner: result.owner });
          }
          return result;
        } catch (error) {
          // Still assigned: protect it again.
          this.loadAssigned();
          if (groupId && this.assigned.has(groupId)) this.hold(this.assigned.get(groupId)!);
          throw error;
        }
      })
      .route('POST', '/recover', (ctx) => {
        this.authorize(ctx, 'recover');
        const r = recover({ port: this.port, stateDir: this.stateDir });
        this.schedule('recover');
        return r;
      })
      .route('POST', '/rescan', async () => {
        this.schedule('request');
        await this.idle();
        return this.status();
      })
      .route('GET', '/events', this.hub.handler());
  }

  /** Close cleanly: release nothing (the journal stays; the next start holds again). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      await this.source?.close();
      await this.idle().catch(() => undefined);
      this.hub.close();
      await this.server?.close();
      for (const [, h] of this.holds) {
        for (const g of h.groups.values()) g.close();
        h.container.close();
      }
      this.holds.clear();
      this.logger.info('guard stopped; assignments stay in the journal', { stateDir: this.stateDir });
    })();
    return this.closing;
  }
}

import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { IsogroupError, isIsogroupError } from '../errors.js';
import { recover, parseGroupArg, DEFAULT_STATE_DIR } from '../api/bind.js';
import { assignToOwner, ownerScope, contextTable, destroyOwnerContext, listContexts, mergeOwnerContexts, releaseFromOwner, showContext, subjectForOwner } from '../api/contexts.js';
import { AuditLog, decideAndAudit } from '../state/audit.js';
import { PolicyStore, readSubject } from '../state/policy-store.js';
import { contextOf } from '../groups/context.js';
import { compareIovaRanges, rangesToJson, rangeFromJson } from '../groups/iova.js';
import type { Subject } from '../groups/policy.js';
import { listDevices } from '../api/devices.js';
import { listGroups } from '../api/groups.js';
import { type JournalEntry, readJournal, assignedGroups, updateMembers } from '../state/journal.js';
import { lockStateDir } from '../state/lock.js';
import { prepareStateDir } from '../state/lock.js';
import type { HostSnapshot, KernelGroup, PciDevice } from '../model/device.js';
import { journalStatus } from '../state/status.js';
import { decideDevice, decideGuard, type GuardAction, type GuardEvent } from '../bind/guard.js';
import type { GuardActionResult } from '../bind/guard-apply.js';
import { type ActionRunner, InlineActionRunner, WorkerActionRunner, settlesWithin } from './action-runner.js';
import { replaceFileDurably } from '../state/durable-file.js';
import { type Bdf, isBdf } from '../model/bdf.js';
import { NodeSysfsPort, type SysfsPort } from '../sysfs/port.js';
import { resolveRoot } from '../capture/unpack.js';
import { readGuardState, scanDevices, scanHost } from '../sysfs/scan.js';
import { openSimulatedRoot, SIM_DIR } from '../sim/index.js';
import { type HotplugHint, type HotplugSource, FixtureWatchSource, IntervalSource, combineSources, openLiveHotplugSource } from '../os/uevent.js';
import type { VfioBackend, VfioContainerHandle, VfioGroupHandle } from '../os/vfio.js';
import { KernelVfioBackend } from '../os/vfio-kernel.js';
import { EventHub } from './events.js';
import { UnixHttpServer, removeStaleSocket, reply, type RequestContext } from './http-unix.js';
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
  /**
   * How a fixture root is watched: fs.watch (inotify per directory, default) or chokidar. Measured on a
   * 1,000-add stream: chokidar p50 2.6 s from change to hint (7.7 s to start with 10k devices), fs.watch 0.5 ms.
   */
  watchEngine?: 'fs-watch' | 'chokidar';
  /** On close, how long to let a pass and pending sysfs writes finish before leaving them (default 10 s). */
  stopGraceMs?: number;
  /** Policy file (JSON or YAML); missing: root only. Default /etc/isogroup/policy.yaml (ROOT/etc/... under --simulate). */
  policyFile?: string | null;
}

interface Handoff {
  owner: string;
  uid: number;
  gid: number;
  /** The owner has opened /dev/vfio/N (so the kernel protects the group again). */
  opened: boolean;
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
const SOON_QUIET_MS = 200;
const SOON_MAX_MS = 2000;
/** Devices scanned per turn of the event loop during a full pass (~0.1 ms each). */
const SCAN_SLICE = 8;

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
  private soonTimer: NodeJS.Timeout | null = null;
  private soonSince = 0;
  private soonLast = 0;
  private soonReason = '';
  private queued = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly policy: PolicyStore;
  private readonly audit: AuditLog;
  private readonly handoffs = new Map<string, Handoff>();
  private readonly actions: ActionRunner;
  private readonly stopGraceMs: number;

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
    const policyFile = options.policyFile === undefined ? (this.simulate ? path.join(this.root, 'etc/isogroup/policy.yaml') : '/etc/isogroup/policy.yaml') : options.policyFile;
    this.policy = PolicyStore.open(policyFile);
    this.audit = new AuditLog(this.stateDir);
    this.stopGraceMs = options.stopGraceMs ?? 10_000;
    this.actions =
      // The guard's sysfs writes run on a worker thread; a daemon given its own port object runs them
      // inline (a port object cannot cross threads).
      options.port
        ? new InlineActionRunner(this.port)
        : new WorkerActionRunner({ root: this.root, simulate: this.simulate }, this.port, (error) => {
            this.logger.error('action thread died; actions run on the main thread from now on', { error: error.message });
          });
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
    this.audit.append({ action: 'daemon-start', allowed: true, subject: null, target: {}, rule: null, reason: `policy ${this.policy.policy.source}` });
    const unfinished = readJournal(this.stateDir).entries.filter((e) => e.state !== 'assigned');
    if (unfinished.length) {
      const r = recover({ port: this.port, stateDir: this.stateDir });
      this.logger.warn('recovered unfinished transactions from the journal', { groups: unfinished.map((e) => e.groupId), recovered: r.recovered.length });
      this.hub.publish('recover', { groups: unfinished.map((e) => e.groupId) });
    }
    this.loadAssigned();
    this.loadHandoffs();
    // Hold first, so the kernel protects the groups while the repair pass runs.
    for (const entry of this.assigned.values()) if (!this.handoffs.has(entry.groupId)) this.hold(entry);
    await this.reconcile('start');
    const sources = options.sources ?? this.defaultSources(options.rescanMs, options.watchEngine);
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

  private defaultSources(rescanMs: number | undefined, engine: 'fs-watch' | 'chokidar' = 'fs-watch'): HotplugSource[] {
    const every = rescanMs ?? (this.root === '/' ? 5000 : 2000);
    const sources: HotplugSource[] = [];
    if (this.root === '/') {
      const live = openLiveHotplugSource();
      if (live.fallbackReason) this.logger.warn('kernel uevents through udevadm', { reason: live.fallbackReason });
      sources.push(live.source);
    } else {
      sources.push(new FixtureWatchSource(this.root, { engine }));
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
    // A hint that names a device is decided on its own, at once; the full pass (membership, the
    // journal, anything missed) follows later and never sits between a hint and its decision.
    if (hint.bdf && isBdf(hint.bdf) && hint.action !== 'remove') {
      try {
        this.fastPath(hint.bdf, t0);
      } catch (error) {
        this.logger.warn('fast path failed; a rescan follows', { bdf: hint.bdf, error: (error as Error).message });
        this.scheduleSoon('fast-path-failed');
      }
      return;
    }
    if (hint.action === 'remove' && hint.bdf && ![...this.assigned.values()].some((e) => e.members.some((m) => m.bdf === hint.bdf))) return;
    this.scheduleSoon(`${hint.source}:${hint.action}`);
  }

  /** Trailing debounce: one pass 200 ms after the last request, and at most 2 s after the first. */
  private scheduleSoon(reason: string): void {
    if (this.closed) return;
    const now = performance.now();
    this.soonLast = now;
    this.soonReason = reason;
    if (this.soonTimer) return; // one timer per quiet period, not one per hint of a burst
    this.soonSince = now;
    const fire = (): void => {
      const t = performance.now();
      const quietFor = t - this.soonLast;
      if (quietFor < SOON_QUIET_MS && t - this.soonSince < SOON_MAX_MS) {
        this.soonTimer = setTimeout(fire, Math.min(SOON_QUIET_MS - quietFor, SOON_MAX_MS - (t - this.soonSince)));
        return;
      }
      this.soonTimer = null;
      this.schedule(this.soonReason);
    };
    this.soonTimer = setTimeout(fire, SOON_QUIET_MS);
  }

  // One device named by a hint: read it alone, decide, act; the full rescan that follows catches the rest.
  private fastPath(bdf: Bdf, t0: number): void {
    const rel = `sys/bus/pci/devices/${bdf}/iommu_group`;
    if (this.port.kind(rel) !== 'link') return;
    const groupId = path.posix.basename(this.port.readLink(rel));
    const entry = this.assigned.get(groupId);
    if (!entry) return;
    const device = readGuardState(this.port, bdf);
    if (!device) return;
    const decision = decideDevice(device, entry, entry.members.some((m) => m.bdf === bdf));
    this.stats.fastDecisions++;
    this.recordLatency(performance.now() - t0);
    this.hub.publish('decision', { bdf, group: groupId, owner: entry.owner, via: 'hint', actions: decision.actions.map((a) => ({ kind: a.kind, reason: a.reason })) });
    void this.carryOut(decision.actions, decision.events);
    if (!entry.members.some((m) => m.bdf === bdf)) this.scheduleSoon('membership');
  }

  /** Report the events now; hand the actions to the action thread and report each result as it comes back. */
  private async carryOut(actions: GuardAction[], events: GuardEvent[]): Promise<GuardActionResult[]> {
    for (const ev of events) {
      if (ev.type === 'violation') this.stats.violations++;
      this.hub.publish(ev.type, { group: ev.groupId, owner: ev.owner, ...(ev.bdf ? { bdf: ev.bdf } : {}), ...(ev.driver ? { driver: ev.driver } : {}), ...(ev.added ? { added: ev.added, removed: ev.removed } : {}), message: ev.message });
      this.logger[ev.type === 'violation' ? 'warn' : 'info'](ev.message, { event: ev.type, group: ev.groupId, bdf: ev.bdf, driver: ev.driver });
    }
    if (actions.length === 0) return [];
    const results = await Promise.all(
      actions.map(async (action) => {
        const r = await this.actions.run(action);
        this.stats.actions++;
        if (!r.ok) this.stats.failedActions++;
        this.hub.publish('action', { kind: action.kind, bdf: action.bdf, group: action.groupId, owner: action.owner, ok: r.ok, driverAfter: r.driverAfter, ...(r.error ? { error: r.error } : {}) });
        if (!r.ok) this.logger.error('guard action failed', { kind: action.kind, bdf: action.bdf, error: r.error });
        return r;
      }),
    );
    // A repaired group may be viable again: hold what is not held yet.
    if (!this.closed && results.some((r) => r.ok)) for (const e of this.assigned.values()) if (this.ownerOf(e.groupId) === null && !this.handoffs.has(e.groupId)) this.hold(e);
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
    for (;;) {
      if (this.soonTimer) {
        clearTimeout(this.soonTimer);
        this.soonTimer = null;
        this.schedule('idle');
      }
      if (this.running) await this.running;
      else if (this.actions.pending > 0) await this.actions.idle();
      else return;
    }
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
    for (const [id, h] of this.handoffs) if (!this.assigned.has(id)) this.endHandoff(id, h);
    for (const entry of this.assigned.values()) {
      const holder = this.ownerOf(entry.groupId);
      if (holder !== null && holder !== entry.owner) this.migrate(entry.groupId, holder, entry.owner);
      if (this.handoffs.has(entry.groupId)) this.watchHandoff(entry.groupId);
      else this.hold(entry);
    }
    const snap = await this.assignedSnapshot();
    const decision = decideGuard(
      snap,
      [...this.assigned.values()].map((e) => ({ groupId: e.groupId, owner: e.owner, devices: e.members.map((m) => m.bdf as Bdf) })),
    );
    if (decision.actions.length || decision.events.length) this.logger.debug('reconcile', { reason, actions: decision.actions.length, events: decision.events.length });
    await this.carryOut(decision.actions, decision.events);
    const changed = new Map<string, readonly Bdf[]>();
    for (const ev of decision.events) if (ev.type === 'membership-changed') changed.set(ev.groupId, snap.kernelGroups.get(ev.groupId)?.devices ?? []);
    if (changed.size > 0) {
      // Hints that arrived during the pass go first: the journal write is the pass's longest step.
      await new Promise((r) => setImmediate(r));
      this.recordMembers(changed);
    }
  }

  /**
   * Only what the guard decides on: the members of assigned groups (from the kernel's group
   * directories), not the whole host; the whole host when a root has no group directories.
   */
  private async assignedSnapshot(): Promise<HostSnapshot> {
    if (this.port.kind('sys/kernel/iommu_groups') !== 'dir') return scanHost(this.port, { pciIds: null });
    const kernelGroups = new Map<string, KernelGroup>();
    const devices = new Map<Bdf, PciDevice>();
    for (const id of this.assigned.keys()) {
      let members: Bdf[] = [];
      try {
        members = this.port.list(`sys/kernel/iommu_groups/${id}/devices`).map((e) => e.name).filter((n): n is Bdf => isBdf(n));
      } catch {
        members = [];
      }
      // In slices, yielding between them: a hint that arrives meanwhile is decided within one slice.
      for (let i = 0; i < members.length; i += SCAN_SLICE) {
        for (const d of scanDevices(this.port, members.slice(i, i + SCAN_SLICE))) devices.set(d.bdf, d);
        await new Promise((r) => setImmediate(r));
      }
      kernelGroups.set(id, { id, devices: members.filter((b) => devices.has(b)), type: null, reservedRegions: [] });
    }
    for (const [id, g] of kernelGroups) if (g.devices.length === 0) kernelGroups.delete(id);
    return { root: this.root, devices, kernelGroups, iommuUnits: new Map(), config: new Map(), iommuEnabled: true, driversAutoprobe: null, problems: [] };
  }

  // The journal learns about devices that joined (or hot-added ones that left) an assigned group, so
  // release gives them back to the host; a busy state dir (an assign running) means: next pass.
  private recordMembers(present: ReadonlyMap<string, readonly Bdf[]>): void {
    if (this.closed) return;
    let lock: { release(): void } | null = null;
    try {
      lock = lockStateDir(this.stateDir);
      for (const entry of updateMembers(this.stateDir, present)) this.assigned.set(entry.groupId, entry);
    } catch (error) {
      this.logger.debug('journal membership update postponed', { groups: [...present.keys()], error: (error as Error).message });
      this.scheduleSoon('membership-retry');
    } finally {
      lock?.release();
    }
  }

  /** Move a held group into another owner's container (after a merge): unset, then set on the new one. */
  private migrate(groupId: string, from: string, to: string): void {
    const src = this.holds.get(from)!;
    const handle = src.groups.get(groupId)!;
    let dst = this.holds.get(to);
    const created = !dst;
    try {
      if (!dst) dst = { container: this.vfio.openContainer(), groups: new Map(), iommuSet: false };
      handle.unsetContainer();
      handle.setContainer(dst.container);
      if (!dst.iommuSet) {
        dst.container.setIommu('type1v2');
        dst.iommuSet = true;
      }
      src.groups.delete(groupId);
      dst.groups.set(groupId, handle);
      if (created) this.holds.set(to, dst);
      if (src.groups.size === 0) {
        src.container.close();
        this.holds.delete(from);
      }
      this.hub.publish('hold', { group: groupId, owner: to, ok: true, movedFrom: from });
    } catch (error) {
      // Could not move it: close it, the next pass holds it again under the right owner.
      src.groups.delete(groupId);
      handle.close();
      if (created && dst) dst.container.close();
      this.logger.warn('cannot move group between containers', { group: groupId, from, to, error: (error as Error).message });
    }
  }

  private handoffFile(): string {
    return path.join(this.stateDir, 'handoffs.json');
  }

  private loadHandoffs(): void {
    try {
      const raw = JSON.parse(fs.readFileSync(this.handoffFile(), 'utf8')) as Record<string, Handoff>;
      for (const [id, h] of Object.entries(raw)) if (/^\d+$/.test(id) && typeof h.owner === 'string') this.handoffs.set(id, h);
    } catch {
      /* none yet */
    }
  }

  private saveHandoffs(): void {
    replaceFileDurably(this.handoffFile(), `${JSON.stringify(Object.fromEntries(this.handoffs), null, 2)}\n`);
  }

  private vfioNode(groupId: string): string {
    return path.join(this.simulate ? this.root : '/', 'dev/vfio', groupId);
  }

  /** Give the owner /dev/vfio/N itself: drop our hold, chown it to the owner, mode 0660. */
  handoff(groupId: string, owner: string): Handoff {
    const entry = this.assigned.get(groupId);
    if (!entry) throw new IsogroupError('E_NOT_ASSIGNED', `group ${groupId} is not assigned`, { group: groupId });
    if (entry.owner !== owner) throw new IsogroupError('E_CONTEXT', `group ${groupId} belongs to ${entry.owner}, not ${owner}`, { group: groupId, owner: entry.owner });
    const who = subjectForOwner(owner);
    if (who.uid < 0) throw new IsogroupError('E_INVALID_INPUT', `owner ${owner} is not a user of this host (no /etc/passwd entry): cannot give it /dev/vfio/${groupId}`, { owner });
    const node = this.vfioNode(groupId);
    const gid = who.gids[0] ?? who.uid;
    this.unhold(groupId);
    try {
      fs.chownSync(node, who.uid, gid);
      fs.chmodSync(node, 0o660);
    } catch (error) {
      this.hold(entry);
      throw new IsogroupError('E_PERMISSION', `cannot give ${node} to ${owner}: ${(error as NodeJS.ErrnoException).code ?? error}`, { node, owner }, { cause: error });
    }
    const h: Handoff = { owner, uid: who.uid, gid, opened: false };
    this.handoffs.set(groupId, h);
    this.saveHandoffs();
    this.hub.publish('handoff', { group: groupId, owner, uid: who.uid, gid, node });
    return h;
  }

  // Until the owner opens the group, nobody holds it: repairs keep it clean, and we notice the open.
  private watchHandoff(groupId: string): void {
    const h = this.handoffs.get(groupId)!;
    if (h.opened) return;
    try {
      this.vfio.openGroup(groupId).close();
    } catch (error) {
      if (isIsogroupError(error) && error.details.errno === 'EBUSY') {
        h.opened = true;
        this.saveHandoffs();
        this.hub.publish('handoff-opened', { group: groupId, owner: h.owner });
      }
    }
  }

  private endHandoff(groupId: string, _h: Handoff): void {
    const node = this.vfioNode(groupId);
    try {
      if (fs.existsSync(node)) {
        fs.chownSync(node, 0, 0);
        fs.chmodSync(node, 0o600);
      }
    } catch (error) {
      this.logger.warn('cannot revert /dev/vfio ownership', { node, error: (error as Error).message });
    }
    this.handoffs.delete(groupId);
    this.saveHandoffs();
    this.hub.publish('handoff-ended', { group: groupId });
  }

  /** The fds an owner gets: its container and every group of its context (the daemon keeps its own). */
  private ownerFds(owner: string): { fds: number[]; temp: number[]; groups: string[] } {
    const h = this.holds.get(owner);
    if (!h) throw new IsogroupError('E_NOT_FOUND', `${owner} holds no groups through this daemon`, { owner });
    const groups = [...h.groups.keys()];
    if (h.container.fd !== null) return { fds: [h.container.fd, ...[...h.groups.values()].map((g) => g.fd!)], temp: [], groups };
    // Fixture kernel: its handles have no kernel fd; pass the device nodes of the fixture root instead.
    const temp = [fs.openSync(path.join(this.root, 'dev/vfio/vfio'), 'r'), ...groups.map((g) => fs.openSync(path.join(this.root, 'dev/vfio', g), 'r'))];
    return { fds: temp, temp, groups };
  }

  private subjectOf(ctx: { peer: RequestContext['peer'] }): Subject {
    if (!ctx.peer) throw new IsogroupError('E_PERMISSION', 'the kernel did not say who is asking (no peer credentials)', {});
    return readSubject(ctx.peer.uid, ctx.peer.gid, '/');
  }

  // What a non-root peer may see: its own context (vbus: each user sees only its own devices).
  private peerScope(ctx: { peer: RequestContext['peer'] }): { owner: string; groups: Set<string>; devices: Set<string> } | null {
    const subject = this.subjectOf(ctx);
    return subject.uid === 0 ? null : ownerScope(subject.name, { port: this.port, stateDir: this.stateDir });
  }

  // A non-root peer sees and acts on its own context only.
  private requireSelfOrRoot(subject: Subject, owner: string, what: string): void {
    if (subject.uid !== 0 && subject.name !== owner) throw new IsogroupError('E_PERMISSION', `${subject.name} may not ${what} ${owner}'s context`, { subject: subject.name, owner });
  }

  async reloadPolicy(): Promise<boolean> {
    const r = this.policy.reload({ audit: this.audit });
    if (!r.ok) {
      this.logger.error('policy rejected; the previous one stays in force', { error: r.error.message });
      this.hub.publish('policy', { ok: false, error: r.error.message });
      return false;
    }
    this.hub.publish('policy', { ok: true, rules: r.policy.rules.length });
    return true;
  }

  /** Status with the daemon's own view: held groups, hold errors, counters. */
  status(): Record<string, unknown> {
    const held = this.heldGroups();
    const st = journalStatus(this.stateDir);
    return {
      ...st,
      groups: st.groups.map((g) => ({
        ...g,
        held: held.has(g.id),
        ...(this.holdErrors.has(g.id) ? { holdError: this.holdErrors.get(g.id) } : {}),
        ...(this.handoffs.has(g.id) ? { handoff: this.handoffs.get(g.id) } : {}),
      })),
      daemon: { pid: process.pid, root: this.root, simulate: this.simulate, stateDir: this.stateDir, socket: this.socketPath, stats: this.stats, subscribers: this.hub.subscriberCount, actions: this.actions.kind, pendingActions: this.actions.pending },
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

  /** The assigned group a GROUP|BDF request names (a BDF: the group that has it as a member). */
  private assignedEntryOf(target: string): JournalEntry | undefined {
    const arg = parseGroupArg(target);
    return 'groupId' in arg ? this.assigned.get(arg.groupId) : [...this.assigned.values()].find((e) => e.members.some((m) => m.bdf === arg.bdf));
  }

  // Recovery touches every group: root only.
  private authorize(ctx: RequestContext, what: string): void {
    if (ctx.peer && ctx.peer.uid !== 0) {
      throw new IsogroupError('E_PERMISSION', `uid ${ctx.peer.uid} may not ${what}: only root changes assignments`, { uid: ctx.peer.uid });
    }
  }

  // The kernel's own IOVA ranges for a held context (VFIO_IOMMU_GET_INFO), compared with ours.
  private kernelIova(owner: string, computed: { start: string; end: string }[]): Record<string, unknown> | null {
    const h = this.holds.get(owner);
    if (!h || !h.iommuSet) return null;
    try {
      const kernel = h.container.iovaRanges();
      const diff = compareIovaRanges(computed.map((r) => rangeFromJson(r)), kernel);
      const match = diff.equal;
      if (!match) this.logger.error('kernel IOVA ranges differ from the computed ones', { owner, kernel: rangesToJson(kernel), computed });
      return { iovaRanges: rangesToJson(kernel), match, ...(match ? {} : { error: { code: 'E_IOVA_MISMATCH', message: `the kernel's usable IOVA ranges for ${owner}'s container differ from the computed ones`, onlyComputed: rangesToJson(diff.onlyComputed), onlyKernel: rangesToJson(diff.onlyKernel) } }) };
    } catch (error) {
      return { error: { code: isIsogroupError(error) ? error.code : 'E_INTERNAL', message: (error as Error).message } };
    }
  }

  private routes(server: UnixHttpServer): UnixHttpServer {
    return server
      .route('GET', '/health', () => ({ ok: true, pid: process.pid }))
      .route('GET', '/status', (ctx) => {
        const st = this.status() as { groups: { owner: string }[] };
        const subject = this.subjectOf(ctx);
        return subject.uid === 0 ? st : { ...st, owner: subject.name, groups: st.groups.filter((g) => g.owner === subject.name) };
      })
      .route('GET', '/devices', (ctx) => {
        const all = listDevices({ port: this.port, pciIds: null });
        const scope = this.peerScope(ctx);
        return scope ? { ...all, owner: scope.owner, devices: all.devices.filter((d) => scope.devices.has(d.bdf)) } : all;
      })
      .route('GET', '/groups', (ctx) => {
        const source = ctx.query.get('source') ?? 'auto';
        if (source !== 'auto' && source !== 'kernel' && source !== 'derived') throw new IsogroupError('E_USAGE', `source must be kernel, derived or auto, got ${JSON.stringify(source)}`, { source });
        const all = listGroups({ port: this.port, pciIds: null, source });
        const scope = this.peerScope(ctx);
        return scope ? { ...all, owner: scope.owner, groups: all.groups.filter((g) => scope.groups.has(g.id)), ungrouped: [] } : all;
      })
      .route('POST', '/assign', (ctx) => {
        const { target, body } = this.requireTarget(ctx.body);
        const subject = this.subjectOf(ctx);
        const result = assignToOwner(target, {
          port: this.port,
          stateDir: this.stateDir,
          subject,
          policy: this.policy.policy,
          owner: typeof body.owner === 'string' ? body.owner : subject.name,
          force: body.force === true,
          dryRun: body.dryRun === true,
          onAssigned: (entry) => {
            this.assigned.set(entry.groupId, entry);
            this.hold(entry);
          },
        });
        if (!result.dryRun) this.hub.publish('assign', { group: result.groupId, owner: result.owner, devices: result.devices ?? [], context: result.context });
        return { ...result, held: this.heldGroups().has(result.groupId) };
      })
      .route('POST', '/release', (ctx) => {
        const { target, body } = this.requireTarget(ctx.body);
        const subject = this.subjectOf(ctx);
        const entry = this.assignedEntryOf(target);
        const groupId = entry?.groupId;
        if (entry) this.requireSelfOrRoot(subject, entry.owner, 'release groups of');
        if (groupId && body.dryRun !== true) this.unhold(groupId);
        try {
          const result = releaseFromOwner(target, { port: this.port, stateDir: this.stateDir, subject, dryRun: body.dryRun === true });
          if (!result.dryRun) {
            this.assigned.delete(result.groupId);
            const h = this.handoffs.get(result.groupId);
            if (h) this.endHandoff(result.groupId, h);
            this.hub.publish('release', { group: result.groupId, owner: result.owner });
          }
          return result;
        } catch (error) {
          // Still assigned: protect it again.
          this.loadAssigned();
          if (groupId && this.assigned.has(groupId) && !this.handoffs.has(groupId)) this.hold(this.assigned.get(groupId)!);
          throw error;
        }
      })
      .route('GET', '/contexts', (ctx) => {
        const subject = this.subjectOf(ctx);
        const all = listContexts({ port: this.port, stateDir: this.stateDir });
        return subject.uid === 0 ? all : { ...all, contexts: all.contexts.filter((c) => c.owner === subject.name) };
      })
      .route('GET', '/contexts/:owner', (ctx) => {
        const owner = ctx.params.owner!;
        this.requireSelfOrRoot(this.subjectOf(ctx), owner, 'see');
        const view = showContext(owner, { port: this.port, stateDir: this.stateDir });
        return { ...view, kernel: this.kernelIova(owner, view.context.iovaRanges) };
      })
      .route('POST', '/contexts/:owner/attach', (ctx) => {
        const { target } = this.requireTarget(ctx.body);
        const subject = this.subjectOf(ctx);
        const owner = ctx.params.owner!;
        this.requireSelfOrRoot(subject, owner, 'attach to');
        const result = assignToOwner(target, { port: this.port, stateDir: this.stateDir, subject, policy: this.policy.policy, owner, onAssigned: (entry) => {
          this.assigned.set(entry.groupId, entry);
          this.hold(entry);
        } });
        this.hub.publish('assign', { group: result.groupId, owner, devices: result.devices ?? [], context: result.context });
        return { ...result, held: this.heldGroups().has(result.groupId) };
      })
      .route('POST', '/contexts/:owner/detach', (ctx) => {
        const { target } = this.requireTarget(ctx.body);
        const subject = this.subjectOf(ctx);
        const owner = ctx.params.owner!;
        this.requireSelfOrRoot(subject, owner, 'detach from');
        const entry = this.assignedEntryOf(target);
        if (!entry || entry.owner !== owner) throw new IsogroupError('E_CONTEXT', `group ${target} is not in ${owner}'s context`, { owner, target });
        this.unhold(entry.groupId);
        const result = releaseFromOwner(entry.groupId, { port: this.port, stateDir: this.stateDir, subject });
        this.assigned.delete(entry.groupId);
        this.hub.publish('release', { group: entry.groupId, owner });
        return result;
      })
      .route('POST', '/contexts/:owner/merge', (ctx) => {
        const body = (ctx.body ?? {}) as Record<string, unknown>;
        if (typeof body.into !== 'string') throw new IsogroupError('E_USAGE', 'merge needs "into": the owner whose context receives the groups', {});
        const view = mergeOwnerContexts(ctx.params.owner!, body.into, { port: this.port, stateDir: this.stateDir, subject: this.subjectOf(ctx), policy: this.policy.policy });
        this.loadAssigned();
        for (const e of this.assigned.values()) {
          const holder = this.ownerOf(e.groupId);
          if (holder !== null && holder !== e.owner) this.migrate(e.groupId, holder, e.owner);
        }
        this.hub.publish('merge', { from: ctx.params.owner, into: body.into });
        return { ...view, kernel: this.kernelIova(body.into, view.context.iovaRanges) };
      })
      .route('POST', '/contexts/:owner/destroy', (ctx) => {
        const body = (ctx.body ?? {}) as Record<string, unknown>;
        const owner = ctx.params.owner!;
        const subject = this.subjectOf(ctx);
        this.requireSelfOrRoot(subject, owner, 'destroy');
        const table = contextTable({ port: this.port, stateDir: this.stateDir });
        for (const g of contextOf(table, owner)?.groups ?? []) if (body.force === true) this.unhold(g.id);
        const r = destroyOwnerContext(owner, { port: this.port, stateDir: this.stateDir, subject, force: body.force === true });
        for (const id of r.released) this.assigned.delete(id);
        this.hub.publish('destroy', { owner, released: r.released });
        return r;
      })
      .route('POST', '/contexts/:owner/handoff', (ctx) => {
        const { target } = this.requireTarget(ctx.body);
        const owner = ctx.params.owner!;
        this.requireSelfOrRoot(this.subjectOf(ctx), owner, 'take');
        const arg = parseGroupArg(target);
        if (!('groupId' in arg)) throw new IsogroupError('E_USAGE', 'handoff takes a group number', {});
        return { group: arg.groupId, ...this.handoff(arg.groupId, owner) };
      })
      .fdRoute('POST', '/contexts/:owner/fds', (ctx) => {
        const owner = ctx.params.owner!;
        const subject = this.subjectOf(ctx);
        this.requireSelfOrRoot(subject, owner, 'receive the file descriptors of');
        const table = contextTable({ port: this.port, stateDir: this.stateDir });
        const c = contextOf(table, owner);
        if (!c) throw new IsogroupError('E_NOT_FOUND', `${owner} has no context`, { owner });
        const snap = scanHost(this.port, { pciIds: null });
        const devices = c.devices.map((d) => snap.devices.get(d.bdf)).filter((d): d is NonNullable<typeof d> => d !== undefined);
        const { decision } = decideAndAudit(this.audit, this.policy.policy, subject, { action: 'fd-handoff', owner, context: c.id, devices });
        if (!decision.allowed) throw new IsogroupError('E_POLICY_DENIED', `policy denies ${subject.name} the devices of ${owner}'s context: ${decision.reason}`, { owner, subject: subject.name });
        const { fds, temp, groups } = this.ownerFds(owner);
        this.hub.publish('fd-handoff', { owner, to: subject.name, groups });
        // The kernel duplicates the fds into the peer; our temporary ones close once the hand-off is over.
        return { fds, body: { owner, context: c.id, order: ['container', ...groups.map((g) => `group ${g}`)], devices: c.devices }, release: () => temp.forEach((fd) => fs.closeSync(fd)) };
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

  /** SIGHUP: re-read the journal and rescan (the policy file joins this when contexts land). */
  async reload(): Promise<void> {
    this.hub.publish('reload', {});
    await this.reloadPolicy();
    this.schedule('reload');
    await this.idle();
  }

  /** Close cleanly: release nothing (the journal stays; the next start holds again). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      await this.source?.close();
      if (this.soonTimer) clearTimeout(this.soonTimer);
      // Finish what is under way, but a write stuck in a driver must not keep the daemon from stopping.
      await settlesWithin(this.idle(), this.stopGraceMs);
      await this.actions.close(0);
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

// The hotplug guard loop. Events are only hints: a hint naming a device is decided on its own, at once
// (read it, decide, hand the writes to the action thread); a full pass (journal -> holds -> scan of the
// assigned groups -> decide -> act -> journal membership) follows after a quiet period and catches
// anything missed. A watcher that reacts to uevents cannot win the race against the probe (NOTES.md: the
// driver link appears 1-40 ms after `add`); the holds make the kernel refuse host drivers meanwhile.

import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { decideDevice, decideGuard, type GuardAction, type GuardEvent } from '../bind/guard.js';
import type { GuardActionResult } from '../bind/guard-apply.js';
import { type Bdf, isBdf } from '../model/bdf.js';
import type { HostSnapshot, KernelGroup, PciDevice } from '../model/device.js';
import type { HotplugHint } from '../os/uevent.js';
import { assignedGroups, type JournalEntry, updateMembers } from '../state/journal.js';
import { lockStateDir } from '../state/lock.js';
import { IOMMU_GROUPS, iommuGroupDevices, pciDeviceFile } from '../sysfs/paths.js';
import type { SysfsPort } from '../sysfs/port.js';
import { readGuardState } from '../sysfs/read.js';
import { scanDevices, scanHost } from '../sysfs/scan.js';
import type { ActionRunner } from './action-runner.js';
import type { EventHub } from './events.js';
import type { Handoffs } from './handoff.js';
import type { Holds } from './holds.js';
import type { Logger } from './log.js';

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

export interface GuardParts {
  port: SysfsPort;
  root: string;
  stateDir: string;
  holds: Holds;
  handoffs: Handoffs;
  hub: EventHub;
  logger: Logger;
  actions: ActionRunner;
}

export class Guard {
  readonly stats: DaemonStats = { hints: 0, fastDecisions: 0, reconciles: 0, actions: 0, failedActions: 0, violations: 0, holdFailures: 0 };
  /** Hint-to-decision latencies in ms (ring buffer) for the benchmark and `status`. */
  readonly latencies: number[] = [];
  private latencyNext = 0;
  /** The journal's finished assignments, as last read. */
  assigned = new Map<string, JournalEntry>();
  /** Groups a running transaction is releasing: not held, not decided on, until it ends. */
  private readonly suspended = new Set<string>();
  private running: Promise<void> | null = null;
  private soonTimer: NodeJS.Timeout | null = null;
  private soonSince = 0;
  private soonLast = 0;
  private soonReason = '';
  private queued = false;
  private closed = false;

  constructor(private readonly p: GuardParts) {}

  suspend(groupId: string): void {
    this.suspended.add(groupId);
  }

  resume(groupId: string): void {
    this.suspended.delete(groupId);
  }

  /** The assignments the guard acts on now (not those being released). */
  private guarded(): JournalEntry[] {
    return [...this.assigned.values()].filter((e) => !this.suspended.has(e.groupId));
  }

  /** Re-read the journal's finished assignments. */
  loadAssigned(): void {
    this.assigned = new Map(assignedGroups(this.p.stateDir).map((e) => [e.groupId, e]));
  }

  /** The assigned group a member belongs to (by the journal). */
  entryOfMember(bdf: string): JournalEntry | undefined {
    return [...this.assigned.values()].find((e) => e.members.some((m) => m.bdf === bdf));
  }

  /** Hold every assigned group that is neither held nor handed off. */
  holdAll(): void {
    for (const e of this.guarded()) if (this.p.holds.ownerOf(e.groupId) === null && !this.p.handoffs.has(e.groupId)) this.p.holds.hold(e);
  }

  private recordLatency(ms: number): void {
    if (this.latencies.length < LATENCY_SAMPLES) this.latencies.push(ms);
    else this.latencies[this.latencyNext++ % LATENCY_SAMPLES] = ms;
  }

  onHint(hint: HotplugHint): void {
    if (this.closed) return;
    const t0 = performance.now();
    this.stats.hints++;
    this.p.hub.publish('hotplug', {
      source: hint.source,
      action: hint.action,
      ...(hint.bdf ? { bdf: hint.bdf } : {}),
      ...(hint.driver ? { driver: hint.driver } : {}),
    });
    // A hint that names a device is decided on its own, at once; the full pass (membership, the
    // journal, anything missed) follows later and never sits between a hint and its decision.
    if (hint.bdf && isBdf(hint.bdf) && hint.action !== 'remove') {
      try {
        this.fastPath(hint.bdf, t0);
      } catch (error) {
        this.p.logger.warn('fast path failed; a rescan follows', { bdf: hint.bdf, error: (error as Error).message });
        this.scheduleSoon('fast-path-failed');
      }
      return;
    }
    if (hint.action === 'remove' && hint.bdf && !this.entryOfMember(hint.bdf)) return;
    this.scheduleSoon(`${hint.source}:${hint.action}`);
  }

  /** Trailing debounce: one pass 200 ms after the last request, and at most 2 s after the first. */
  scheduleSoon(reason: string): void {
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
    const rel = pciDeviceFile(bdf, 'iommu_group');
    if (this.p.port.kind(rel) !== 'link') return;
    const groupId = path.posix.basename(this.p.port.readLink(rel));
    const entry = this.assigned.get(groupId);
    if (!entry || this.suspended.has(groupId)) return;
    const device = readGuardState(this.p.port, bdf);
    if (!device) return;
    const decision = decideDevice(
      device,
      entry,
      entry.members.some((m) => m.bdf === bdf),
    );
    this.stats.fastDecisions++;
    this.recordLatency(performance.now() - t0);
    this.p.hub.publish('decision', {
      bdf,
      group: groupId,
      owner: entry.owner,
      via: 'hint',
      actions: decision.actions.map((a) => ({ kind: a.kind, reason: a.reason })),
    });
    void this.carryOut(decision.actions, decision.events);
    if (!entry.members.some((m) => m.bdf === bdf)) this.scheduleSoon('membership');
  }

  /** Report the events now; hand the actions to the action thread and report each result as it comes back. */
  private async carryOut(actions: GuardAction[], events: GuardEvent[]): Promise<GuardActionResult[]> {
    for (const ev of events) {
      if (ev.type === 'violation') this.stats.violations++;
      this.p.hub.publish(ev.type, {
        group: ev.groupId,
        owner: ev.owner,
        ...(ev.bdf ? { bdf: ev.bdf } : {}),
        ...(ev.driver ? { driver: ev.driver } : {}),
        ...(ev.added ? { added: ev.added, removed: ev.removed } : {}),
        message: ev.message,
      });
      this.p.logger[ev.type === 'violation' ? 'warn' : 'info'](ev.message, { event: ev.type, group: ev.groupId, bdf: ev.bdf, driver: ev.driver });
    }
    if (actions.length === 0) return [];
    const results = await Promise.all(
      // A decision about a group whose release began meanwhile is dropped: its devices are leaving.
      actions
        .filter((a) => !this.suspended.has(a.groupId))
        .map(async (action) => {
          const r = await this.p.actions.run(action);
          this.stats.actions++;
          if (!r.ok) this.stats.failedActions++;
          this.p.hub.publish('action', {
            kind: action.kind,
            bdf: action.bdf,
            group: action.groupId,
            owner: action.owner,
            ok: r.ok,
            driverAfter: r.driverAfter,
            ...(r.error ? { error: r.error } : {}),
          });
          if (!r.ok) this.p.logger.error('guard action failed', { kind: action.kind, bdf: action.bdf, error: r.error });
          return r;
        }),
    );
    // A repaired group may be viable again: hold what is not held yet.
    if (!this.closed && results.some((r) => r.ok)) this.holdAll();
    return results;
  }

  /** Coalesce: one pass running, at most one queued; never inside the hint's own call stack. */
  schedule(reason: string): void {
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
        this.p.logger.error('reconcile failed', { reason, error: (error as Error).message });
      } finally {
        this.running = null;
      }
    })();
  }

  /** Wait until no pass is running or queued and no action is pending (tests, benchmarks, stopping). */
  async idle(): Promise<void> {
    for (;;) {
      if (this.soonTimer) {
        clearTimeout(this.soonTimer);
        this.soonTimer = null;
        this.schedule('idle');
      }
      if (this.running) await this.running;
      else if (this.p.actions.pending > 0) await this.p.actions.idle();
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
      this.p.logger.error('cannot read the journal; keeping the last known assignments', { error: (error as Error).message });
    }
    const { holds, handoffs } = this.p;
    for (const id of holds.groups()) if (!this.assigned.has(id)) holds.unhold(id);
    for (const id of handoffs.groups()) if (!this.assigned.has(id)) handoffs.end(id);
    const guarded = this.guarded();
    for (const entry of guarded) {
      const holder = holds.ownerOf(entry.groupId);
      if (holder !== null && holder !== entry.owner) holds.migrate(entry.groupId, holder, entry.owner);
      if (handoffs.has(entry.groupId)) handoffs.watch(entry);
      else holds.hold(entry);
    }
    this.stats.holdFailures = holds.failures;
    const snap = await this.assignedSnapshot(guarded);
    const decision = decideGuard(
      snap,
      guarded.map((e) => ({ groupId: e.groupId, owner: e.owner, devices: e.members.map((m) => m.bdf as Bdf) })),
    );
    if (decision.actions.length || decision.events.length)
      this.p.logger.debug('reconcile', { reason, actions: decision.actions.length, events: decision.events.length });
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
  private async assignedSnapshot(guarded: readonly JournalEntry[]): Promise<HostSnapshot> {
    const port = this.p.port;
    if (port.kind(IOMMU_GROUPS) !== 'dir') return scanHost(port, { pciIds: null });
    const kernelGroups = new Map<string, KernelGroup>();
    const devices = new Map<Bdf, PciDevice>();
    for (const { groupId: id } of guarded) {
      let members: Bdf[] = [];
      try {
        members = port
          .list(iommuGroupDevices(id))
          .map((e) => e.name)
          .filter((n): n is Bdf => isBdf(n));
      } catch {
        members = [];
      }
      // In slices, yielding between them: a hint that arrives meanwhile is decided within one slice.
      for (let i = 0; i < members.length; i += SCAN_SLICE) {
        for (const d of scanDevices(port, members.slice(i, i + SCAN_SLICE))) devices.set(d.bdf, d);
        await new Promise((r) => setImmediate(r));
      }
      kernelGroups.set(id, { id, devices: members.filter((b) => devices.has(b)), type: null, reservedRegions: [] });
    }
    for (const [id, g] of kernelGroups) if (g.devices.length === 0) kernelGroups.delete(id);
    return { root: this.p.root, devices, kernelGroups, iommuUnits: new Map(), config: new Map(), iommuEnabled: true, driversAutoprobe: null, problems: [] };
  }

  // The journal learns about devices that joined (or hot-added ones that left) an assigned group, so
  // release gives them back to the host; a busy state dir (a transaction running) means: next pass.
  private recordMembers(present: ReadonlyMap<string, readonly Bdf[]>): void {
    if (this.closed) return;
    let lock: { release(): void } | null = null;
    try {
      lock = lockStateDir(this.p.stateDir);
      for (const entry of updateMembers(this.p.stateDir, present)) this.assigned.set(entry.groupId, entry);
    } catch (error) {
      this.p.logger.debug('journal membership update postponed', { groups: [...present.keys()], error: (error as Error).message });
      this.scheduleSoon('membership-retry');
    } finally {
      lock?.release();
    }
  }

  /** Stop taking hints and passes; what runs may finish (the daemon waits for it, bounded). */
  stop(): void {
    this.closed = true;
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.soonTimer = null;
  }
}

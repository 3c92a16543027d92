import * as path from 'node:path';
import { IsogroupError, isIsogroupError } from '../errors.js';
import type { Bdf } from '../model/bdf.js';
import { dropEntry, type JournalEntry, type JournalMember, journalPath, putEntry } from '../state/journal.js';
import { pciDevice, pciDeviceFile } from '../sysfs/paths.js';
import type { SysfsPort } from '../sysfs/port.js';
import { type AssignPlan, assignStepsFor, type PlanStep, restoreStepsFor, stepBind } from './plan.js';

// Executes plans against a SysfsPort (the live /sys, or the fixture kernel). The journal is written
// before the first write and after the last; any failure undoes what was done, device by device in
// reverse, and a failure of the undo keeps the journal for `recover`.

export interface StepRecord extends PlanStep {
  ok: boolean;
  error?: { code: string; message: string };
}

export interface TransactionResult {
  groupId: string;
  owner: string;
  devices: Bdf[];
  /** Steps done, in order. */
  done: StepRecord[];
  /** Steps done to undo them after a failure (empty on success). */
  undone: StepRecord[];
  notes: string[];
}

export interface ApplyContext {
  stateDir: string;
  root: string;
  simulate: boolean;
}

/** An assignment carried out: its steps, and the journal entry that now records it. */
export interface AssignApplied extends TransactionResult {
  entry: JournalEntry;
}

/** The driver a device is bound to now (null: none), read back from its driver link. */
export const currentDriver = (port: SysfsPort, bdf: Bdf): string | null => {
  const rel = pciDeviceFile(bdf, 'driver');
  if (port.kind(rel) !== 'link') return null;
  try {
    return path.posix.basename(port.readLink(rel));
  } catch {
    return null;
  }
};

export const currentOverride = (port: SysfsPort, bdf: Bdf): string | null => {
  try {
    const v = port.readText(pciDeviceFile(bdf, 'driver_override')).replace(/\n$/, '');
    return v === '' || v === '(null)' ? null : v;
  } catch {
    return null;
  }
};

export const devicePresent = (port: SysfsPort, bdf: Bdf): boolean => port.exists(pciDevice(bdf));

const errorOf = (error: unknown): { code: string; message: string } =>
  isIsogroupError(error)
    ? { code: error.code, message: error.message }
    : { code: 'E_INTERNAL', message: error instanceof Error ? error.message : String(error) };

/** Run one step; a verify that finds the wrong driver throws E_BIND_FAILED. */
export const runStep = (port: SysfsPort, step: PlanStep, log: StepRecord[]): void => {
  try {
    if (step.kind === 'verify') {
      let now = currentDriver(port, step.bdf);
      if (now === null && step.bindIfMissing && step.expect === step.bindIfMissing) {
        // drivers_probe said OK but nothing bound: try the driver's own bind file, which reports errors.
        const bind = stepBind(step.bdf, step.bindIfMissing, `drivers_probe left ${step.bdf} driverless: bind ${step.bindIfMissing} explicitly`);
        runStep(port, bind, log);
        now = currentDriver(port, step.bdf);
      }
      if (now !== (step.expect ?? null)) {
        throw new IsogroupError(
          'E_BIND_FAILED',
          `${step.bdf} is on ${now ?? 'no driver'} after the write, expected ${step.expect ?? 'no driver'} (sysfs reported success)`,
          { bdf: step.bdf, driver: now, expected: step.expect ?? null },
        );
      }
    } else {
      port.writeText(step.file!, step.value!);
    }
    log.push({ ...step, ok: true });
  } catch (error) {
    // A nested explicit bind already logged its own failure.
    if (!(step.kind === 'verify' && log.at(-1)?.kind === 'bind' && log.at(-1)?.ok === false && log.at(-1)?.bdf === step.bdf))
      log.push({ ...step, ok: false, error: errorOf(error) });
    throw error;
  }
};

/** Bring members back to their journaled drivers and overrides, last member first. Idempotent. */
export const restoreMembers = (port: SysfsPort, members: JournalMember[], log: StepRecord[]): void => {
  const failures: unknown[] = [];
  for (const m of [...members].reverse()) {
    const bdf = m.bdf as Bdf;
    if (!devicePresent(port, bdf)) continue;
    try {
      for (const step of restoreStepsFor(m, { driver: currentDriver(port, bdf), override: currentOverride(port, bdf) })) runStep(port, step, log);
    } catch (error) {
      failures.push(error); // keep going: every other device still gets its driver back
    }
  }
  if (failures.length) throw failures[0];
};

/** Move members (again) to vfio-pci from their current state. Used to undo a failed release. */
const reassignMembers = (port: SysfsPort, members: JournalMember[], log: StepRecord[]): void => {
  for (const m of members) {
    const bdf = m.bdf as Bdf;
    if (!devicePresent(port, bdf)) continue;
    for (const step of assignStepsFor({ bdf, role: m.role, driver: currentDriver(port, bdf), override: currentOverride(port, bdf) })) runStep(port, step, log);
  }
};

const journalMembers = (plan: { members: JournalMember[] }): JournalMember[] =>
  plan.members.map((m) => ({ bdf: m.bdf, role: m.role, originalDriver: m.originalDriver, originalOverride: m.originalOverride }));

/** Apply an assign plan: journal, then override -> unbind -> probe -> verify, device by device. */
export const applyPlan = (port: SysfsPort, plan: AssignPlan, ctx: ApplyContext): AssignApplied => {
  const now = (): Date => new Date();
  const entry: JournalEntry = {
    groupId: plan.groupId,
    owner: plan.owner,
    root: ctx.root,
    simulate: ctx.simulate,
    state: 'assigning',
    time: now().toISOString(),
    members: journalMembers(plan),
    notes: plan.notes,
  };
  putEntry(ctx.stateDir, entry);
  const done: StepRecord[] = [];
  const undone: StepRecord[] = [];
  const devices = plan.members.map((m) => m.bdf);
  try {
    for (const step of plan.steps) runStep(port, step, done);
  } catch (error) {
    try {
      restoreMembers(port, entry.members, undone);
    } catch (undoError) {
      putEntry(ctx.stateDir, { ...entry, state: 'rolling-back', lastError: errorOf(undoError) });
      throw new IsogroupError(
        'E_ROLLBACK_FAILED',
        `assigning group ${plan.groupId} failed (${errorOf(error).message}) and undoing it failed too (${errorOf(undoError).message}); the journal ${journalPath(ctx.stateDir)} is kept: run \`isogroup recover\``,
        { group: plan.groupId, done, undone, journal: journalPath(ctx.stateDir), cause: errorOf(error) },
        { cause: error },
      );
    }
    dropEntry(ctx.stateDir, plan.groupId);
    if (isIsogroupError(error)) {
      throw new IsogroupError(
        error.code,
        `assigning group ${plan.groupId} failed and was undone: ${error.message}`,
        { ...error.details, group: plan.groupId, done, undone },
        { cause: error },
      );
    }
    throw error;
  }
  const assigned: JournalEntry = { ...entry, state: 'assigned', time: now().toISOString() };
  putEntry(ctx.stateDir, assigned);
  return { groupId: plan.groupId, owner: plan.owner, devices, done, undone, notes: plan.notes, entry: assigned };
};

/** Release a journaled group: restore every member's original driver and override. */
export const applyRelease = (port: SysfsPort, entry: JournalEntry, ctx: ApplyContext): TransactionResult => {
  const releasing: JournalEntry = { ...entry, state: 'releasing' };
  putEntry(ctx.stateDir, releasing);
  const done: StepRecord[] = [];
  const undone: StepRecord[] = [];
  const devices = entry.members.map((m) => m.bdf as Bdf);
  try {
    restoreMembers(port, entry.members, done);
  } catch (error) {
    // Undo: the group goes back to its owner whole (every endpoint on vfio-pci), as before the release.
    try {
      reassignMembers(port, entry.members, undone);
    } catch (undoError) {
      putEntry(ctx.stateDir, { ...releasing, lastError: errorOf(undoError) });
      throw new IsogroupError(
        'E_ROLLBACK_FAILED',
        `releasing group ${entry.groupId} failed (${errorOf(error).message}) and putting it back failed too (${errorOf(undoError).message}); the journal ${journalPath(ctx.stateDir)} is kept: run \`isogroup recover\``,
        { group: entry.groupId, done, undone, journal: journalPath(ctx.stateDir), cause: errorOf(error) },
        { cause: error },
      );
    }
    putEntry(ctx.stateDir, entry);
    if (isIsogroupError(error)) {
      throw new IsogroupError(
        error.code,
        `releasing group ${entry.groupId} failed; it stays assigned to ${entry.owner}: ${error.message}`,
        { ...error.details, group: entry.groupId, done, undone },
        { cause: error },
      );
    }
    throw error;
  }
  dropEntry(ctx.stateDir, entry.groupId);
  return { groupId: entry.groupId, owner: entry.owner, devices, done, undone, notes: [] };
};

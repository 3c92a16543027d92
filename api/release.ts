// The one release pipeline (target -> permission -> plan -> unhold -> apply -> context detach -> audit,
// under one lock and one scan) and recovery after a crash. Like assign, the CLI runs these directly and
// the daemon runs them for socket clients with its writes on the action thread.

import type { StepRecord } from '../bind/apply.js';
import { planRelease, type ReleasePlan } from '../bind/plan.js';
import type { RecoverResult } from '../bind/recover.js';
import { IsogroupError } from '../errors.js';
import { detachGroup, ownerOfGroup } from '../groups/context.js';
import { type Bdf, parseTarget } from '../model/bdf.js';
import type { HostSnapshot } from '../model/device.js';
import { requireSelfOrRoot } from '../model/owner.js';
import { AuditLog, auditResult } from '../state/audit.js';
import { updateContexts } from '../state/contexts-store.js';
import { assignedEntry, entryFor, type JournalEntry, readJournal } from '../state/journal.js';
import { lockStateDir } from '../state/lock.js';
import { scanHost } from '../sysfs/scan.js';
import { groupOfTarget } from './assign.js';
import { inlineRunner, type PipelineEnv } from './runner.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export interface ReleaseRequest {
  /** GROUP or BDF (any device the journal lists for the group). */
  target: string;
  dryRun?: boolean;
  /** Detach from this owner's context: the group must be in it (E_CONTEXT otherwise). */
  owner?: string;
}

export interface ReleaseResult {
  groupId: string;
  owner: string;
  dryRun: boolean;
  plan: ReleasePlan;
  devices?: Bdf[];
  done?: StepRecord[];
  undone?: StepRecord[];
  notes?: string[];
}

/**
 * Release one journaled group, the caller holding the state lock (a release, or a context destroyed
 * with --force): unhold, restore every member, detach from its context, audit.
 */
export const releaseLocked = async (s: Session, stateDir: string, entry: JournalEntry, snap: HostSnapshot, env: PipelineEnv): Promise<ReleaseResult> => {
  const plan = planRelease(snap, entry);
  const log = new AuditLog(stateDir);
  const subject = s.subject();
  // The kernel refuses a host driver inside a held group: let go first, take it back if this fails.
  env.holder?.unhold(entry.groupId);
  let applied: Awaited<ReturnType<PipelineEnv['runner']['release']>>;
  try {
    applied = await env.runner.release(entry, { stateDir, root: s.root, simulate: s.simulate });
  } catch (error) {
    const still = entryFor(readJournal(stateDir), { groupId: entry.groupId });
    if (still?.state === 'assigned') env.holder?.hold(still);
    throw error;
  }
  env.holder?.released(entry.groupId);
  updateContexts(stateDir, (t) => {
    const holder = ownerOfGroup(t, entry.groupId);
    const r = holder === null ? null : detachGroup(t, holder, entry.groupId);
    return { table: r?.ok ? r.table : t };
  });
  auditResult(log, { action: 'release', subject, group: entry.groupId, owner: entry.owner, devices: applied.devices }, { ok: true });
  return { ...applied, dryRun: false, plan };
};

/** Run the release pipeline in a session. */
export const runRelease = async (s: Session, request: ReleaseRequest, env: PipelineEnv = { runner: inlineRunner(s.port()) }): Promise<ReleaseResult> => {
  const target = parseTarget(request.target);
  const dryRun = request.dryRun === true;
  if (!dryRun) s.requireWritable('release');
  const stateDir = s.requireState('release');
  const lock = dryRun ? null : lockStateDir(stateDir);
  try {
    const snap = scanHost(s.port(), { pciIds: null });
    const journal = readJournal(stateDir);
    // A target the journal does not know: say whether it exists at all.
    if (!entryFor(journal, target)) groupOfTarget(snap, target);
    const entry = assignedEntry(journal, target);
    if (request.owner !== undefined && entry.owner !== request.owner) {
      throw new IsogroupError('E_CONTEXT', `group ${entry.groupId} is not in ${request.owner}'s context (it is ${entry.owner}'s)`, {
        group: entry.groupId,
        owner: entry.owner,
      });
    }
    const subject = s.subject();
    try {
      requireSelfOrRoot(subject, entry.owner, `release group ${entry.groupId} of`);
    } catch (error) {
      if (!dryRun)
        auditResult(
          new AuditLog(stateDir),
          { action: 'release', subject, group: entry.groupId, owner: entry.owner },
          { ok: false, error: error as IsogroupError },
        );
      throw error;
    }
    if (dryRun) return { groupId: entry.groupId, owner: entry.owner, dryRun: true, plan: planRelease(snap, entry) };
    return await releaseLocked(s, stateDir, entry, snap, env);
  } finally {
    lock?.release();
  }
};

/** Run recovery in a session: every unfinished transaction's devices go back to their original drivers. */
export const runRecover = async (s: Session, env: PipelineEnv = { runner: inlineRunner(s.port()) }): Promise<RecoverResult & { stateDir: string }> => {
  s.requireWritable('recover');
  const stateDir = s.requireState('recover');
  // Recovery touches every group: root only.
  const subject = s.subject();
  if (subject.uid !== 0) throw new IsogroupError('E_PERMISSION', `uid ${subject.uid} may not recover: only root changes assignments`, { uid: subject.uid });
  const lock = lockStateDir(stateDir);
  try {
    return { ...(await env.runner.recover(stateDir)), stateDir };
  } finally {
    lock.release();
  }
};

export interface ReleaseOptions extends SessionOptions {
  dryRun?: boolean;
}

/** Give an assigned group's devices back to the drivers and overrides they had. */
export const releaseGroup = (target: string, options: ReleaseOptions = {}): Promise<ReleaseResult> =>
  runRelease(openSession(options), { target, dryRun: options.dryRun ?? false });

/** Finish what a crash interrupted. */
export const recover = (options: SessionOptions = {}): Promise<RecoverResult & { stateDir: string }> => runRecover(openSession(options));

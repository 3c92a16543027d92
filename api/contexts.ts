// Contexts: every owner's assigned groups form one IOMMU context (the container the daemon holds).
// Groups join and leave contexts through the assign and release pipelines; this module lists and shows
// them, and merges and destroys whole contexts, under the same lock and with the same audit trail.

import { IsogroupError } from '../errors.js';
import { type ContextView, contextOf, contextsListView, contextView, destroyContext, mergeContexts, orThrow } from '../groups/context.js';
import { requireSelfOrRoot } from '../model/owner.js';
import { AuditLog, auditResult, decideAndAudit } from '../state/audit.js';
import { saveContexts } from '../state/contexts-store.js';
import { readJournal, writeJournal } from '../state/journal.js';
import { lockStateDir } from '../state/lock.js';
import { scanHost } from '../sysfs/scan.js';
import { contextTableOf } from './read.js';
import { releaseLocked } from './release.js';
import { inlineRunner, type PipelineEnv } from './runner.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export interface ContextsListResult {
  stateDir: string;
  contexts: ReturnType<typeof contextsListView>['contexts'];
}

/** Every context and its owner (a non-root subject, or --as, sees its own only). */
export const listContexts = (options: SessionOptions | Session = {}): ContextsListResult => {
  const s = openSession(options);
  const stateDir = s.requireState('contexts');
  const { contexts } = contextsListView(contextTableOf(stateDir, scanHost(s.port(), { pciIds: null })));
  const subject = s.subject();
  const only = s.as ?? (subject.uid === 0 ? null : subject.name);
  return { stateDir, contexts: only === null ? contexts : contexts.filter((c) => c.owner === only) };
};

/** One owner's context: groups, the device namespace and the usable IOVA ranges. */
export const showContext = (owner: string, options: SessionOptions | Session = {}): ContextView => {
  const s = openSession(options);
  requireSelfOrRoot(s.subject(), owner, 'see the context of');
  const stateDir = s.requireState('contexts show');
  const snap = scanHost(s.port(), { pciIds: null });
  const caps = s.iommuCaps(snap);
  return contextView(contextTableOf(stateDir, snap, caps), owner, snap, { caps });
};

/** Move every group of `from`'s context into `into`'s (root only; the policy must allow `into` each device). */
export const mergeOwnerContexts = (from: string, into: string, options: SessionOptions | Session = {}): ContextView => {
  const s = openSession(options);
  const stateDir = s.requireState('contexts merge');
  const subject = s.subject();
  const lock = lockStateDir(stateDir);
  try {
    const log = new AuditLog(stateDir);
    if (subject.uid !== 0) {
      const error = new IsogroupError('E_PERMISSION', `only root merges contexts (asked by ${subject.name})`, { subject: subject.name });
      auditResult(log, { action: 'context-merge', subject, owner: into }, { ok: false, error });
      throw error;
    }
    const snap = scanHost(s.port(), { pciIds: null });
    const caps = s.iommuCaps(snap);
    const journal = readJournal(stateDir);
    const table = contextTableOf(stateDir, snap, caps, journal);
    const source = contextOf(table, from);
    if (!source) throw new IsogroupError('E_NOT_FOUND', `${from} has no context`, { owner: from });
    const devices = source.devices.map((d) => snap.devices.get(d.bdf)).filter((d): d is NonNullable<typeof d> => d !== undefined);
    const { decision } = decideAndAudit(log, s.policy(), s.subjectForOwner(into), { action: 'context-merge', owner: into, context: source.id, devices });
    if (!decision.allowed)
      throw new IsogroupError('E_POLICY_DENIED', `policy denies ${into} the devices of ${from}'s context: ${decision.reason}`, { from, into });
    const merged = orThrow(mergeContexts(table, from, into, { caps }));
    saveContexts(stateDir, merged.table);
    // The journal names the new owner of every moved group.
    const moved = new Set(source.groups.map((g) => g.id));
    writeJournal(stateDir, { ...journal, entries: journal.entries.map((e) => (moved.has(e.groupId) ? { ...e, owner: into } : e)) });
    auditResult(
      log,
      {
        action: 'context-merge',
        subject,
        owner: into,
        context: source.id,
        devices: devices.map((d) => d.bdf),
        reason: `${from}'s groups ${[...moved].join(' ')} moved to ${into}`,
      },
      { ok: true },
    );
    return contextView(merged.table, into, snap, { caps });
  } finally {
    lock.release();
  }
};

export interface DestroyResult {
  owner: string;
  released: string[];
}

/** Destroy an owner's context in a session; with force, its groups are released first (through the release pipeline). */
export const runDestroyContext = async (
  s: Session,
  owner: string,
  force: boolean,
  env: PipelineEnv = { runner: inlineRunner(s.port()) },
): Promise<DestroyResult> => {
  requireSelfOrRoot(s.subject(), owner, 'destroy the context of');
  const stateDir = s.requireState('contexts destroy');
  if (force) s.requireWritable('contexts destroy --force');
  const lock = lockStateDir(stateDir);
  try {
    const log = new AuditLog(stateDir);
    const subject = s.subject();
    const snap = scanHost(s.port(), { pciIds: null });
    const journal = readJournal(stateDir);
    const c = contextOf(contextTableOf(stateDir, snap, null, journal), owner);
    if (!c) throw new IsogroupError('E_NOT_FOUND', `${owner} has no context`, { owner });
    if (c.groups.length && !force) {
      const error = new IsogroupError(
        'E_CONTEXT',
        `${owner}'s context ${c.id} still holds groups ${c.groups.map((g) => g.id).join(' ')}; release them or use --force`,
        { owner, groups: c.groups.map((g) => g.id) },
      );
      auditResult(log, { action: 'context-destroy', subject, owner, context: c.id }, { ok: false, error });
      throw error;
    }
    const released: string[] = [];
    for (const g of c.groups) {
      const entry = journal.entries.find((e) => e.groupId === g.id && e.state === 'assigned');
      if (entry) await releaseLocked(s, stateDir, entry, snap, env);
      released.push(g.id);
    }
    const table = contextTableOf(stateDir, snap);
    saveContexts(stateDir, contextOf(table, owner) ? orThrow(destroyContext(table, owner, { force: true })).table : table);
    auditResult(log, { action: 'context-destroy', subject, owner, context: c.id }, { ok: true });
    return { owner, released };
  } finally {
    lock.release();
  }
};

/** Destroy an owner's context (empty, or with force after releasing its groups). */
export const destroyOwnerContext = (owner: string, options: SessionOptions & { force?: boolean } = {}): Promise<DestroyResult> =>
  runDestroyContext(openSession(options), owner, options.force ?? false);

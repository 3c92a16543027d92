import * as fs from 'node:fs';
import * as os from 'node:os';
import { IsogroupError } from '../errors.js';
import { type AssignOptions, type AssignResult, type BindOptions, type ReleaseResult, assignGroup, openContext, parseGroupArg, releaseGroup } from './bind.js';
import { AuditLog, auditResult, decideAndAudit } from '../state/audit.js';
import { loadContexts, updateContexts } from '../state/contexts-store.js';
import { readJournal, writeJournal } from '../state/journal.js';
import { lockStateDir, prepareStateDir } from '../state/lock.js';
import { PolicyStore, readSubject } from '../state/policy-store.js';
import {
  type ContextTable,
  type ContextView,
  attachGroup,
  checkOwnerName,
  contextOf,
  contextView,
  contextsListView,
  destroyContext,
  detachGroup,
  groupFacts,
  mergeContexts,
  orThrow,
  ownerOfGroup,
  syncGroupDevices,
} from '../groups/context.js';
import type { Policy, Subject } from '../groups/policy.js';
import { checkViability } from '../groups/viability.js';
import type { Bdf } from '../model/bdf.js';
import { readIommuUnitCaps } from '../sysfs/iommu-caps.js';
import type { HostSnapshot } from '../model/device.js';
import type { SysfsPort } from '../sysfs/port.js';
import { scanHost } from '../sysfs/scan.js';

// Contexts (issue 6): every owner's assigned groups form one IOMMU context (the container the daemon
// holds). Assign/release go through here so the context table, the policy and the audit trail stay in
// step with the journal.

export interface ContextOptions extends BindOptions {
  /** Who asks (the socket peer, or this process); default: this process's uid/gid. */
  subject?: Subject;
  /** The policy in force; default: policyFile, else root-only. */
  policy?: Policy;
  policyFile?: string | null;
}

const open = openContext;

const selfSubject = (): Subject => readSubject(process.getuid?.() ?? 0, process.getgid?.() ?? 0, '/');

/** The subject a name stands for (policy checks on an owner rather than a requester): /etc/passwd, else by name only. */
export const subjectForOwner = (owner: string): Subject => {
  let passwd = '';
  try {
    passwd = fs.readFileSync('/etc/passwd', 'utf8');
  } catch {
    /* no passwd: name only */
  }
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === owner && /^\d+$/.test(f[2] ?? '') && /^\d+$/.test(f[3] ?? '')) return readSubject(Number(f[2]), Number(f[3]), '/');
  }
  return { name: owner, uid: -1, gids: [] };
};

const policyOf = (options: ContextOptions): Policy => options.policy ?? PolicyStore.open(options.policyFile ?? null).policy;

const auditLog = (stateDir: string): AuditLog => {
  prepareStateDir(stateDir);
  return new AuditLog(stateDir);
};

const groupIdOf = (snap: HostSnapshot, target: string): string => {
  const arg = parseGroupArg(target);
  if ('groupId' in arg) {
    if (!snap.kernelGroups.has(arg.groupId)) throw new IsogroupError('E_NOT_FOUND', `no IOMMU group ${arg.groupId} under ${snap.root}`, { group: arg.groupId });
    return arg.groupId;
  }
  const d = snap.devices.get(arg.bdf);
  if (!d) throw new IsogroupError('E_NOT_FOUND', `no PCI device ${arg.bdf} under ${snap.root}`, { bdf: arg.bdf });
  if (d.kernelGroup === null) throw new IsogroupError('E_NO_IOMMU', `${arg.bdf} is in no IOMMU group`, { bdf: arg.bdf });
  return d.kernelGroup;
};

/** Bring the context table in line with the journal (assigned groups, their current members). */
export const syncContexts = (table: ContextTable, stateDir: string, snap: HostSnapshot, caps: ReturnType<typeof readIommuUnitCaps> | null = null): ContextTable => {
  let t = table;
  const assigned = readJournal(stateDir).entries.filter((e) => e.state === 'assigned');
  for (const e of assigned) {
    const holder = ownerOfGroup(t, e.groupId);
    if (holder === null) {
      const facts = groupFacts(snap, e.groupId, { viable: true, blockers: [] });
      const r = attachGroup(t, e.owner, facts.devices.length ? facts : { ...facts, devices: e.members.map((m) => m.bdf as Bdf) }, caps ? { caps } : {});
      if (r.ok) t = r.table;
    }
    const members = snap.kernelGroups.get(e.groupId)?.devices;
    if (members && members.length) {
      const r = syncGroupDevices(t, e.groupId, members);
      if (r.ok) t = r.table;
    }
  }
  const live = new Set(assigned.map((e) => e.groupId));
  for (const c of t.contexts) {
    for (const g of c.groups) {
      if (live.has(g.id)) continue;
      const r = detachGroup(t, c.owner, g.id);
      if (r.ok) t = r.table;
    }
  }
  return t;
};

// The IOMMU units' capability registers (address width) when the root has them; null: defaults.
const capsOf = (port: SysfsPort, snap: HostSnapshot): ReturnType<typeof readIommuUnitCaps> | null => {
  try {
    return readIommuUnitCaps(port, snap);
  } catch {
    return null;
  }
};

export interface ContextAssignResult extends AssignResult {
  context: string | null;
  indices: { index: number; bdf: string }[];
  policy: { allowed: boolean; rule: number | null; reason: string };
}

/**
 * `assign --to OWNER`: refuse a group in another owner's context, check the policy and the context's
 * compatibility before any write, assign, then attach the group to the owner's context.
 */
export const assignToOwner = (target: string, options: AssignOptions & ContextOptions = {}): ContextAssignResult => {
  const o = open(options);
  const owner = options.owner ?? (options.subject?.name ?? os.userInfo().username);
  try {
    checkOwnerName(owner);
  } catch (error) {
    throw new IsogroupError('E_USAGE', (error as Error).message, { owner });
  }
  const subject = options.subject ?? selfSubject();
  const snap = scanHost(o.port, { pciIds: null });
  const groupId = groupIdOf(snap, target);
  const log = auditLog(o.stateDir);
  const caps = capsOf(o.port, snap);
  const table = syncContexts(loadContexts(o.stateDir), o.stateDir, snap, caps);
  const deny = (error: IsogroupError): never => {
    auditResult(log, { action: 'assign', subject, group: groupId, owner, devices: snap.kernelGroups.get(groupId)?.devices ?? [] }, { ok: false, error });
    throw error;
  };
  if (subject.uid !== 0 && subject.name !== owner) {
    deny(new IsogroupError('E_PERMISSION', `${subject.name} (uid ${subject.uid}) may claim groups only for itself, not for ${owner}`, { subject: subject.name, owner }));
  }
  const holder = ownerOfGroup(table, groupId);
  if (holder !== null && holder !== owner) {
    deny(new IsogroupError('E_CONTEXT', `group ${groupId} belongs to ${holder}'s context ${contextOf(table, holder)?.id ?? ''}`.trim(), { group: groupId, owner: holder }));
  }
  const devices = (snap.kernelGroups.get(groupId)?.devices ?? []).map((b) => snap.devices.get(b)!).filter(Boolean);
  const { decision } = decideAndAudit(log, policyOf(options), subject, { action: 'assign', group: groupId, owner, devices });
  if (!decision.allowed) throw new IsogroupError('E_POLICY_DENIED', `policy denies ${subject.name} group ${groupId}: ${decision.reason}`, { group: groupId, subject: subject.name, rule: decision.rule });
  // Compatibility and invariants on the group as it will be once on vfio-pci. A group already in
  // this owner's context is left to the bind engine, which says E_ALREADY_ASSIGNED.
  if (holder !== owner) {
    const pre = attachGroup(table, owner, groupFacts(snap, groupId, { viable: true, blockers: [] }), caps ? { caps } : {});
    if (!pre.ok) deny(pre.error);
  }
  const result = assignGroup(target, { ...options, port: o.port, stateDir: o.stateDir, owner });
  if (result.dryRun) return { ...result, context: contextOf(table, owner)?.id ?? null, indices: [], policy: decision };
  const after = scanHost(o.port, { pciIds: null });
  const viability = checkViability((after.kernelGroups.get(groupId)?.devices ?? []).map((b) => after.devices.get(b)!).filter(Boolean));
  const attached = updateContexts(o.stateDir, (t) => {
    const synced = syncContexts(t, o.stateDir, after, caps);
    const already = ownerOfGroup(synced, groupId) === owner;
    if (already) return { table: synced, indices: contextOf(synced, owner)!.devices.filter((d) => d.group === groupId) };
    const r = orThrow(attachGroup(synced, owner, groupFacts(after, groupId, { viable: viability.viable, blockers: viability.blockers.map((b) => b.reason) }), caps ? { caps } : {}));
    return { table: r.table, indices: r.indices };
  });
  auditResult(log, { action: 'context-attach', subject, group: groupId, owner, devices: result.devices ?? [] }, { ok: true });
  return {
    ...result,
    context: contextOf(attached.table, owner)?.id ?? null,
    indices: attached.indices.map((d) => ({ index: d.index, bdf: d.bdf })),
    policy: decision,
  };
};

/** Release a group and detach it from its owner's context (a non-root subject only its own). */
export const releaseFromOwner = (target: string, options: ContextOptions & { dryRun?: boolean } = {}): ReleaseResult => {
  const o = open(options);
  const subject = options.subject ?? selfSubject();
  const snap = scanHost(o.port, { pciIds: null });
  const groupId = groupIdOf(snap, target);
  const entry = readJournal(o.stateDir).entries.find((e) => e.groupId === groupId);
  const log = auditLog(o.stateDir);
  if (entry && subject.uid !== 0 && subject.name !== entry.owner) {
    const error = new IsogroupError('E_PERMISSION', `${subject.name} may not release group ${groupId}, which belongs to ${entry.owner}`, { group: groupId, owner: entry.owner });
    auditResult(log, { action: 'release', subject, group: groupId, owner: entry.owner }, { ok: false, error });
    throw error;
  }
  const result = releaseGroup(target, { ...options, port: o.port, stateDir: o.stateDir });
  if (!result.dryRun) {
    updateContexts(o.stateDir, (t) => {
      const holder = ownerOfGroup(t, groupId);
      return { table: holder ? orThrow(detachGroup(t, holder, groupId)).table : t };
    });
    auditResult(log, { action: 'release', subject, group: groupId, owner: result.owner, devices: result.devices ?? [] }, { ok: true });
  }
  return result;
};

/** Move every group of `from`'s context into `into`'s (root only; the policy must allow `into` each device). */
export const mergeOwnerContexts = (from: string, into: string, options: ContextOptions = {}): ContextView => {
  const o = open(options);
  const subject = options.subject ?? selfSubject();
  const log = auditLog(o.stateDir);
  if (subject.uid !== 0) {
    const error = new IsogroupError('E_PERMISSION', `only root merges contexts (asked by ${subject.name})`, { subject: subject.name });
    auditResult(log, { action: 'context-merge', subject, owner: into }, { ok: false, error });
    throw error;
  }
  const snap = scanHost(o.port, { pciIds: null });
  const caps = capsOf(o.port, snap);
  const lock = lockStateDir(o.stateDir);
  try {
    const table = syncContexts(loadContexts(o.stateDir), o.stateDir, snap, caps);
    const source = contextOf(table, from);
    if (!source) throw new IsogroupError('E_NOT_FOUND', `${from} has no context`, { owner: from });
    const devices = source.devices.map((d) => snap.devices.get(d.bdf)).filter((d): d is NonNullable<typeof d> => d !== undefined);
    const { decision } = decideAndAudit(log, policyOf(options), subjectForOwner(into), { action: 'context-merge', owner: into, context: source.id, devices });
    if (!decision.allowed) throw new IsogroupError('E_POLICY_DENIED', `policy denies ${into} the devices of ${from}'s context: ${decision.reason}`, { from, into });
    const merged = updateContexts(o.stateDir, (t) => orThrow(mergeContexts(syncContexts(t, o.stateDir, snap, caps), from, into, caps ? { caps } : {})));
    // The journal names the new owner of every moved group.
    const moved = new Set(source.groups.map((g) => g.id));
    const journal = readJournal(o.stateDir);
    writeJournal(o.stateDir, { ...journal, entries: journal.entries.map((e) => (moved.has(e.groupId) ? { ...e, owner: into } : e)) });
    auditResult(log, { action: 'context-merge', subject, owner: into, context: source.id, devices: devices.map((d) => d.bdf), reason: `${from}'s groups ${[...moved].join(' ')} moved to ${into}` }, { ok: true });
    return contextView(merged.table, into, snap, caps ? { caps } : {});
  } finally {
    lock.release();
  }
};

/** Destroy an owner's context; with force, release its groups first (without, it must be empty). */
export const destroyOwnerContext = (owner: string, options: ContextOptions & { force?: boolean } = {}): { owner: string; released: string[] } => {
  const o = open(options);
  const subject = options.subject ?? selfSubject();
  const log = auditLog(o.stateDir);
  const snap = scanHost(o.port, { pciIds: null });
  const table = syncContexts(loadContexts(o.stateDir), o.stateDir, snap);
  const c = contextOf(table, owner);
  if (!c) throw new IsogroupError('E_NOT_FOUND', `${owner} has no context`, { owner });
  if (c.groups.length && !options.force) {
    const error = new IsogroupError('E_CONTEXT', `${owner}'s context ${c.id} still holds groups ${c.groups.map((g) => g.id).join(' ')}; release them or use --force`, { owner, groups: c.groups.map((g) => g.id) });
    auditResult(log, { action: 'context-destroy', subject, owner, context: c.id }, { ok: false, error });
    throw error;
  }
  const released: string[] = [];
  for (const g of c.groups) {
    releaseFromOwner(g.id, { ...options, port: o.port, stateDir: o.stateDir, subject });
    released.push(g.id);
  }
  updateContexts(o.stateDir, (t) => orThrow(destroyContext(t, owner, { force: true })));
  auditResult(log, { action: 'context-destroy', subject, owner, context: c.id }, { ok: true });
  return { owner, released };
};

export interface ContextsListResult {
  stateDir: string;
  contexts: ReturnType<typeof contextsListView>['contexts'];
}

export const listContexts = (options: ContextOptions = {}): ContextsListResult => {
  const o = open(options);
  const snap = scanHost(o.port, { pciIds: null });
  return { stateDir: o.stateDir, ...contextsListView(syncContexts(loadContexts(o.stateDir), o.stateDir, snap)) };
};

/** `contexts show OWNER`: groups, the device namespace and the usable IOVA ranges. */
export const showContext = (owner: string, options: ContextOptions = {}): ContextView => {
  const o = open(options);
  const snap = scanHost(o.port, { pciIds: null });
  const caps = capsOf(o.port, snap);
  const table = syncContexts(loadContexts(o.stateDir), o.stateDir, snap, caps);
  return contextView(table, owner, snap, caps ? { caps } : {});
};

/** The table as stored, synced with the journal (the daemon's view of who holds what). */
export const contextTable = (options: ContextOptions = {}): ContextTable => {
  const o = open(options);
  const snap = scanHost(o.port, { pciIds: null });
  return syncContexts(loadContexts(o.stateDir), o.stateDir, snap);
};


/** An owner's view: the groups and devices of its context (what `--as OWNER` and a non-root peer see). */
export const ownerScope = (owner: string, options: ContextOptions = {}): { owner: string; groups: Set<string>; devices: Set<string> } => {
  const c = contextOf(contextTable(options), owner);
  return { owner, groups: new Set(c?.groups.map((g) => g.id) ?? []), devices: new Set(c?.devices.map((d) => d.bdf) ?? []) };
};

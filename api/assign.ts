// The one assign pipeline: target -> permission -> context -> policy -> plan -> apply -> hold -> context
// attach -> audit, under one lock and one scan. The CLI runs it directly; the daemon runs the very same
// function for a socket client, with its writes on the action thread and its hold on the group.

import type { StepRecord } from '../bind/apply.js';
import { ensureDriver } from '../bind/modules.js';
import { type AssignPlan, planAssign } from '../bind/plan.js';
import { IsogroupError } from '../errors.js';
import { attachGroup, type ContextTable, contextOf, emptyContextTable, groupFacts, ownerOfGroup, syncContextTable } from '../groups/context.js';
import type { GroupDecision } from '../groups/policy.js';
import type { GroupReset } from '../groups/reset.js';
import { type Bdf, type GroupTarget, parseTarget } from '../model/bdf.js';
import type { HostSnapshot, PciDevice } from '../model/device.js';
import { VFIO_DRIVER } from '../model/drivers.js';
import { requireSelfOrRoot } from '../model/owner.js';
import { AuditLog, auditResult, decideAndAudit } from '../state/audit.js';
import { saveContexts } from '../state/contexts-store.js';
import { checkNotAssigned, emptyJournal, readJournal } from '../state/journal.js';
import { lockStateDir } from '../state/lock.js';
import { findHostUse, type HostUse } from '../sysfs/host-use.js';
import { scanHost } from '../sysfs/scan.js';
import { kernelGroupOf, resetsForHost } from './groups.js';
import { assignedGroupsOf, contextTableOf } from './read.js';
import { inlineRunner, type PipelineEnv } from './runner.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export interface AssignRequest {
  /** GROUP or BDF (any device of the group; the short BB:DD.F form too). */
  target: string;
  /** Take devices the host uses (never the root filesystem). */
  force?: boolean;
  /** Plan and decide, write nothing. */
  dryRun?: boolean;
}

export interface AssignResult {
  groupId: string;
  owner: string;
  dryRun: boolean;
  simulate: boolean;
  stateDir: string | null;
  plan: AssignPlan;
  hostUse: HostUse[];
  /** The policy's decision for the requester. */
  policy: GroupDecision;
  /** What resetting the group's devices takes: whether VFIO can reset them without resetting another group's. */
  reset: GroupReset;
  /** What the owner will run into (a device that cannot be reset, a reset that reaches other groups); shown before anything is written. */
  warnings: string[];
  /** The owner's context and the device numbers the group got there. */
  context: string | null;
  indices: { index: number; bdf: string }[];
  devices?: Bdf[];
  done?: StepRecord[];
  undone?: StepRecord[];
  notes?: string[];
  /** Whether the daemon holds the group now (set when the daemon ran the pipeline). */
  held?: boolean;
}

/** The group a target names in a snapshot: E_NOT_FOUND, or E_NO_IOMMU for a device in no group. */
export const groupOfTarget = (snap: HostSnapshot, target: GroupTarget): string => {
  if ('groupId' in target) {
    if (!snap.kernelGroups.get(target.groupId)?.devices.length) {
      throw new IsogroupError('E_NOT_FOUND', `no IOMMU group ${target.groupId} under ${snap.root}${snap.iommuEnabled ? '' : ' (no IOMMU is active there)'}`, {
        group: target.groupId,
      });
    }
    return target.groupId;
  }
  const d = snap.devices.get(target.bdf);
  if (!d) throw new IsogroupError('E_NOT_FOUND', `no PCI device ${target.bdf} under ${snap.root}`, { bdf: target.bdf });
  if (d.kernelGroup === null)
    throw new IsogroupError('E_NO_IOMMU', `${target.bdf} is in no IOMMU group (no IOMMU translation): it cannot be assigned safely`, { bdf: target.bdf });
  return d.kernelGroup;
};

const membersOf = (snap: HostSnapshot, groupId: string): PciDevice[] =>
  (snap.kernelGroups.get(groupId)?.devices ?? []).map((b) => snap.devices.get(b)).filter((d): d is PciDevice => d !== undefined);

/** Run the assign pipeline in a session. */
export const runAssign = async (s: Session, request: AssignRequest, env: PipelineEnv = { runner: inlineRunner(s.port()) }): Promise<AssignResult> => {
  const target = parseTarget(request.target);
  const owner = s.owner();
  const dryRun = request.dryRun === true;
  if (!dryRun) s.requireWritable('assign');
  // A dry run decides without state when the root has none; a real one needs it, and its lock.
  const stateDir = dryRun ? s.stateDir : s.requireState('assign');
  const lock = dryRun || stateDir === null ? null : lockStateDir(stateDir);
  try {
    const port = s.port();
    const snap = scanHost(port, { pciIds: null });
    const groupId = groupOfTarget(snap, target);
    const devices = membersOf(snap, groupId);
    const members = devices.map((d) => d.bdf);
    const journal = stateDir === null ? emptyJournal() : readJournal(stateDir);
    const caps = s.iommuCaps(snap);
    const table: ContextTable = stateDir === null ? emptyContextTable() : contextTableOf(stateDir, snap, caps, journal);
    // Only decisions that are acted on are audited: a dry run writes nothing at all.
    const log = dryRun || stateDir === null ? null : new AuditLog(stateDir);
    const subject = s.subject();
    const refuse = (error: IsogroupError): never => {
      if (log) auditResult(log, { action: 'assign', subject, group: groupId, owner, devices: members }, { ok: false, error });
      throw error;
    };
    try {
      requireSelfOrRoot(subject, owner, 'claim groups for');
    } catch (error) {
      refuse(error as IsogroupError);
    }
    const holder = ownerOfGroup(table, groupId);
    if (holder !== null && holder !== owner) {
      refuse(
        new IsogroupError('E_CONTEXT', `group ${groupId} belongs to ${holder}'s context ${contextOf(table, holder)?.id ?? ''}`.trim(), {
          group: groupId,
          owner: holder,
        }),
      );
    }
    const { decision } = decideAndAudit(log, s.policy(), subject, { action: 'assign', group: groupId, owner, devices });
    if (!decision.allowed)
      throw new IsogroupError('E_POLICY_DENIED', `policy denies ${subject.name} group ${groupId}: ${decision.reason}`, {
        group: groupId,
        subject: subject.name,
        rule: decision.rule,
      });
    // The group as it will be once on vfio-pci: viable by construction (every endpoint verified there,
    // every bridge on a DMA-safe driver or none). Checked against the owner's context before any write;
    // a group already in this owner's context is refused below as E_ALREADY_ASSIGNED.
    const facts = groupFacts(snap, groupId, { viable: true, blockers: [] });
    if (holder !== owner) {
      const pre = attachGroup(table, owner, facts, { caps });
      if (!pre.ok) refuse(pre.error);
    }
    checkNotAssigned(journal, groupId, members);
    const hostUse = findHostUse(port, snap, members);
    const plan = planAssign(snap, groupId, { owner, hostUse, force: request.force ?? false });
    const reset = resetsForHost(snap, s).group(members, kernelGroupOf(snap));
    const warnings = reset.warnings.map((w) => `group ${groupId} ${reset.canResetAlone ? 'resets with a caveat' : 'cannot be reset alone'}: ${w}`);
    const base = { groupId, owner, simulate: s.simulate, stateDir, plan, hostUse, policy: decision, reset, warnings };
    if (dryRun) return { ...base, dryRun: true, context: contextOf(table, owner)?.id ?? null, indices: [] };
    const state = stateDir!;
    ensureDriver(port, VFIO_DRIVER, 'vfio-pci', s.moduleLoader());
    const applied = await env.runner.assign(plan, { stateDir: state, root: s.root, simulate: s.simulate });
    // Held from here on (by the daemon), so the kernel refuses host drivers inside the group.
    env.holder?.hold(applied.entry);
    const attached = attachGroup(table, owner, facts, { caps });
    const after = attached.ok ? attached.table : syncContextTable(table, assignedGroupsOf(readJournal(state)), snap, { caps });
    saveContexts(state, after);
    const context = contextOf(after, owner);
    auditResult(log!, { action: 'context-attach', subject, group: groupId, owner, devices: applied.devices }, { ok: true });
    const { entry: _entry, ...transaction } = applied;
    return {
      ...base,
      ...transaction,
      dryRun: false,
      context: context?.id ?? null,
      indices: (context?.devices ?? []).filter((d) => d.group === groupId).map((d) => ({ index: d.index, bdf: d.bdf })),
    };
  } finally {
    lock?.release();
  }
};

export interface AssignOptions extends SessionOptions {
  force?: boolean;
  dryRun?: boolean;
}

/** Hand a whole group (by number, or by any of its devices) to vfio-pci for an owner (default: the invoking user). */
export const assignGroup = (target: string, options: AssignOptions = {}): Promise<AssignResult> =>
  runAssign(openSession(options), { target, force: options.force ?? false, dryRun: options.dryRun ?? false });

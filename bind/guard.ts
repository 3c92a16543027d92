import { deviceBlocker, onVfio } from '../groups/viability.js';
import { type Bdf, compareBdf } from '../model/bdf.js';
import type { GuardDeviceState, HostSnapshot } from '../model/device.js';

// The hotplug guard's decision, pure: given a fresh snapshot and the groups that are handed out,
// say what must be done so that no host driver can DMA from inside an assigned group.
// Events are only hints; this runs on every rescan, so it must be idempotent.

export interface GuardAssignment {
  groupId: string;
  owner: string;
  /** Members when the group was assigned (the journal's list). */
  devices: Bdf[];
}

export type GuardAction =
  /** A device inside an assigned group with no driver: route it to vfio-pci (override + probe + verify). */
  | { kind: 'claim'; bdf: Bdf; groupId: string; owner: string; reason: string }
  /** A host driver is bound inside an assigned group: unbind it, then claim (a violation). */
  | { kind: 'repair'; bdf: Bdf; groupId: string; owner: string; driver: string; reason: string }
  /** A bridge inside an assigned group on a driver that breaks viability (shpchp): unbind only. */
  | { kind: 'unbind-bridge'; bdf: Bdf; groupId: string; owner: string; driver: string; reason: string }
  /** On vfio-pci already, but the override would let a reprobe pick a host driver. */
  | { kind: 'set-override'; bdf: Bdf; groupId: string; owner: string; reason: string }
  /** An assigned PF would let new VFs bind host drivers. */
  | { kind: 'sriov-autoprobe-off'; bdf: Bdf; groupId: string; owner: string; reason: string };

export interface GuardEvent {
  type: 'violation' | 'membership-changed' | 'group-vanished';
  groupId: string;
  owner: string;
  bdf?: Bdf;
  driver?: string;
  added?: Bdf[];
  removed?: Bdf[];
  message: string;
}

export interface GuardDecision {
  actions: GuardAction[];
  events: GuardEvent[];
}

/** What one device inside an assigned group needs (used per member, and alone on the fast path). */
export const decideDevice = (d: GuardDeviceState, a: Pick<GuardAssignment, 'groupId' | 'owner'>, wasMember: boolean): GuardDecision => {
  const actions: GuardAction[] = [];
  const events: GuardEvent[] = [];
  const bdf = d.bdf;
  const base = { bdf, groupId: a.groupId, owner: a.owner };
  const blocker = deviceBlocker(d);
  if (d.isBridge) {
    if (blocker !== null && d.driver !== null) {
      actions.push({ ...base, kind: 'unbind-bridge', driver: d.driver, reason: `bridge ${bdf} on ${d.driver} makes group ${a.groupId} non-viable` });
      events.push({
        type: 'violation',
        ...base,
        driver: d.driver,
        message: `bridge ${bdf} bound to ${d.driver} inside assigned group ${a.groupId} (${a.owner})`,
      });
    }
    return { actions, events };
  }
  if (onVfio(d)) {
    if (d.driverOverride === null)
      actions.push({ ...base, kind: 'set-override', reason: `${bdf} is on ${d.driver} without driver_override; a reprobe could pick a host driver` });
  } else if (d.driver === null) {
    actions.push({ ...base, kind: 'claim', reason: wasMember ? `${bdf} lost its driver` : `${bdf} appeared in group ${a.groupId} without a driver` });
  } else if (blocker === null) {
    // A driver that manages DMA itself (pci-stub) keeps the group safe; the owner still gets vfio-pci.
    actions.push({ ...base, kind: 'repair', driver: d.driver, reason: `${bdf} on ${d.driver}, which manages DMA itself; moving it to vfio-pci` });
  } else {
    actions.push({ ...base, kind: 'repair', driver: d.driver, reason: `host driver ${d.driver} bound to ${bdf} inside assigned group ${a.groupId}` });
    events.push({
      type: 'violation',
      ...base,
      driver: d.driver,
      message: `host driver ${d.driver} bound to ${bdf} inside group ${a.groupId} assigned to ${a.owner}`,
    });
  }
  if (d.sriov && d.sriov.totalVfs > 0 && d.sriov.driversAutoprobe !== false) {
    actions.push({ ...base, kind: 'sriov-autoprobe-off', reason: `PF ${bdf} is assigned; new VFs must not autoprobe host drivers` });
  }
  return { actions, events };
};

/** Decide what the guard must do for each assigned group in this snapshot. */
export const decideGuard = (snap: HostSnapshot, assignments: GuardAssignment[]): GuardDecision => {
  const actions: GuardAction[] = [];
  const events: GuardEvent[] = [];
  for (const a of assignments) {
    const group = snap.kernelGroups.get(a.groupId);
    const members = group ? group.devices : a.devices.filter((b) => snap.devices.get(b)?.kernelGroup === a.groupId);
    if (members.length === 0) {
      events.push({ type: 'group-vanished', groupId: a.groupId, owner: a.owner, message: `group ${a.groupId} (${a.owner}) has no devices any more` });
      continue;
    }
    const before = new Set(a.devices);
    const now = new Set(members);
    const added = members.filter((b) => !before.has(b)).sort(compareBdf);
    const removed = a.devices.filter((b) => !now.has(b)).sort(compareBdf);
    if (added.length || removed.length) {
      events.push({
        type: 'membership-changed',
        groupId: a.groupId,
        owner: a.owner,
        added,
        removed,
        message: `group ${a.groupId} (${a.owner}) changed: ${added.length ? `+${added.join(' +')}` : ''}${added.length && removed.length ? ' ' : ''}${removed.length ? `-${removed.join(' -')}` : ''}`,
      });
    }
    for (const bdf of members) {
      const d = snap.devices.get(bdf);
      if (!d) continue;
      const one = decideDevice(d, a, before.has(bdf));
      actions.push(...one.actions);
      events.push(...one.events);
    }
  }
  return { actions, events };
};

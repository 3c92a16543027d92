import { IsogroupError } from '../errors.js';
import { deviceBlocker } from '../groups/viability.js';
import { type Bdf, compareBdf } from '../model/bdf.js';
import type { HostSnapshot, PciDevice } from '../model/device.js';
import { VFIO_DRIVER } from '../model/drivers.js';
import type { JournalEntry, JournalMember } from '../state/journal.js';
import type { HostUse } from '../sysfs/host-use.js';
import { PCI_DRIVERS_PROBE, PCI_RESCAN, pciDeviceFile, pciDriverFile } from '../sysfs/paths.js';

// Pure planning: data in, ordered steps out. Binding is by address only (driver_override), never
// new_id, which would capture every identical card on the host.

export type StepKind = 'override' | 'unbind' | 'probe' | 'bind' | 'verify';

export interface PlanStep {
  kind: StepKind;
  bdf: Bdf;
  /** Root-relative sysfs file written (none for verify). */
  file: string | null;
  /** Value written. */
  value: string | null;
  /** verify: the driver the device must end on (null: no driver). */
  expect?: string | null;
  /** verify: when the probe left the device driverless, bind this driver explicitly and check again. */
  bindIfMissing?: string | null;
  why: string;
}

export interface PlanMember extends JournalMember {
  bdf: Bdf;
  isBridge: boolean;
}

export interface AssignPlan {
  kind: 'assign';
  groupId: string;
  owner: string;
  members: PlanMember[];
  steps: PlanStep[];
  notes: string[];
  /** Host uses overridden with --force. */
  forced: HostUse[];
}

export interface ReleasePlan {
  kind: 'release';
  groupId: string;
  owner: string;
  members: PlanMember[];
  steps: PlanStep[];
  notes: string[];
}

export const stepOverride = (bdf: Bdf, value: string | null, why: string): PlanStep => ({
  kind: 'override',
  bdf,
  file: pciDeviceFile(bdf, 'driver_override'),
  value: value ?? '\n',
  why,
});
export const stepUnbind = (bdf: Bdf, driver: string, why: string): PlanStep => ({
  kind: 'unbind',
  bdf,
  file: pciDriverFile(driver, 'unbind'),
  value: bdf,
  why,
});
export const stepProbe = (bdf: Bdf, why: string): PlanStep => ({ kind: 'probe', bdf, file: PCI_DRIVERS_PROBE, value: bdf, why });
export const stepBind = (bdf: Bdf, driver: string, why: string): PlanStep => ({ kind: 'bind', bdf, file: pciDriverFile(driver, 'bind'), value: bdf, why });
export const stepVerify = (bdf: Bdf, expect: string | null, why: string, bindIfMissing: string | null = null): PlanStep => ({
  kind: 'verify',
  bdf,
  file: null,
  value: null,
  expect,
  bindIfMissing,
  why,
});

/** Steps that take one device from the host to vfio-pci. */
export const assignStepsFor = (m: { bdf: Bdf; role: JournalMember['role']; driver: string | null; override: string | null }): PlanStep[] => {
  const { bdf } = m;
  if (m.role === 'bridge-kept') return [];
  if (m.role === 'bridge-unbind') {
    // "none" matches no driver (the ABI's opt-out), so no reprobe can bring the bridge driver back.
    const steps = [stepOverride(bdf, 'none', `keep ${m.driver ?? 'host drivers'} from binding the bridge again`)];
    if (m.driver !== null) steps.push(stepUnbind(bdf, m.driver, `bridge driver ${m.driver} is not DMA-managed and makes the group non-viable`));
    steps.push(stepVerify(bdf, null, 'the bridge must be driverless'));
    return steps;
  }
  const steps: PlanStep[] = [];
  if (m.override !== VFIO_DRIVER) steps.push(stepOverride(bdf, VFIO_DRIVER, 'only vfio-pci may bind this device (by address)'));
  if (m.driver === VFIO_DRIVER) {
    steps.push(stepVerify(bdf, VFIO_DRIVER, 'already on vfio-pci'));
    return steps;
  }
  if (m.driver !== null) steps.push(stepUnbind(bdf, m.driver, `take ${bdf} from host driver ${m.driver}`));
  steps.push(stepProbe(bdf, 'probe: driver_override selects vfio-pci'));
  steps.push(stepVerify(bdf, VFIO_DRIVER, 'drivers_probe returns success even when the probe failed: read the driver link back', VFIO_DRIVER));
  return steps;
};

/** Steps that bring one device back to its journaled driver and override, from its current state. */
export const restoreStepsFor = (m: JournalMember, current: { driver: string | null; override: string | null }): PlanStep[] => {
  const bdf = m.bdf as Bdf;
  if (m.role === 'bridge-kept') return [];
  const steps: PlanStep[] = [];
  const driverOk = current.driver === m.originalDriver;
  if (current.override !== m.originalOverride)
    steps.push(stepOverride(bdf, m.originalOverride, m.originalOverride === null ? 'clear driver_override' : `restore driver_override ${m.originalOverride}`));
  if (driverOk) return steps;
  if (current.driver !== null) steps.push(stepUnbind(bdf, current.driver, `take ${bdf} from ${current.driver}`));
  if (m.originalDriver !== null) {
    steps.push(stepProbe(bdf, `reprobe: ${m.originalDriver} binds again`));
    steps.push(stepVerify(bdf, m.originalDriver, `${bdf} must be back on ${m.originalDriver}`, m.originalDriver));
  } else if (m.hotAdded) {
    // It arrived while the group was held (the kernel refused its host driver): let the host probe it now.
    steps.push(stepProbe(bdf, `${bdf} was hot-added while assigned: its host driver may bind now`));
  } else {
    steps.push(stepVerify(bdf, null, `${bdf} had no driver`));
  }
  return steps;
};

export interface PlanAssignOptions {
  owner: string;
  /** Host uses found on the group's devices (sysfs/host-use.ts). */
  hostUse?: HostUse[];
  force?: boolean;
}

const useText = (u: HostUse): string => `${u.bdf}: ${u.what} (would lose ${u.loss})`;

/** Ordered steps that hand a whole group to vfio-pci, or a typed refusal. */
export const planAssign = (snap: HostSnapshot, groupId: string, options: PlanAssignOptions): AssignPlan => {
  const group = snap.kernelGroups.get(groupId);
  if (!group || group.devices.length === 0) {
    throw new IsogroupError('E_NOT_FOUND', `no IOMMU group ${groupId} under ${snap.root}${snap.iommuEnabled ? '' : ' (no IOMMU is active there)'}`, {
      group: groupId,
    });
  }
  const uses = options.hostUse ?? [];
  const unforceable = uses.filter((u) => !u.forceable);
  if (unforceable.length) {
    throw new IsogroupError('E_HOST_IN_USE', `refusing group ${groupId}, even with --force: ${unforceable.map(useText).join('; ')}`, {
      group: groupId,
      uses: unforceable,
    });
  }
  if (uses.length && !options.force) {
    throw new IsogroupError('E_HOST_IN_USE', `refusing group ${groupId}: the host uses it: ${uses.map(useText).join('; ')}. Use --force to take it anyway`, {
      group: groupId,
      uses,
    });
  }
  const members: PlanMember[] = [];
  const notes: string[] = [];
  const devices = group.devices.map((b) => snap.devices.get(b)).filter((d): d is PciDevice => d !== undefined);
  // Endpoints first (by address), bridges after: unbinding a hotplug bridge is the last thing done.
  const ordered = [
    ...devices.filter((d) => !d.isBridge).sort((a, b) => compareBdf(a.bdf, b.bdf)),
    ...devices.filter((d) => d.isBridge).sort((a, b) => compareBdf(a.bdf, b.bdf)),
  ];
  const steps: PlanStep[] = [];
  for (const d of ordered) {
    const role: JournalMember['role'] = d.isBridge ? (deviceBlocker(d) === null ? 'bridge-kept' : 'bridge-unbind') : 'endpoint';
    members.push({ bdf: d.bdf, role, isBridge: d.isBridge, originalDriver: d.driver, originalOverride: d.driverOverride });
    if (role === 'bridge-kept') notes.push(`bridge ${d.bdf} stays on ${d.driver ?? 'no driver'} (DMA-managed, does not break viability)`);
    if (role === 'bridge-unbind') {
      notes.push(
        `bridge ${d.bdf} is bound to ${d.driver}, which makes the group non-viable: it is unbound; hotplug behind it then needs \`echo 1 > /${PCI_RESCAN}\` until release`,
      );
    }
    steps.push(...assignStepsFor({ bdf: d.bdf, role, driver: d.driver, override: d.driverOverride }));
  }
  if (!members.some((m) => m.role === 'endpoint')) notes.push(`group ${groupId} has no endpoint: nothing for a user to open`);
  for (const u of uses) notes.push(`forced: ${useText(u)}`);
  return { kind: 'assign', groupId, owner: options.owner, members, steps, notes, forced: uses };
};

/** Ordered steps that give a group's devices back to the drivers the journal recorded. */
export const planRelease = (snap: HostSnapshot, entry: JournalEntry): ReleasePlan => {
  const members: PlanMember[] = entry.members.map((m) => ({ ...m, bdf: m.bdf as Bdf, isBridge: m.role !== 'endpoint' }));
  const steps: PlanStep[] = [];
  const notes: string[] = [];
  // Reverse of assignment order: bridges first, so a hotplug bridge driver is back before endpoints return.
  for (const m of [...members].reverse()) {
    const d = snap.devices.get(m.bdf);
    if (!d) {
      notes.push(`${m.bdf} is gone; nothing to restore for it`);
      continue;
    }
    steps.push(...restoreStepsFor(m, { driver: d.driver, override: d.driverOverride }));
  }
  return { kind: 'release', groupId: entry.groupId, owner: entry.owner, members, steps, notes };
};

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IsogroupError } from '../errors.js';
import { type ApplyContext, type TransactionResult, applyPlan, applyRelease } from '../bind/apply.js';
import { type JournalEntry, assignedGroups as journalAssignedGroups, readJournal } from '../state/journal.js';
import { lockStateDir } from '../state/lock.js';
import { type AssignPlan, type ReleasePlan, VFIO_DRIVER, planAssign, planRelease } from '../bind/plan.js';
import { type RecoverResult, recoverJournal } from '../bind/recover.js';
import { type StatusResult, journalStatus } from '../state/status.js';
import { type Bdf, isBdf, parseBdf } from '../model/bdf.js';
import { type HostUse, findHostUse } from '../sysfs/host-use.js';
import type { HostSnapshot } from '../model/device.js';
import { type ModuleLoader, ensureDriver, modprobeLoader } from '../os/modules.js';
import { NodeSysfsPort, type SysfsPort } from '../sysfs/port.js';
import { resolveRoot } from '../capture/unpack.js';
import { scanHost } from '../sysfs/scan.js';
import { SIM_DIR, isSimulatedPort, openSimulatedRoot } from '../sim/index.js';

// Assign and release whole IOMMU groups as journaled transactions (issue 4), on the live host or on
// the fixture kernel (--simulate).

export { planAssign, planRelease, assignStepsFor, restoreStepsFor, type AssignPlan, type ReleasePlan, type PlanStep, type PlanMember } from '../bind/plan.js';
export { applyPlan, applyRelease, restoreMembers, runStep, currentDriver, currentOverride, type TransactionResult, type StepRecord, type ApplyContext } from '../bind/apply.js';
export { ensureDriver, modprobeLoader, type ModuleLoader } from '../os/modules.js';
export { readJournal, writeJournal, journalPath, type Journal, type JournalEntry, type JournalMember } from '../state/journal.js';
export { lockStateDir, withStateLock, prepareStateDir } from '../state/lock.js';
export { findHostUse, type HostUse, type HostUseKind } from '../sysfs/host-use.js';
export {
  openSimulatedRoot,
  unpackForSimulation,
  SimKernel,
  SimulatedSysfsPort,
  SimulatedVfioBackend,
  isSimulatedPort,
  setPeerFinder,
  type SimulatedRoot,
  type AddDeviceOptions,
  type AddDeviceResult,
} from '../sim/index.js';
export type { StatusResult, GroupStatus } from '../state/status.js';
export type { RecoverResult, RecoveredGroup } from '../bind/recover.js';

export const DEFAULT_STATE_DIR = '/var/lib/isogroup';

export interface BindOptions {
  /** Directory that looks like "/" (default "/"). */
  root?: string;
  /** Run on the fixture kernel over root. */
  simulate?: boolean;
  /** Journal + lock directory; default /var/lib/isogroup, or ROOT/.isogroup-sim/state under --simulate. */
  stateDir?: string;
  /** A port to write through instead of opening root (the daemon passes its own). */
  port?: SysfsPort;
  /** How to load vfio-pci when it is missing (default: modprobe on the live host, the fixture kernel's own when simulated). */
  moduleLoader?: ModuleLoader | null;
  now?: () => Date;
  /** After a group is assigned and journaled. */
  onAssigned?: (entry: JournalEntry) => void;
  /** After a group is released and dropped from the journal. */
  onReleased?: (entry: JournalEntry) => void;
}

export interface AssignOptions extends BindOptions {
  /** Who gets the group (default: the invoking user). */
  owner?: string;
  force?: boolean;
  dryRun?: boolean;
}

export interface BindContext {
  port: SysfsPort;
  root: string;
  simulate: boolean;
  stateDir: string;
  loader: ModuleLoader | null;
  /** Writes reach a kernel (live "/" or the fixture kernel). */
  writable: boolean;
}

export const defaultOwner = (): string => {
  const sudo = process.env.SUDO_USER;
  if (sudo) return sudo;
  try {
    return os.userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
};

const OWNER_RE = /^[A-Za-z0-9._@][A-Za-z0-9._@-]{0,63}$/;

/** The port, root, state directory and module loader a bind operation works with. */
export const openContext = (options: BindOptions): BindContext => {
  let port: SysfsPort;
  let simulate: boolean;
  let loader: ModuleLoader | null;
  if (options.port) {
    port = options.port;
    simulate = isSimulatedPort(port);
    loader = simulate ? { load: (m) => (port as ReturnType<typeof openSimulatedRoot>['port']).kernel.loadModule(m) } : port.root === '/' ? modprobeLoader : null;
  } else if (options.simulate) {
    const sim = openSimulatedRoot(options.root ?? '/');
    port = sim.port;
    simulate = true;
    loader = { load: (m) => sim.kernel.loadModule(m) };
  } else {
    const root = resolveRoot(options.root);
    port = new NodeSysfsPort(root);
    simulate = false;
    loader = root === '/' ? modprobeLoader : null;
  }
  if (options.moduleLoader !== undefined) loader = options.moduleLoader;
  const root = port.root;
  const stateDir = path.resolve(options.stateDir ?? (simulate ? path.join(root, SIM_DIR, 'state') : DEFAULT_STATE_DIR));
  return { port, root, simulate, stateDir, loader, writable: simulate || root === '/' };
};

/** A GROUP|BDF argument: a group number, or a PCI address standing for its whole group. */
export const parseGroupArg = (arg: string): { groupId: string } | { bdf: Bdf } => {
  const t = typeof arg === 'string' ? arg.trim() : '';
  if (/^\d{1,9}$/.test(t)) return { groupId: String(Number(t)) };
  if (isBdf(t)) return { bdf: parseBdf(t, 'group or device') };
  throw new IsogroupError('E_INVALID_BDF', `${JSON.stringify(arg)} is neither an IOMMU group number nor a PCI address (DDDD:BB:DD.F)`, { value: arg });
};

const groupOfArg = (snap: HostSnapshot, arg: { groupId: string } | { bdf: Bdf }): string => {
  if ('groupId' in arg) {
    if (!snap.kernelGroups.has(arg.groupId)) {
      throw new IsogroupError('E_NOT_FOUND', `no IOMMU group ${arg.groupId} under ${snap.root}${snap.iommuEnabled ? '' : ' (no IOMMU is active there)'}`, { group: arg.groupId });
    }
    return arg.groupId;
  }
  const d = snap.devices.get(arg.bdf);
  if (!d) throw new IsogroupError('E_NOT_FOUND', `no PCI device ${arg.bdf} under ${snap.root}`, { bdf: arg.bdf });
  if (d.kernelGroup === null) throw new IsogroupError('E_NO_IOMMU', `${arg.bdf} is in no IOMMU group (no IOMMU translation): it cannot be assigned safely`, { bdf: arg.bdf });
  return d.kernelGroup;
};

const checkNotAssigned = (entries: JournalEntry[], groupId: string, members: Bdf[]): void => {
  for (const e of entries) {
    if (e.state !== 'assigned') {
      throw new IsogroupError('E_GROUP_BUSY', `group ${e.groupId} has an unfinished ${e.state} transaction; run \`isogroup recover\` first`, { group: e.groupId, state: e.state });
    }
    if (e.groupId === groupId) throw new IsogroupError('E_ALREADY_ASSIGNED', `group ${groupId} is already assigned to ${e.owner} (since ${e.time})`, { group: groupId, owner: e.owner });
    const shared = e.members.map((m) => m.bdf).filter((b) => members.includes(b as Bdf));
    if (shared.length) {
      throw new IsogroupError('E_ALREADY_ASSIGNED', `devices ${shared.join(' ')} of group ${groupId} are already assigned to ${e.owner} as group ${e.groupId}`, { group: groupId, other: e.groupId, owner: e.owner });
    }
  }
};

export interface AssignResult extends Partial<TransactionResult> {
  groupId: string;
  owner: string;
  dryRun: boolean;
  simulate: boolean;
  stateDir: string;
  plan: AssignPlan;
  hostUse: HostUse[];
}

/** Hand a whole group (by number, or by any of its devices) to vfio-pci for an owner. */
export const assignGroup = (target: string, options: AssignOptions = {}): AssignResult => {
  const arg = parseGroupArg(target);
  const owner = options.owner ?? defaultOwner();
  if (!OWNER_RE.test(owner)) throw new IsogroupError('E_USAGE', `owner ${JSON.stringify(owner)} is not a valid name (letters, digits, . _ @ -)`, { owner });
  const ctx = openContext(options);
  if (!ctx.writable && !options.dryRun) {
    throw new IsogroupError('E_USAGE', `${ctx.root} is not the live host: writes there reach no kernel. Use --simulate (the fixture kernel) or --dry-run`, { root: ctx.root });
  }
  const prepare = (entries: JournalEntry[]): { snap: HostSnapshot; plan: AssignPlan; uses: HostUse[] } => {
    const snap = scanHost(ctx.port, { pciIds: null });
    const groupId = groupOfArg(snap, arg);
    const members = snap.kernelGroups.get(groupId)!.devices;
    checkNotAssigned(entries, groupId, members);
    const uses = findHostUse(ctx.port, snap, members);
    return { snap, uses, plan: planAssign(snap, groupId, { owner, hostUse: uses, force: options.force ?? false }) };
  };
  const base = { owner, simulate: ctx.simulate, stateDir: ctx.stateDir };
  if (options.dryRun) {
    const { plan, uses } = prepare(readJournal(ctx.stateDir).entries);
    return { ...base, groupId: plan.groupId, dryRun: true, plan, hostUse: uses };
  }
  const lock = lockStateDir(ctx.stateDir);
  try {
    const { plan, uses } = prepare(readJournal(ctx.stateDir).entries);
    ensureDriver(ctx.port, VFIO_DRIVER, 'vfio-pci', ctx.loader);
    const applyCtx: ApplyContext = { stateDir: ctx.stateDir, root: ctx.root, simulate: ctx.simulate };
    if (options.now) applyCtx.now = options.now;
    if (options.onAssigned) applyCtx.onAssigned = options.onAssigned;
    const result = applyPlan(ctx.port, plan, applyCtx);
    return { ...base, ...result, dryRun: false, plan, hostUse: uses };
  } finally {
    lock.release();
  }
};

export interface ReleaseResult extends Partial<TransactionResult> {
  groupId: string;
  owner: string;
  dryRun: boolean;
  plan: ReleasePlan;
}

const findEntry = (entries: JournalEntry[], arg: { groupId: string } | { bdf: Bdf }): JournalEntry => {
  const e = 'groupId' in arg ? entries.find((x) => x.groupId === arg.groupId) : entries.find((x) => x.members.some((m) => m.bdf === arg.bdf));
  if (!e) {
    throw new IsogroupError('E_NOT_ASSIGNED', `${'groupId' in arg ? `group ${arg.groupId}` : `device ${arg.bdf}`} is not assigned (see \`isogroup status\`)`, { ...arg });
  }
  if (e.state !== 'assigned') {
    throw new IsogroupError('E_GROUP_BUSY', `group ${e.groupId} has an unfinished ${e.state} transaction; run \`isogroup recover\` first`, { group: e.groupId, state: e.state });
  }
  return e;
};

/** Give an assigned group's devices back to the drivers and overrides they had. */
export const releaseGroup = (target: string, options: BindOptions & { dryRun?: boolean } = {}): ReleaseResult => {
  const arg = parseGroupArg(target);
  const ctx = openContext(options);
  if (!ctx.writable && !options.dryRun) {
    throw new IsogroupError('E_USAGE', `${ctx.root} is not the live host: writes there reach no kernel. Use --simulate (the fixture kernel) or --dry-run`, { root: ctx.root });
  }
  if (options.dryRun) {
    const entry = findEntry(readJournal(ctx.stateDir).entries, arg);
    const plan = planRelease(scanHost(ctx.port, { pciIds: null }), entry);
    return { groupId: entry.groupId, owner: entry.owner, dryRun: true, plan };
  }
  const lock = lockStateDir(ctx.stateDir);
  try {
    const entry = findEntry(readJournal(ctx.stateDir).entries, arg);
    const plan = planRelease(scanHost(ctx.port, { pciIds: null }), entry);
    const applyCtx: ApplyContext = { stateDir: ctx.stateDir, root: ctx.root, simulate: ctx.simulate };
    if (options.onReleased) applyCtx.onReleased = options.onReleased;
    const result = applyRelease(ctx.port, entry, applyCtx);
    return { ...result, dryRun: false, plan };
  } finally {
    lock.release();
  }
};

/** Finish what a crash interrupted: every unfinished transaction's devices go back to their drivers. */
export const recover = (options: BindOptions = {}): RecoverResult & { stateDir: string } => {
  const ctx = openContext(options);
  if (!ctx.writable) {
    throw new IsogroupError('E_USAGE', `${ctx.root} is not the live host: writes there reach no kernel. Use --simulate (the fixture kernel)`, { root: ctx.root });
  }
  const lock = lockStateDir(ctx.stateDir);
  try {
    return { ...recoverJournal(ctx.port, ctx.stateDir), stateDir: ctx.stateDir };
  } finally {
    lock.release();
  }
};

/** What is assigned, to whom, with the original drivers (held: filled in by the daemon). */
export const status = (options: BindOptions = {}): StatusResult & { stateDir: string } => {
  const stateDir = path.resolve(options.stateDir ?? (options.simulate ? path.join(options.port?.root ?? fs.realpathSync(resolveRoot(options.root)), SIM_DIR, 'state') : DEFAULT_STATE_DIR));
  return { ...journalStatus(stateDir), stateDir };
};

/** The journal's finished assignments (what the daemon must hold). */
export const assignedGroups = (stateDir: string): JournalEntry[] => journalAssignedGroups(stateDir);

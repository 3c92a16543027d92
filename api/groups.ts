import { IsogroupError } from '../errors.js';
import { compareGroupings, type GroupMismatch } from '../groups/compare.js';
import { type DerivedGrouping, deriveGroups, type GroupReason, type RuleSet } from '../groups/derive.js';
import { type DeviceReset, deriveResets, type GroupReset, groupReset, type ResetReport } from '../groups/reset.js';
import { buildTopology, type Topology } from '../groups/topology.js';
import { type Blocker, checkViability } from '../groups/viability.js';
import { type Bdf, compareBdf, parseBdf } from '../model/bdf.js';
import type { HostSnapshot, PciDevice } from '../model/device.js';
import { scan, viewOf } from './read.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export type { GroupComparison, GroupMismatch } from '../groups/compare.js';
export { compareGroupings } from '../groups/compare.js';
export type { DerivedGrouping, GroupReason, RuleSet } from '../groups/derive.js';
export { deriveGroups } from '../groups/derive.js';
export type { DeviceReset, GroupReset, ResetReport } from '../groups/reset.js';
export type { Blocker, Viability } from '../groups/viability.js';
export { checkViability } from '../groups/viability.js';

export interface DeriveRequest {
  rules?: string;
  /** BDFs to treat as ACS-isolated (what-if). */
  assumeAcs?: string[];
  /** Override the kernel release whose quirk tables apply. */
  kernelRelease?: string;
}

export interface GroupsOptions extends SessionOptions, DeriveRequest {
  /** kernel: the host's groups; derived: computed; auto (default): kernel when the host has groups. */
  source?: 'kernel' | 'derived' | 'auto';
}

export interface GroupJson {
  id: string;
  devices: Bdf[];
  viable: boolean;
  blockers: Blocker[];
  reasons: GroupReason[];
  /** What resetting the group's devices takes (groups/reset.ts). */
  reset: GroupReset;
}

export interface GroupsResult {
  root: string;
  source: 'kernel' | 'derived';
  rules: RuleSet;
  kernelRelease: string | null;
  groups: GroupJson[];
  /** Devices with no group (the IOMMU does not translate them). */
  ungrouped: Bdf[];
  notes: string[];
  /** "cannot be derived from this input: ..." lines; empty when derivation is sound. */
  cannotDerive: string[];
}

const RULE_SETS: readonly RuleSet[] = ['mainline', 'acs-rework'];

export const parseRules = (text: string | undefined): RuleSet => {
  if (text === undefined) return 'mainline';
  if ((RULE_SETS as readonly string[]).includes(text)) return text as RuleSet;
  throw new IsogroupError('E_USAGE', `--rules ${JSON.stringify(text)}: expected one of ${RULE_SETS.join(', ')}`, { rules: text });
};

/** --assume-acs BDF[,BDF]: each must be a PCI address present on the host. */
export const parseAssumeAcs = (snap: HostSnapshot, list: string[] | undefined): Bdf[] =>
  (list ?? [])
    .flatMap((x) => x.split(','))
    .map((x) => x.trim())
    .filter(Boolean)
    .map((x) => {
      const bdf = parseBdf(x, '--assume-acs');
      if (!snap.devices.has(bdf)) throw new IsogroupError('E_NOT_FOUND', `--assume-acs: no PCI device ${bdf} under ${snap.root}`, { bdf });
      return bdf;
    });

/**
 * Devices the IOMMU translates. With kernel groups: exactly those. Without: all but what AMD-Vi
 * firmware (IVRS) leaves out on every AMD machine in our data: the IOMMU function itself (class
 * 0806) and the root complex 00.0 beside it.
 */
export const translatedDevices = (snap: HostSnapshot): { devices: Bdf[]; note: string | null } => {
  const all = [...snap.devices.values()];
  if (snap.kernelGroups.size > 0) return { devices: all.filter((d) => d.kernelGroup !== null).map((d) => d.bdf), note: null };
  const amdIommus = all.filter((d) => d.vendor === '0x1022' && d.class.startsWith('0x0806'));
  const skip = new Set<Bdf>();
  for (const iommu of amdIommus) {
    skip.add(iommu.bdf);
    const rc = all.find((d) => d.busId === iommu.busId && d.slot === 0 && d.function === 0 && d.vendor === '0x1022' && d.class.startsWith('0x0600'));
    if (rc) skip.add(rc.bdf);
  }
  return {
    devices: all.filter((d) => !skip.has(d.bdf)).map((d) => d.bdf),
    note: skip.size ? `assumed not translated (AMD-Vi firmware leaves out the IOMMU and its root complex): ${[...skip].sort(compareBdf).join(' ')}` : null,
  };
};

export interface DerivedView {
  snap: HostSnapshot;
  derived: DerivedGrouping;
  rules: RuleSet;
  kernelRelease: string | null;
  notes: string[];
}

/** Derive, with the root's own kernel release (or the session's) and translated set. */
export const deriveForHost = (snap: HostSnapshot, s: Session | null, request: DeriveRequest = {}): DerivedView => {
  const rules = parseRules(request.rules);
  const assumeAcs = parseAssumeAcs(snap, request.assumeAcs);
  const kernelRelease = request.kernelRelease ?? s?.kernelRelease() ?? null;
  const translated = translatedDevices(snap);
  const derived = deriveGroups(snap, { rules, assumeAcs, kernelRelease, translated: translated.devices });
  // Our own note on what was assumed untranslated replaces the generic one.
  const notes = translated.note ? [...derived.notes.filter((n) => !n.startsWith('not translated by the IOMMU')), translated.note] : [...derived.notes];
  return { snap, derived, rules, kernelRelease, notes };
};

/** The reset report of a root: each device's methods (the kernel's or derived) and reset scope. */
export interface ResetView {
  topo: Topology;
  report: ResetReport;
  /** A group's reset, given the grouping its members come from. */
  group: (members: readonly Bdf[], groupOf: (bdf: Bdf) => string | null) => GroupReset;
  device: (bdf: Bdf) => DeviceReset;
}

/** Resets with the root's own kernel release (or the session's), whose quirk tables apply. */
export const resetsForHost = (snap: HostSnapshot, s: Session | null, kernelRelease?: string | null): ResetView => {
  const topo = buildTopology(snap, kernelRelease !== undefined ? kernelRelease : (s?.kernelRelease() ?? null));
  const report = deriveResets(topo);
  return {
    topo,
    report,
    group: (members, groupOf) => groupReset(topo, report, members, groupOf),
    device: (bdf) => report.devices.get(bdf)!,
  };
};

/** The kernel's grouping as a lookup (a device in no kernel group: null). */
export const kernelGroupOf =
  (snap: HostSnapshot) =>
  (bdf: Bdf): string | null =>
    snap.devices.get(bdf)?.kernelGroup ?? null;

const devicesOf = (snap: HostSnapshot, bdfs: Bdf[]): PciDevice[] => bdfs.map((b) => snap.devices.get(b)).filter((d): d is PciDevice => d !== undefined);

const cannotDerive = (d: DerivedGrouping): string[] => d.underivable.map((u) => `cannot be derived from this input: ${u}`);

/** Groups with viability and reasons: the kernel's (when the host has them) or derived. */
export const listGroups = (options: GroupsOptions = {}): GroupsResult & { owner?: string } => {
  const s = openSession(options);
  const snap = scan(s);
  const view = deriveForHost(snap, s, options);
  const wantKernel = options.source === 'kernel' || (options.source !== 'derived' && snap.kernelGroups.size > 0);
  if (options.source === 'kernel' && snap.kernelGroups.size === 0) {
    throw new IsogroupError('E_NO_IOMMU', `no kernel IOMMU groups under ${snap.root} (IOMMU off, or not in this capture); use --derived to compute them`, {
      root: snap.root,
    });
  }
  const reasonByDevice = new Map(view.derived.groups.flatMap((g) => g.reasons).map((r) => [r.device, r]));
  const reasonsOf = (bdfs: Bdf[]): GroupReason[] => bdfs.map((b) => reasonByDevice.get(b)).filter((r): r is GroupReason => r !== undefined);
  const base = wantKernel
    ? [...snap.kernelGroups.values()].map((g) => ({ id: g.id, devices: [...g.devices].sort(compareBdf) }))
    : view.derived.groups.map((g) => ({ id: g.id, devices: g.devices }));
  const resets = resetsForHost(snap, s, view.kernelRelease);
  const groupOf = wantKernel ? kernelGroupOf(snap) : (b: Bdf) => view.derived.groupOf.get(b) ?? null;
  const groups = base
    .map((g) => {
      const v = checkViability(devicesOf(snap, g.devices));
      return { id: g.id, devices: g.devices, viable: v.viable, blockers: v.blockers, reasons: reasonsOf(g.devices), reset: resets.group(g.devices, groupOf) };
    })
    .sort((a, b) => compareBdf(a.devices[0] ?? '', b.devices[0] ?? ''));
  const grouped = new Set(groups.flatMap((g) => g.devices));
  const notes = [...view.notes];
  if (!wantKernel && snap.kernelGroups.size === 0) {
    notes.unshift(
      `no IOMMU is active under ${snap.root} (no kernel groups): these groups are predicted from topology, ACS and quirks, as the kernel would form them with the IOMMU on; nothing can be assigned until it is`,
    );
  }
  notes.push(...resets.report.notes);
  if (wantKernel) {
    notes.unshift("groups: the kernel's (/sys/kernel/iommu_groups); reasons: derived by isogroup's replay of the kernel's rules");
    const cmp = compareGroupings(snap.kernelGroups.values(), view.derived);
    if (cmp.mismatches.length) {
      notes.push(
        `the derived grouping differs from the kernel's for ${cmp.mismatches.map((m) => m.kernel.map((k) => k.id).join('+')).join(', ')}: the reasons there explain the derived groups, not the kernel's (see groups --compare)`,
      );
    }
  }
  const result: GroupsResult = {
    root: snap.root,
    source: wantKernel ? 'kernel' : 'derived',
    rules: view.rules,
    kernelRelease: view.kernelRelease,
    groups,
    ungrouped: [...snap.devices.keys()].filter((b) => !grouped.has(b)),
    notes,
    cannotDerive: cannotDerive(view.derived),
  };
  const scope = viewOf(s, snap);
  return scope ? { ...result, owner: scope.owner, groups: result.groups.filter((g) => scope.groups.has(g.id)), ungrouped: [] } : result;
};

export interface CompareResult {
  root: string;
  agree: boolean;
  /** false when the input lacks what derivation needs; then cannotDerive says what. */
  derivable: boolean;
  kernelGroups: number;
  derivedGroups: number;
  matching: number;
  rules: RuleSet;
  kernelRelease: string | null;
  mismatches: GroupMismatch[];
  onlyKernel: Bdf[];
  onlyDerived: Bdf[];
  cannotDerive: string[];
  notes: string[];
}

/** Derived groups against the kernel's, by members. Throws E_NO_IOMMU when the host has no kernel groups. */
export const compareGroups = (options: SessionOptions & DeriveRequest = {}): CompareResult => {
  const s = openSession(options);
  return compareOnSnapshot(scan(s), s, options);
};

export const compareOnSnapshot = (snap: HostSnapshot, s: Session | null, request: DeriveRequest = {}): CompareResult => {
  if (snap.kernelGroups.size === 0) {
    throw new IsogroupError(
      'E_NO_IOMMU',
      `no kernel IOMMU groups under ${snap.root} (IOMMU off, or not in this capture): nothing to compare with; use --derived`,
      { root: snap.root },
    );
  }
  const view = deriveForHost(snap, s, request);
  const cmp = compareGroupings(snap.kernelGroups.values(), view.derived);
  const cannot = cannotDerive(view.derived);
  // On AMD-Vi hosts the firmware's IVRS table can add same-bus DMA aliases that no sysfs file or
  // dump shows; name that as the likely cause when the kernel joins same-bus devices we keep apart.
  const amdVi =
    [...snap.iommuUnits.values()].some((u) => u.kind === 'amd') ||
    [...snap.devices.values()].some((d) => d.vendor === '0x1022' && d.class.startsWith('0x0806'));
  if (amdVi && view.rules === 'mainline') {
    for (const m of cmp.mismatches) {
      const buses = new Set(m.devices.map((b) => snap.devices.get(b)?.busId));
      const slots = new Set(m.devices.map((b) => snap.devices.get(b)?.slot));
      if (m.kernel.length === 1 && m.derived.length > 1 && buses.size === 1 && slots.size > 1) {
        m.explanation += ` | possibly an AMD IVRS alias entry (an ACPI table the input does not contain): the kernel joined same-bus devices ${m.devices.join(' ')}`;
      }
    }
  }
  return {
    root: snap.root,
    agree: cmp.agree && cannot.length === 0,
    derivable: cannot.length === 0,
    kernelGroups: cmp.kernelGroups,
    derivedGroups: cmp.derivedGroups,
    matching: cmp.matching,
    rules: view.rules,
    kernelRelease: view.kernelRelease,
    mismatches: cmp.mismatches,
    onlyKernel: cmp.onlyKernel,
    onlyDerived: cmp.onlyDerived,
    cannotDerive: cannot,
    notes: view.notes,
  };
};

export interface DeviceGroupInfo {
  kernel: { id: string; devices: Bdf[] } | null;
  derived: { id: string; devices: Bdf[]; reasons: GroupReason[] } | null;
  reason: GroupReason | null;
  cannotDerive: string[];
}

/** One device's kernel and derived group, and the reason it is where it is (for `show`). */
export const groupOfDevice = (snap: HostSnapshot, s: Session | null, bdf: Bdf, view: DerivedView = deriveForHost(snap, s)): DeviceGroupInfo => {
  const d = snap.devices.get(bdf);
  const k = d?.kernelGroup != null ? snap.kernelGroups.get(d.kernelGroup) : undefined;
  const gid = view.derived.groupOf.get(bdf);
  const g = gid !== undefined ? view.derived.groups.find((x) => x.id === gid) : undefined;
  return {
    kernel: k ? { id: k.id, devices: k.devices } : null,
    derived: g ? { id: g.id, devices: g.devices, reasons: g.reasons } : null,
    reason: g?.reasons.find((r) => r.device === bdf) ?? null,
    cannotDerive: cannotDerive(view.derived),
  };
};

import { type Bdf, compareBdf } from '../model/bdf.js';
import type { KernelGroup } from '../model/device.js';
import type { DerivedGrouping } from './derive.js';

// Kernel groups vs derived groups, by membership (group numbers are not identities).

export interface GroupRef {
  id: string;
  devices: Bdf[];
}

export interface GroupMismatch {
  /** Every device involved. */
  devices: Bdf[];
  kernel: GroupRef[];
  derived: GroupRef[];
  /** The derived rule(s) behind the difference, e.g. "acs-path" or "isolated". */
  rule: string;
  explanation: string;
}

export interface GroupComparison {
  agree: boolean;
  kernelGroups: number;
  derivedGroups: number;
  /** Groups identical in both, by members. */
  matching: number;
  mismatches: GroupMismatch[];
  /** Devices grouped on one side only (e.g. the kernel's IOMMU does not translate them). */
  onlyKernel: Bdf[];
  onlyDerived: Bdf[];
}

export const compareGroupings = (kernel: Iterable<KernelGroup>, derived: DerivedGrouping): GroupComparison => {
  const kGroups = [...kernel].map((g) => ({ id: g.id, devices: [...g.devices].sort(compareBdf) }));
  const kById = new Map(kGroups.map((g) => [g.id, g]));
  const kOf = new Map<Bdf, string>();
  for (const g of kGroups) for (const d of g.devices) kOf.set(d, g.id);
  const dGroups = new Map(derived.groups.map((g) => [g.id, g]));
  const onlyKernel = [...kOf.keys()].filter((d) => !derived.groupOf.has(d)).sort(compareBdf);
  const onlyDerived = [...derived.groupOf.keys()].filter((d) => !kOf.has(d)).sort(compareBdf);

  // Connected components of "kernel group shares a device with derived group".
  const seenK = new Set<string>();
  const mismatches: GroupMismatch[] = [];
  let matching = 0;
  for (const start of kGroups) {
    if (seenK.has(start.id)) continue;
    const ks = new Set<string>([start.id]);
    const ds = new Set<string>();
    const queue: ['k' | 'd', string][] = [['k', start.id]];
    while (queue.length) {
      const [side, id] = queue.shift()!;
      const members = side === 'k' ? kById.get(id)!.devices : dGroups.get(id)!.devices;
      for (const m of members) {
        const other = side === 'k' ? derived.groupOf.get(m) : kOf.get(m);
        if (other === undefined) continue;
        const set = side === 'k' ? ds : ks;
        if (!set.has(other)) {
          set.add(other);
          queue.push([side === 'k' ? 'd' : 'k', other]);
        }
      }
    }
    for (const k of ks) seenK.add(k);
    const kRefs = [...ks].map((id) => kById.get(id)!);
    const dRefs = [...ds].map((id) => ({ id, devices: dGroups.get(id)!.devices }));
    const same = kRefs.length === 1 && dRefs.length === 1 && kRefs[0]!.devices.length === dRefs[0]!.devices.filter((d) => kOf.has(d)).length;
    if (same) {
      matching++;
      continue;
    }
    const devices = [...new Set([...kRefs.flatMap((g) => g.devices), ...dRefs.flatMap((g) => g.devices)])].sort(compareBdf);
    const inMismatch = new Set(devices);
    const reasons = dRefs.flatMap((g) => dGroups.get(g.id)!.reasons).filter((r) => inMismatch.has(r.device));
    let explanation: string;
    let rules: string[];
    if (kRefs.length === 1 && dRefs.length > 1) {
      // The kernel joined what we kept apart: the starting reasons of the extra derived groups say why we did.
      const starters = reasons.filter((r) => r.joined === null);
      rules = [...new Set(starters.map((r) => r.rule))];
      explanation = `kernel group ${kRefs[0]!.id} is one group; derived splits it in ${dRefs.length}: ${starters.map((r) => r.message).join(' | ')}`;
    } else if (kRefs.length > 1 && dRefs.length === 1) {
      const joins = reasons.filter((r) => r.joined !== null && kOf.get(r.device) !== kOf.get(r.joined));
      rules = [...new Set(joins.map((r) => r.rule))];
      explanation = `derived group ${dRefs[0]!.id} joins what the kernel keeps in ${kRefs.length} groups: ${joins.map((r) => r.message).join(' | ')}`;
    } else {
      rules = [...new Set(reasons.map((r) => r.rule))];
      explanation = `groups overlap differently: ${reasons.map((r) => r.message).join(' | ')}`;
    }
    mismatches.push({ devices, kernel: kRefs, derived: dRefs, rule: rules.join(',') || 'none', explanation });
  }
  return {
    agree: mismatches.length === 0 && onlyDerived.length === 0 && onlyKernel.length === 0,
    kernelGroups: kGroups.length,
    derivedGroups: derived.groups.length,
    matching,
    mismatches,
    onlyKernel,
    onlyDerived,
  };
};

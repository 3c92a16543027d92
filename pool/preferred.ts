// GetPreferredAllocation: which groups to give a container asking for `size` of a resource. Groups on
// one NUMA node first (the node of the devices that must be included, else the node that fits the
// request most tightly, keeping larger nodes whole for larger requests), then under one PCIe root port
// by the same rule, then by group number. When no node can hold the request, the fullest node goes
// first, so the allocation spans as few nodes as it can. Pure and deterministic.

import { IsogroupError } from '../errors.js';
import type { PoolDevice } from './devices.js';

export interface PreferredRequest {
  available: readonly string[];
  mustInclude: readonly string[];
  size: number;
}

const numaKey = (d: PoolDevice): string => (d.numaNodes.length === 0 ? '-' : d.numaNodes.join('+'));
const portKey = (d: PoolDevice): string => d.rootPort ?? '-';
const byId = (a: PoolDevice, b: PoolDevice): number => Number(a.id) - Number(b.id) || a.id.localeCompare(b.id);

// Buckets in the order they should be drawn from: those holding what was already chosen, then those
// that can satisfy the rest alone (tightest first), then the largest.
const orderBuckets = (devices: readonly PoolDevice[], key: (d: PoolDevice) => string, preferred: ReadonlySet<string>, need: number): PoolDevice[][] => {
  const buckets = new Map<string, PoolDevice[]>();
  for (const d of devices) {
    const k = key(d);
    const b = buckets.get(k);
    if (b) b.push(d);
    else buckets.set(k, [d]);
  }
  const rank = ([k, b]: [string, PoolDevice[]]) => ({ k, b, preferred: preferred.has(k) && k !== '-', fits: b.length >= need });
  return [...buckets]
    .map(rank)
    .sort(
      (x, y) =>
        Number(y.preferred) - Number(x.preferred) ||
        Number(y.fits) - Number(x.fits) ||
        (x.fits ? x.b.length - y.b.length : y.b.length - x.b.length) ||
        x.k.localeCompare(y.k),
    )
    .map((x) => x.b);
};

/** The preferred device IDs: every must-include ID, then the best `size - mustInclude` of the available ones. */
export const preferredAllocation = (devices: ReadonlyMap<string, PoolDevice>, request: PreferredRequest): string[] => {
  const unknown = [...request.available, ...request.mustInclude].filter((id) => !devices.has(id));
  if (unknown.length)
    throw new IsogroupError('E_NOT_FOUND', `unknown device ID(s) ${[...new Set(unknown)].join(', ')}: not groups of this resource's pool`, {
      ids: [...new Set(unknown)],
    });
  if (!Number.isInteger(request.size) || request.size < 0) throw new IsogroupError('E_USAGE', `allocation size ${request.size} is not a count`, {});
  const chosen = [...new Set(request.mustInclude)];
  const candidates = [...new Set(request.available)].filter((id) => !chosen.includes(id)).map((id) => devices.get(id)!);
  if (chosen.length + candidates.length < request.size)
    throw new IsogroupError('E_USAGE', `cannot choose ${request.size} device(s) from ${chosen.length + candidates.length}`, { size: request.size });
  let need = request.size - chosen.length;
  if (need <= 0) return chosen;
  const picked = chosen.map((id) => devices.get(id)!);
  const numas = orderBuckets(candidates, numaKey, new Set(picked.map(numaKey)), need);
  const out = [...chosen];
  for (const numa of numas) {
    for (const port of orderBuckets(numa, portKey, new Set(picked.map(portKey)), need)) {
      for (const d of [...port].sort(byId)) {
        if (need === 0) return out;
        out.push(d.id);
        picked.push(d);
        need--;
      }
    }
  }
  return out;
};

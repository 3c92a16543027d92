// The pool as the kubelet sees it: each group assigned to the kubelet's owner is one device (never one
// function of it), its ID the group number, Healthy only while the group is protected (held by the
// daemon, or open in the container it was handed to) and viable, with its NUMA node(s) and the PCIe
// root port above it for placement. Pure: the caller reads the host and says what is protected.

import { checkViability } from '../groups/viability.js';
import { type Bdf, compareBdf } from '../model/bdf.js';
import type { HostSnapshot, PciDevice } from '../model/device.js';
import { type ResourceRules, resourceMatches, resourceOf } from './resources.js';

export const HEALTHY = 'Healthy';
export const UNHEALTHY = 'Unhealthy';

export interface PoolDevice {
  /** The kubelet device ID: the group number, the same while the group stays in the pool. */
  id: string;
  /** The resource it is offered under; null: no resource applies (not offered to the kubelet). */
  resource: string | null;
  healthy: boolean;
  /** Why it is unhealthy (empty when healthy). */
  problems: string[];
  /** What changed without making it unusable (a member hot-removed). */
  notes: string[];
  /** Every member present now, in BDF order. */
  members: Bdf[];
  /** The members that are not bridges: what a container uses (KubeVirt's PCI_RESOURCE_ addresses). */
  endpoints: Bdf[];
  /** Distinct NUMA nodes of the members (empty: unknown, or no NUMA). */
  numaNodes: number[];
  /** The PCIe root port the group sits under, null for devices on a root bus. */
  rootPort: Bdf | null;
  /** The endpoints' VFIO device cdevs (vfioX), where the kernel has them. */
  cdevs: string[];
}

export interface PoolGroupInput {
  groupId: string;
  /** The journal's members (what the group held when assigned, kept in step by the guard). */
  members: readonly Bdf[];
}

export interface PoolInput {
  snap: HostSnapshot;
  /** The kubelet owner's assigned groups. */
  groups: readonly PoolGroupInput[];
  /** Groups protected now: held by the daemon or open in the container they were handed to. null: not known (no daemon; every group counts as protected). */
  protectedGroups: ReadonlySet<string> | null;
  rules: ResourceRules | null;
  /** The resource each group was offered under before: it keeps it while it stays in the pool. */
  previous?: ReadonlyMap<string, string | null>;
  /** Each endpoint's VFIO device cdev name, where it has one. */
  cdevs?: ReadonlyMap<Bdf, string>;
}

/** The topmost PCIe root port above a device, or null. */
export const rootPortOf = (snap: HostSnapshot, device: PciDevice): Bdf | null => {
  let port: Bdf | null = null;
  const seen = new Set<Bdf>();
  for (let d: PciDevice | undefined = device; d && !seen.has(d.bdf); d = d.parent ? snap.devices.get(d.parent) : undefined) {
    seen.add(d.bdf);
    if (d.portType === 'root-port') port = d.bdf;
  }
  return port;
};

const byNumber = (a: PoolDevice, b: PoolDevice): number => Number(a.id) - Number(b.id) || a.id.localeCompare(b.id);

/** Every pool group as a kubelet device, ordered by group number. */
export const buildPool = (input: PoolInput): PoolDevice[] => {
  const { snap } = input;
  return input.groups
    .map(({ groupId, members: recorded }): PoolDevice => {
      const kernel = snap.kernelGroups.get(groupId)?.devices ?? [];
      const present = [...new Set([...kernel, ...recorded])]
        .map((b) => snap.devices.get(b))
        .filter((d): d is PciDevice => d !== undefined && d.kernelGroup === groupId)
        .sort((a, b) => compareBdf(a.bdf, b.bdf));
      const endpoints = present.filter((d) => !d.isBridge);
      const problems: string[] = [];
      if (present.length === 0) problems.push(`group ${groupId} is gone (no member is present)`);
      else if (endpoints.length === 0) problems.push(`group ${groupId} has no endpoint left, only bridges`);
      const missing = recorded.filter((b) => !present.some((d) => d.bdf === b));
      const notes = present.length > 0 && missing.length > 0 ? [`member(s) ${missing.join(', ')} removed`] : [];
      const viability = checkViability(present);
      if (present.length > 0 && !viability.viable) problems.push(...viability.blockers.map((b) => b.reason));
      if (input.protectedGroups !== null && !input.protectedGroups.has(groupId))
        problems.push(`group ${groupId} is not held: a host driver could take a device hot-added into it`);
      const previous = input.previous?.get(groupId);
      const resource = previous !== undefined && previous !== null ? previous : resourceOf(input.rules, endpoints);
      if (resource !== null && endpoints.length > 0 && !resourceMatches(input.rules, resource, endpoints))
        problems.push(`group ${groupId} no longer has a device of ${resource}`);
      const numaNodes = [...new Set(present.map((d) => d.numaNode).filter((n): n is number => n !== null))].sort((a, b) => a - b);
      const primary = endpoints[0] ?? present[0];
      return {
        id: groupId,
        resource,
        healthy: problems.length === 0,
        problems,
        notes,
        members: present.map((d) => d.bdf),
        endpoints: endpoints.map((d) => d.bdf),
        numaNodes,
        rootPort: primary ? rootPortOf(snap, primary) : null,
        cdevs: endpoints.map((d) => input.cdevs?.get(d.bdf)).filter((c): c is string => c !== undefined),
      };
    })
    .sort(byNumber);
};

/** The devices of one resource. */
export const devicesOf = (pool: readonly PoolDevice[], resource: string): PoolDevice[] => pool.filter((d) => d.resource === resource);

/** Every resource some pool group is offered under. */
export const resourcesOf = (pool: readonly PoolDevice[]): string[] => [...new Set(pool.map((d) => d.resource).filter((r): r is string => r !== null))].sort();

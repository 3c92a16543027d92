// IOMMU contexts: one merged DMA context (a VFIO type1 container held by the daemon) per owner.
// Pure: every operation takes a ContextTable and returns a new one, or a typed error; nothing is
// mutated in place, nothing touches the host.
//
// Invariants (checked by every operation and by validateContextTable):
//  - an owner has at most one context;
//  - a group is in at most one context, and so is each of its devices;
//  - only viable groups attach (VFIO's rule, anchors A.2.3);
//  - groups of one context share an IOMMU driver kind and never mix no-IOMMU with IOMMU groups
//    (vfio_container_attach_group: -EPERM), anchors A.3.
//
// Device namespace: each context numbers its devices 0, 1, 2, ... in attach order (a group's devices
// in BDF order). An index is stable for the context's life: detaching a group leaves holes and an
// index is never reused, so a number an owner was given never silently names another device.
// A context lives until destroyed, even when empty, so its counter survives detach/attach cycles.

import { IsogroupError } from '../errors.js';
import { type Bdf, compareBdf } from '../model/bdf.js';
import type { HostSnapshot, PciDevice, ReservedRegion } from '../model/device.js';
import { isOwnerName, OWNER_NAME_RULE } from '../model/owner.js';
import {
  contextAperture,
  defaultUnitCaps,
  type IommuUnitCaps,
  type IovaRange,
  type IovaRangeJson,
  normalizeRanges,
  rangesToJson,
  rangeToJson,
  type UsableIovaOptions,
  usableIova,
} from './iova.js';
import { checkViability } from './viability.js';

export interface ContextGroup {
  /** Kernel group id (as /sys/kernel/iommu_groups/N). */
  id: string;
  devices: Bdf[];
  /** IOMMU units (/sys/class/iommu/*) of the group's devices, sorted. Empty for a no-IOMMU group. */
  units: string[];
  /** IOMMU driver kind of those units (intel, amd, arm-smmu, ...), null when unknown or no-IOMMU. */
  unitKind: string | null;
  noiommu: boolean;
  /** The group's reserved regions when it attached (kept so the context's IOVA can be computed offline). */
  reservedRegions: ReservedRegion[];
}

export interface ContextDevice {
  /** Context-local device number, stable for the context's life. */
  index: number;
  bdf: Bdf;
  group: string;
}

export interface IommuContext {
  /** "ctx-N", never reused within a table. */
  id: string;
  owner: string;
  groups: ContextGroup[];
  /** The device namespace, in index order; holes where devices left. */
  devices: ContextDevice[];
  /** Next index to hand out; indices below it are never given again. */
  nextIndex: number;
}

export interface ContextTable {
  version: 1;
  /** Next context number to hand out. */
  nextId: number;
  contexts: IommuContext[];
}

/** What a group brings to an attach: read from a snapshot by groupFacts(), or built by the caller. */
export interface GroupFacts {
  id: string;
  devices: Bdf[];
  viable: boolean;
  /** Why it is not viable, one line per blocking device. */
  blockers: string[];
  units: { name: string; kind: string }[];
  noiommu: boolean;
  reservedRegions: ReservedRegion[];
}

export interface ContextNote {
  code: string;
  message: string;
}

export type ContextResult<T = Record<never, never>> =
  | ({ ok: true; table: ContextTable; context: IommuContext | null; notes: ContextNote[] } & T)
  | { ok: false; error: IsogroupError };

/** Throw the error of a failed result, or return the successful one. */
export const orThrow = <T>(result: ContextResult<T>): Extract<ContextResult<T>, { ok: true }> => {
  if (!result.ok) throw result.error;
  return result as Extract<ContextResult<T>, { ok: true }>;
};

const fail = (code: IsogroupError['code'], message: string, details: Record<string, unknown> = {}): { ok: false; error: IsogroupError } => ({
  ok: false,
  error: new IsogroupError(code, message, details),
});

export const emptyContextTable = (): ContextTable => ({ version: 1, nextId: 1, contexts: [] });

export const checkOwnerName = (owner: unknown, where = 'owner'): string => {
  if (!isOwnerName(owner))
    throw new IsogroupError('E_INVALID_INPUT', `${where}: ${JSON.stringify(owner)} is not an owner name (${OWNER_NAME_RULE})`, { where, value: owner });
  return owner;
};

const cloneGroup = (g: ContextGroup): ContextGroup => ({
  ...g,
  devices: [...g.devices],
  units: [...g.units],
  reservedRegions: g.reservedRegions.map((r) => ({ ...r })),
});
const cloneContext = (c: IommuContext): IommuContext => ({
  ...c,
  groups: c.groups.map(cloneGroup),
  devices: c.devices.map((d) => ({ ...d })),
});
// Tables are immutable values: an operation copies only the contexts it changes and shares the rest
// (callers must never mutate a table they were given or got back).
const cloneTable = (t: ContextTable, changed: readonly string[] = []): ContextTable => ({
  version: 1,
  nextId: t.nextId,
  contexts: t.contexts.map((c) => (changed.includes(c.id) ? cloneContext(c) : c)),
});

// --- lookups -----------------------------------------------------------------------------------

export const contextOf = (table: ContextTable, owner: string): IommuContext | null => table.contexts.find((c) => c.owner === owner) ?? null;

export const contextOfGroup = (table: ContextTable, groupId: string): IommuContext | null =>
  table.contexts.find((c) => c.groups.some((g) => g.id === groupId)) ?? null;

export const contextOfDevice = (table: ContextTable, bdf: string): IommuContext | null =>
  table.contexts.find((c) => c.devices.some((d) => d.bdf === bdf)) ?? null;

export const ownerOfGroup = (table: ContextTable, groupId: string): string | null => contextOfGroup(table, groupId)?.owner ?? null;

export const ownerOfDevice = (table: ContextTable, bdf: string): string | null => contextOfDevice(table, bdf)?.owner ?? null;

// --- compatibility (anchors A.3.1 / A.3.3) ----------------------------------------------------

export interface Compatibility {
  compatible: boolean;
  /** Refusals, each an E_INCOMPATIBLE reason. */
  problems: string[];
  notes: ContextNote[];
}

const kindOf = (units: { kind: string }[]): string | null => {
  const kinds = [...new Set(units.map((u) => u.kind))];
  return kinds.length === 1 ? kinds[0]! : kinds.length === 0 ? null : kinds.sort().join('+');
};

/**
 * Can `group` join a context already holding `members`? Mirrors what the kernel checks before it
 * will share a container (vfio_container_attach_group, vfio_iommu_type1_attach_group):
 *  - no-IOMMU and IOMMU groups never mix (-EPERM);
 *  - a group spanning two IOMMU driver kinds, or a kind different from the context's, is refused
 *    here: type1 would keep it in a separate domain with different ops, which is no merged context;
 *  - a different unit of the same kind is allowed but gets its own domain (mappings replayed, page
 *    sizes narrow): a note;
 *  - different snoop control (enforce_cache_coherency) also splits domains: a note;
 *  - a unit without interrupt remapping needs allow_unsafe_interrupts (-EPERM otherwise): a note;
 *  - `direct` (RMRR/IVMD) regions are a known hazard for assignment: a note;
 *  - nothing usable left of the address space: refused.
 */
export const checkCompatibility = (
  members: readonly ContextGroup[],
  group: GroupFacts,
  options: { caps?: ReadonlyMap<string, IommuUnitCaps>; iova?: UsableIovaOptions } = {},
): Compatibility => {
  const problems: string[] = [];
  const notes: ContextNote[] = [];
  const kinds = [...new Set(group.units.map((u) => u.kind))];
  if (kinds.length > 1) problems.push(`group ${group.id} spans IOMMU driver kinds ${kinds.sort().join(', ')}`);
  if (group.noiommu) notes.push({ code: 'noiommu', message: `group ${group.id} is a no-IOMMU group: no DMA isolation at all; the user needs CAP_SYS_RAWIO` });
  const memberKinds = [...new Set(members.map((m) => m.unitKind).filter((k): k is string => k !== null))];
  const mixed = members.find((m) => m.noiommu !== group.noiommu);
  if (mixed) {
    problems.push(
      `group ${group.id} is ${group.noiommu ? 'a no-IOMMU group' : 'IOMMU-backed'} but group ${mixed.id} in the context is ${mixed.noiommu ? 'a no-IOMMU group' : 'IOMMU-backed'}: the kernel refuses to mix them in one container (EPERM)`,
    );
  }
  const groupKind = kindOf(group.units);
  for (const k of memberKinds) {
    if (groupKind !== null && k !== groupKind)
      problems.push(`group ${group.id} is behind a ${groupKind} IOMMU, the context's groups behind ${k}: different IOMMU drivers cannot share a domain`);
  }
  const memberUnits = new Set(members.flatMap((m) => m.units));
  const newUnits = group.units.map((u) => u.name).filter((u) => !memberUnits.has(u));
  if (members.length > 0 && newUnits.length > 0 && !mixed) {
    notes.push({
      code: 'separate-domain',
      message: `group ${group.id} is behind IOMMU unit ${newUnits.join(', ')}, not ${[...memberUnits].join(', ') || "the context's"}: allowed in one container, but as a separate IOMMU domain (mappings replayed per domain, page sizes narrow to what all support)`,
    });
  }
  if (group.units.length > 1)
    notes.push({ code: 'multi-unit-group', message: `group ${group.id} spans IOMMU units ${group.units.map((u) => u.name).join(', ')}` });
  const caps = options.caps;
  if (caps) {
    const sc = new Set<boolean>();
    for (const name of [...memberUnits, ...group.units.map((u) => u.name)]) {
      const c = caps.get(name);
      if (c?.intel) sc.add(c.intel.snoopControl);
    }
    if (sc.size > 1)
      notes.push({ code: 'coherency-split', message: 'the units differ in snoop control (enforce_cache_coherency): the kernel keeps separate domains' });
    for (const u of group.units) {
      const c = caps.get(u.name);
      if (c?.intel && !c.intel.interruptRemapping) {
        notes.push({
          code: 'no-interrupt-remapping',
          message: `IOMMU unit ${u.name} has no interrupt remapping: attach needs vfio_iommu_type1 allow_unsafe_interrupts=1 (EPERM otherwise)`,
        });
      }
    }
  }
  for (const r of group.reservedRegions) {
    if (r.type === 'direct') {
      notes.push({
        code: 'direct-region',
        message: `group ${group.id} has a direct-mapped (RMRR/IVMD) region 0x${r.start.toString(16)}-0x${r.end.toString(16)}: firmware may DMA there; a known hazard for assignment`,
      });
    }
  }
  if (!group.noiommu && !mixed) {
    const unitCaps = [...new Set([...memberUnits, ...group.units.map((u) => u.name)])].map((n) => caps?.get(n) ?? defaultUnitCaps(n, 'unknown'));
    let aperture: IovaRange | null = null;
    try {
      aperture = contextAperture(unitCaps);
    } catch (error) {
      problems.push((error as Error).message);
    }
    if (aperture) {
      const all = [...members.flatMap((m) => m.reservedRegions), ...group.reservedRegions];
      if (usableIova(aperture, all, options.iova).ranges.length === 0)
        problems.push(`no usable IOVA would be left once group ${group.id} joins: its reserved regions cover the whole aperture`);
    }
  }
  return { compatible: problems.length === 0, problems, notes };
};

// --- operations --------------------------------------------------------------------------------

const checkGroupFacts = (g: GroupFacts): void => {
  if (typeof g.id !== 'string' || !/^[0-9A-Za-z_.:-]{1,64}$/.test(g.id)) {
    throw new IsogroupError('E_INVALID_INPUT', `group id ${JSON.stringify(g.id)} is not a group id`, { group: g.id });
  }
  if (g.devices.length === 0) throw new IsogroupError('E_INVALID_INPUT', `group ${g.id} has no devices`, { group: g.id });
};

/** A new, empty context for an owner who has none. */
export const createContext = (table: ContextTable, owner: string): ContextResult => {
  try {
    checkOwnerName(owner);
  } catch (error) {
    return { ok: false, error: error as IsogroupError };
  }
  const existing = contextOf(table, owner);
  if (existing) return fail('E_CONTEXT', `${owner} already has context ${existing.id}: an owner has at most one context`, { owner, context: existing.id });
  const next = cloneTable(table);
  const context: IommuContext = { id: `ctx-${next.nextId}`, owner, groups: [], devices: [], nextIndex: 0 };
  next.nextId += 1;
  next.contexts.push(context);
  return { ok: true, table: next, context, notes: [] };
};

export interface AttachOptions {
  /** Create the owner's context when there is none (default true). */
  create?: boolean;
  caps?: ReadonlyMap<string, IommuUnitCaps>;
  iova?: UsableIovaOptions;
}

/** Attach a whole group to the owner's context (created on first attach), numbering its devices. */
export const attachGroup = (
  table: ContextTable,
  owner: string,
  group: GroupFacts,
  options: AttachOptions = {},
): ContextResult<{ indices: ContextDevice[] }> => {
  try {
    checkOwnerName(owner);
    checkGroupFacts(group);
  } catch (error) {
    return { ok: false, error: error as IsogroupError };
  }
  const holder = contextOfGroup(table, group.id);
  if (holder) {
    return holder.owner === owner
      ? fail('E_CONTEXT', `group ${group.id} is already in ${owner}'s context ${holder.id}`, { group: group.id, owner, context: holder.id })
      : fail('E_CONTEXT', `group ${group.id} belongs to ${holder.owner}'s context ${holder.id}: a group is in at most one context`, {
          group: group.id,
          owner: holder.owner,
          context: holder.id,
        });
  }
  const wanted = new Set<string>(group.devices);
  for (const c of table.contexts) {
    const taken = c.devices.find((d) => wanted.has(d.bdf));
    if (!taken) continue;
    const bdf = taken.bdf;
    return fail('E_CONTEXT', `device ${bdf} of group ${group.id} is already in ${c.owner}'s context ${c.id}`, {
      group: group.id,
      device: bdf,
      owner: c.owner,
      context: c.id,
    });
  }
  if (!group.viable) {
    return fail('E_NOT_VIABLE', `group ${group.id} is not viable: ${group.blockers.join('; ') || 'a device is bound to a host driver'}`, {
      group: group.id,
      blockers: group.blockers,
    });
  }
  let next = table;
  let context = contextOf(table, owner);
  if (!context) {
    if (options.create === false) return fail('E_CONTEXT', `${owner} has no context`, { owner });
    const created = createContext(table, owner);
    if (!created.ok) return created;
    next = created.table;
    context = created.context!;
  }
  const compat = checkCompatibility(context.groups, group, { caps: options.caps, iova: options.iova });
  if (!compat.compatible) {
    return fail('E_INCOMPATIBLE', `group ${group.id} cannot join ${owner}'s context ${context.id}: ${compat.problems.join('; ')}`, {
      group: group.id,
      owner,
      context: context.id,
      problems: compat.problems,
    });
  }
  const out = next === table ? cloneTable(table, [context.id]) : cloneTable(next, [context.id]);
  const ctx = out.contexts.find((c) => c.id === context!.id)!;
  const devices = [...group.devices].sort(compareBdf);
  ctx.groups.push({
    id: group.id,
    devices,
    units: [...new Set(group.units.map((u) => u.name))].sort(),
    unitKind: kindOf(group.units),
    noiommu: group.noiommu,
    reservedRegions: group.reservedRegions.map((r) => ({ ...r })),
  });
  const indices = devices.map((bdf) => ({ index: ctx.nextIndex++, bdf, group: group.id }));
  ctx.devices.push(...indices);
  return { ok: true, table: out, context: ctx, notes: compat.notes, indices };
};

/** Take a group out of the owner's context; its device indices become holes, never reused. */
export const detachGroup = (table: ContextTable, owner: string, groupId: string): ContextResult<{ removed: ContextDevice[] }> => {
  const context = contextOf(table, owner);
  if (!context) return fail('E_CONTEXT', `${owner} has no context`, { owner, group: groupId });
  if (!context.groups.some((g) => g.id === groupId)) {
    const other = contextOfGroup(table, groupId);
    return fail(
      'E_CONTEXT',
      other ? `group ${groupId} is in ${other.owner}'s context ${other.id}, not ${owner}'s` : `group ${groupId} is not in ${owner}'s context ${context.id}`,
      {
        owner,
        group: groupId,
        context: context.id,
        ...(other ? { holder: other.owner } : {}),
      },
    );
  }
  const out = cloneTable(table, [context.id]);
  const ctx = out.contexts.find((c) => c.id === context.id)!;
  const removed = ctx.devices.filter((d) => d.group === groupId);
  ctx.groups = ctx.groups.filter((g) => g.id !== groupId);
  ctx.devices = ctx.devices.filter((d) => d.group !== groupId);
  return { ok: true, table: out, context: ctx, notes: [], removed };
};

/**
 * Merge: move every group of `from`'s context into `into`'s context, then drop the emptied one.
 * An owner has at most one context, so the two contexts necessarily have different owners; the
 * merged context keeps `into`'s owner and id, and the moved groups become that owner's. Moved
 * devices get new indices appended after `into`'s, in their old index order. Every moved group is
 * checked for compatibility first; nothing moves unless all can. The caller must have the policy
 * allow `into`'s owner every moved device, and re-attach the groups' containers (the kernel moves a
 * group between containers only while the user holds none of its devices).
 */
export const mergeContexts = (
  table: ContextTable,
  fromOwner: string,
  intoOwner: string,
  options: { caps?: ReadonlyMap<string, IommuUnitCaps>; iova?: UsableIovaOptions } = {},
): ContextResult<{ moved: { group: string; devices: { bdf: Bdf; from: number; to: number }[] }[]; previousOwner: string }> => {
  if (fromOwner === intoOwner) return fail('E_CONTEXT', `cannot merge ${fromOwner}'s context into itself`, { owner: fromOwner });
  const from = contextOf(table, fromOwner);
  const into = contextOf(table, intoOwner);
  if (!from) return fail('E_CONTEXT', `${fromOwner} has no context`, { owner: fromOwner });
  if (!into) return fail('E_CONTEXT', `${intoOwner} has no context`, { owner: intoOwner });
  const members = [...into.groups];
  const notes: ContextNote[] = [];
  const problems: string[] = [];
  for (const g of from.groups) {
    const facts: GroupFacts = {
      id: g.id,
      devices: g.devices,
      viable: true,
      blockers: [],
      units: g.units.map((name) => ({ name, kind: g.unitKind ?? 'unknown' })),
      noiommu: g.noiommu,
      reservedRegions: g.reservedRegions,
    };
    const c = checkCompatibility(members, facts, options);
    problems.push(...c.problems);
    notes.push(...c.notes);
    members.push(g);
  }
  if (problems.length > 0) {
    return fail('E_INCOMPATIBLE', `cannot merge ${fromOwner}'s context ${from.id} into ${intoOwner}'s context ${into.id}: ${problems.join('; ')}`, {
      from: from.id,
      into: into.id,
      problems,
    });
  }
  const out = cloneTable(table, [from.id, into.id]);
  const src = out.contexts.find((c) => c.id === from.id)!;
  const dst = out.contexts.find((c) => c.id === into.id)!;
  const moved = src.groups.map((g) => ({ group: g.id, devices: [] as { bdf: Bdf; from: number; to: number }[] }));
  for (const d of [...src.devices].sort((a, b) => a.index - b.index)) {
    const to = dst.nextIndex++;
    dst.devices.push({ index: to, bdf: d.bdf, group: d.group });
    moved.find((m) => m.group === d.group)!.devices.push({ bdf: d.bdf, from: d.index, to });
  }
  dst.groups.push(...src.groups);
  out.contexts = out.contexts.filter((c) => c.id !== from.id);
  return { ok: true, table: out, context: dst, notes, moved, previousOwner: fromOwner };
};

/**
 * Destroy the owner's context. A context still holding groups is refused unless `force`, so groups
 * are never orphaned by accident; with `force` the released groups are returned for the caller to
 * release or hold.
 */
export const destroyContext = (table: ContextTable, owner: string, options: { force?: boolean } = {}): ContextResult<{ released: ContextGroup[] }> => {
  const context = contextOf(table, owner);
  if (!context) return fail('E_CONTEXT', `${owner} has no context`, { owner });
  if (context.groups.length > 0 && !options.force) {
    return fail(
      'E_CONTEXT',
      `${owner}'s context ${context.id} still holds group(s) ${context.groups.map((g) => g.id).join(', ')}: detach them first (or force)`,
      {
        owner,
        context: context.id,
        groups: context.groups.map((g) => g.id),
      },
    );
  }
  const out = cloneTable(table);
  out.contexts = out.contexts.filter((c) => c.id !== context.id);
  return { ok: true, table: out, context: null, notes: [], released: context.groups.map(cloneGroup) };
};

/**
 * Bring a held group's device list up to date (hot-added functions, new VFs, removed devices):
 * new devices get fresh indices, vanished ones leave holes.
 */
export const syncGroupDevices = (
  table: ContextTable,
  groupId: string,
  devices: readonly Bdf[],
): ContextResult<{ added: ContextDevice[]; removed: ContextDevice[] }> => {
  const context = contextOfGroup(table, groupId);
  if (!context) return fail('E_CONTEXT', `group ${groupId} is in no context`, { group: groupId });
  for (const bdf of devices) {
    const c = contextOfDevice(table, bdf);
    if (c && !c.devices.some((d) => d.bdf === bdf && d.group === groupId)) {
      return fail('E_CONTEXT', `device ${bdf} is already in group ${c.devices.find((d) => d.bdf === bdf)!.group} of ${c.owner}'s context ${c.id}`, {
        group: groupId,
        device: bdf,
      });
    }
  }
  const out = cloneTable(table, [context.id]);
  const ctx = out.contexts.find((c) => c.id === context.id)!;
  const group = ctx.groups.find((g) => g.id === groupId)!;
  const want = new Set(devices);
  const removed = ctx.devices.filter((d) => d.group === groupId && !want.has(d.bdf));
  ctx.devices = ctx.devices.filter((d) => !removed.includes(d));
  const have = new Set(ctx.devices.filter((d) => d.group === groupId).map((d) => d.bdf));
  const added = [...want]
    .filter((b) => !have.has(b))
    .sort(compareBdf)
    .map((bdf) => ({ index: ctx.nextIndex++, bdf, group: groupId }));
  ctx.devices.push(...added);
  group.devices = [...want].sort(compareBdf);
  return { ok: true, table: out, context: ctx, notes: [], added, removed };
};

/** Every invariant of a table; empty when it is sound. The store refuses to load one that is not. */
export const validateContextTable = (table: ContextTable): string[] => {
  const problems: string[] = [];
  const owners = new Map<string, string>();
  const ids = new Set<string>();
  const groups = new Map<string, string>();
  const devices = new Map<string, string>();
  for (const c of table.contexts) {
    const m = /^ctx-(\d+)$/.exec(c.id);
    if (!m) problems.push(`context id ${JSON.stringify(c.id)} is not ctx-N`);
    else if (Number(m[1]) >= table.nextId) problems.push(`context ${c.id} is not below nextId ${table.nextId}`);
    if (ids.has(c.id)) problems.push(`context id ${c.id} appears twice`);
    ids.add(c.id);
    if (!isOwnerName(c.owner)) problems.push(`context ${c.id}: owner ${JSON.stringify(c.owner)} is not an owner name`);
    if (owners.has(c.owner)) problems.push(`owner ${c.owner} has two contexts (${owners.get(c.owner)} and ${c.id})`);
    owners.set(c.owner, c.id);
    const kinds = new Set(c.groups.map((g) => g.unitKind).filter((k) => k !== null));
    if (kinds.size > 1) problems.push(`context ${c.id} mixes IOMMU driver kinds ${[...kinds].join(', ')}`);
    if (new Set(c.groups.map((g) => g.noiommu)).size > 1) problems.push(`context ${c.id} mixes no-IOMMU and IOMMU groups`);
    for (const g of c.groups) {
      if (groups.has(g.id)) problems.push(`group ${g.id} is in two contexts (${groups.get(g.id)} and ${c.id})`);
      groups.set(g.id, c.id);
      const listed = c.devices
        .filter((d) => d.group === g.id)
        .map((d) => d.bdf)
        .sort(compareBdf);
      const members = [...g.devices].sort(compareBdf);
      if (listed.join(',') !== members.join(','))
        problems.push(`context ${c.id}: group ${g.id} lists devices ${members.join(' ')} but the namespace numbers ${listed.join(' ') || 'none'}`);
    }
    const indices = new Set<number>();
    for (const d of c.devices) {
      if (!Number.isInteger(d.index) || d.index < 0 || d.index >= c.nextIndex)
        problems.push(`context ${c.id}: device ${d.bdf} has index ${d.index}, outside 0..${c.nextIndex - 1}`);
      if (indices.has(d.index)) problems.push(`context ${c.id}: index ${d.index} is used twice`);
      indices.add(d.index);
      if (devices.has(d.bdf)) problems.push(`device ${d.bdf} is in two places (${devices.get(d.bdf)} and ${c.id})`);
      devices.set(d.bdf, c.id);
      if (!c.groups.some((g) => g.id === d.group)) problems.push(`context ${c.id}: device ${d.bdf} names group ${d.group}, which the context does not hold`);
    }
  }
  return problems;
};

// --- keeping the table in step with the journal ------------------------------------------------

/** A finished assignment, as the journal records it. */
export interface AssignedGroup {
  groupId: string;
  owner: string;
  members: readonly Bdf[];
}

/**
 * Bring a table in line with the assignments: an assigned group missing from every context joins its
 * owner's, each held group's device list follows the snapshot (hot-added functions, VFs), and groups no
 * longer assigned leave their context.
 */
export const syncContextTable = (
  table: ContextTable,
  assigned: readonly AssignedGroup[],
  snapshot: HostSnapshot,
  options: AttachOptions = {},
): ContextTable => {
  let t = table;
  for (const a of assigned) {
    if (ownerOfGroup(t, a.groupId) === null) {
      const facts = snapshot.kernelGroups.has(a.groupId) ? groupFacts(snapshot, a.groupId, { viable: true, blockers: [] }) : null;
      const r = attachGroup(
        t,
        a.owner,
        facts?.devices.length ? facts : { id: a.groupId, devices: [...a.members], viable: true, blockers: [], units: [], noiommu: false, reservedRegions: [] },
        options,
      );
      if (r.ok) t = r.table;
    }
    const members = snapshot.kernelGroups.get(a.groupId)?.devices;
    if (members?.length) {
      const r = syncGroupDevices(t, a.groupId, members);
      if (r.ok) t = r.table;
    }
  }
  const live = new Set(assigned.map((a) => a.groupId));
  for (const c of t.contexts) {
    for (const g of c.groups) {
      if (live.has(g.id)) continue;
      const r = detachGroup(t, c.owner, g.id);
      if (r.ok) t = r.table;
    }
  }
  return t;
};

// --- facts from a snapshot ---------------------------------------------------------------------

/**
 * The facts an attach needs, from a snapshot. `viability` overrides the built-in rule (the groups
 * module's verdict, when the caller has one).
 */
export const groupFacts = (snapshot: HostSnapshot, groupId: string, viability?: { viable: boolean; blockers: string[] }): GroupFacts => {
  const kg = snapshot.kernelGroups.get(groupId);
  if (!kg) throw new IsogroupError('E_NOT_FOUND', `no IOMMU group ${JSON.stringify(groupId)} on this host`, { group: groupId });
  const devices = kg.devices.map((b) => snapshot.devices.get(b)).filter((d): d is PciDevice => d !== undefined);
  const blockers = viability?.blockers ?? checkViability(devices).blockers.map((b) => `${b.bdf} is bound to host driver ${b.driver}`);
  const unitNames = [...new Set(devices.map((d) => d.iommu).filter((u): u is string => u !== null))].sort();
  const units = unitNames.map((name) => ({ name, kind: snapshot.iommuUnits.get(name)?.kind ?? 'other' }));
  return {
    id: groupId,
    devices: [...kg.devices].sort(compareBdf),
    viable: viability?.viable ?? blockers.length === 0,
    blockers,
    units,
    // VFIO's no-IOMMU groups (vfio_noiommu_group_alloc) have no IOMMU unit behind any device and no
    // default domain, so sysfs `type` reads "unknown". A group without units whose type is not known
    // (an imported lspci dump) is not called no-IOMMU: its unit is simply unknown.
    noiommu: units.length === 0 && kg.type === 'unknown',
    reservedRegions: kg.reservedRegions.map((r) => ({ ...r })),
  };
};

// --- views -------------------------------------------------------------------------------------

export interface ContextViewDevice {
  index: number;
  bdf: string;
  group: string;
  present: boolean;
  vendor: string | null;
  device: string | null;
  class: string | null;
  driver: string | null;
  isBridge: boolean | null;
}

export interface ContextView {
  context: {
    id: string;
    owner: string;
    groups: { id: string; devices: string[]; iommuUnits: string[]; reservedRegions: { start: string; end: string; type: string }[] }[];
    devices: ContextViewDevice[];
    iovaRanges: IovaRangeJson[];
    aperture: IovaRangeJson;
    iovaMode: 'vfio-type1' | 'strict';
    /** The merged regions subtracted from the aperture. */
    excludedRegions: IovaRangeJson[];
    iommuUnits: { name: string; kind: string; addressWidth: number; source: string }[];
    notes: ContextNote[];
  };
}

export interface ContextViewOptions {
  caps?: ReadonlyMap<string, IommuUnitCaps>;
  iova?: UsableIovaOptions;
}

/** What `contexts show OWNER --json` prints. Reserved regions come from the snapshot when it has the group. */
export const contextView = (table: ContextTable, owner: string, snapshot: HostSnapshot | null, options: ContextViewOptions = {}): ContextView => {
  const c = contextOf(table, owner);
  if (!c) throw new IsogroupError('E_NOT_FOUND', `${owner} has no context`, { owner });
  const notes: ContextNote[] = [];
  const regionsOf = (g: ContextGroup): ReservedRegion[] => {
    const live = snapshot?.kernelGroups.get(g.id);
    if (!live) return g.reservedRegions;
    return live.reservedRegions;
  };
  const unitNames = [...new Set(c.groups.flatMap((g) => g.units))].sort();
  const caps = unitNames.map(
    (n) => options.caps?.get(n) ?? defaultUnitCaps(n, snapshot?.iommuUnits.get(n)?.kind ?? c.groups.find((g) => g.units.includes(n))?.unitKind ?? 'other'),
  );
  if (unitNames.length > 1)
    notes.push({ code: 'separate-domain', message: `the context spans IOMMU units ${unitNames.join(', ')}: one container, separate IOMMU domains` });
  for (const u of caps)
    if (u.source === 'default')
      notes.push({ code: 'default-aperture', message: `IOMMU unit ${u.unit}: address width unknown, assumed ${u.addressWidth} bits` });
  const aperture = contextAperture(caps);
  const all = c.groups.flatMap(regionsOf);
  const usable = usableIova(aperture, all, options.iova);
  for (const r of usable.notExcluded) {
    notes.push({
      code: 'direct-relaxable',
      message: `region 0x${r.start.toString(16)}-0x${r.end.toString(16)} (${r.type}) stays mappable: VFIO does not exclude direct-relaxable regions`,
    });
  }
  for (const g of c.groups) {
    for (const r of regionsOf(g))
      if (r.type === 'direct')
        notes.push({ code: 'direct-region', message: `group ${g.id}: direct-mapped region 0x${r.start.toString(16)}-0x${r.end.toString(16)}` });
    if (g.noiommu) notes.push({ code: 'noiommu', message: `group ${g.id} is a no-IOMMU group: no DMA isolation` });
  }
  const devices = [...c.devices]
    .sort((a, b) => a.index - b.index)
    .map((d): ContextViewDevice => {
      const dev = snapshot?.devices.get(d.bdf);
      return {
        index: d.index,
        bdf: d.bdf,
        group: d.group,
        present: snapshot ? dev !== undefined : true,
        vendor: dev?.vendor ?? null,
        device: dev?.device ?? null,
        class: dev?.class ?? null,
        driver: dev?.driver ?? null,
        isBridge: dev ? dev.isBridge : null,
      };
    });
  return {
    context: {
      id: c.id,
      owner: c.owner,
      groups: c.groups.map((g) => ({
        id: g.id,
        devices: [...g.devices],
        iommuUnits: [...g.units],
        reservedRegions: regionsOf(g).map((r) => ({ ...rangeToJson(r), type: r.type })),
      })),
      devices,
      iovaRanges: rangesToJson(usable.ranges),
      aperture: rangeToJson(aperture),
      iovaMode: options.iova?.mode ?? 'vfio-type1',
      excludedRegions: rangesToJson(normalizeRanges(usable.excluded)),
      iommuUnits: caps.map((u) => ({ name: u.unit, kind: u.kind, addressWidth: u.addressWidth, source: u.source })),
      notes,
    },
  };
};

/** `contexts list --json`: {"contexts":[...]} */
export const contextsListView = (table: ContextTable): { contexts: { id: string; owner: string; groups: string[]; devices: number }[] } => ({
  contexts: table.contexts.map((c) => ({ id: c.id, owner: c.owner, groups: c.groups.map((g) => g.id), devices: c.devices.length })),
});

/** The usable IOVA ranges of an owner's context (bigint form). */
export const contextIova = (table: ContextTable, owner: string, snapshot: HostSnapshot | null, options: ContextViewOptions = {}): IovaRange[] => {
  const v = contextView(table, owner, snapshot, options);
  return v.context.iovaRanges.map((r) => ({ start: BigInt(r.start), end: BigInt(r.end) }));
};

// --- owner views -------------------------------------------------------------------------------

/** A snapshot reduced to the owner's devices and groups (the `--as OWNER` view). */
export const snapshotForOwner = (snapshot: HostSnapshot, table: ContextTable, owner: string): HostSnapshot => {
  const c = contextOf(table, owner);
  const mine = new Set<string>(c ? c.devices.map((d) => d.bdf) : []);
  const groups = new Set<string>(c ? c.groups.map((g) => g.id) : []);
  const keep = <V>(m: Map<Bdf, V>): Map<Bdf, V> => new Map([...m].filter(([b]) => mine.has(b)));
  return {
    ...snapshot,
    devices: keep(snapshot.devices),
    config: keep(snapshot.config),
    kernelGroups: new Map([...snapshot.kernelGroups].filter(([id]) => groups.has(id))),
    iommuUnits: new Map(
      [...snapshot.iommuUnits].map(([n, u]) => [n, { ...u, devices: u.devices.filter((b) => mine.has(b)) }] as const).filter(([, u]) => u.devices.length > 0),
    ),
    // Host-wide problems could name other users' devices: keep only those about the owner's.
    problems: snapshot.problems.filter((p) => [...mine].some((b) => p.file?.includes(b) ?? false)),
  };
};

/**
 * Filter any list (status entries, events) to what the owner may see: items keyed by a group id
 * or a BDF the owner's context holds.
 */
export const filterForOwner = <T>(
  items: readonly T[],
  table: ContextTable,
  owner: string,
  keyOf: (item: T) => { group?: string | null; bdf?: string | null },
): T[] => {
  const c = contextOf(table, owner);
  if (!c) return [];
  const groups = new Set(c.groups.map((g) => g.id));
  const devices = new Set<string>(c.devices.map((d) => d.bdf));
  return items.filter((item) => {
    const k = keyOf(item);
    return (k.group != null && groups.has(k.group)) || (k.bdf != null && devices.has(k.bdf));
  });
};

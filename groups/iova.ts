// Usable IOVA ranges of an IOMMU context: the aperture minus the union of every member group's
// reserved regions. Pure, exact (bigint), inclusive ends, as the kernel's own lists are
// (vfio_iommu_type1.c: vfio_iommu_aper_resize / vfio_iommu_resv_exclude).

import { IsogroupError } from '../errors.js';
import type { ReservedRegion } from '../model/device.js';

/** An inclusive address range [start, end]. */
export interface IovaRange {
  start: bigint;
  end: bigint;
}

/** The JSON form: lower-case hex strings with 0x, e.g. {"start":"0x0","end":"0xfedfffff"}. */
export interface IovaRangeJson {
  start: string;
  end: string;
}

export const U64_MAX = (1n << 64n) - 1n;

/** The aperture used when nothing better is known: 48-bit (4-level page tables). */
export const DEFAULT_ADDRESS_WIDTH = 48;

export const apertureOfWidth = (bits: number): IovaRange => {
  if (!Number.isInteger(bits) || bits < 1 || bits > 64) {
    throw new IsogroupError('E_INVALID_INPUT', `address width ${bits} is not an integer in 1..64`, { bits });
  }
  return { start: 0n, end: (1n << BigInt(bits)) - 1n };
};

export const DEFAULT_APERTURE: IovaRange = apertureOfWidth(DEFAULT_ADDRESS_WIDTH);

const checkRange = (r: IovaRange, where: string): void => {
  if (typeof r.start !== 'bigint' || typeof r.end !== 'bigint' || r.start < 0n || r.end > U64_MAX || r.end < r.start) {
    throw new IsogroupError('E_INVALID_INPUT', `${where}: not a range within 0..2^64-1 with start <= end`, {
      where,
      start: String(r.start),
      end: String(r.end),
    });
  }
};

/** Sort and merge overlapping and adjacent ranges ([0,9] + [10,19] = [0,19]). */
export const normalizeRanges = (ranges: readonly IovaRange[]): IovaRange[] => {
  for (const [i, r] of ranges.entries()) checkRange(r, `range ${i}`);
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.end < b.end ? -1 : a.end > b.end ? 1 : 0));
  const out: IovaRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    // Adjacent counts as touching: last.end + 1 == r.start leaves no usable gap between them.
    if (last && r.start <= last.end + 1n) {
      if (r.end > last.end) last.end = r.end;
    } else {
      out.push({ start: r.start, end: r.end });
    }
  }
  return out;
};

/** Every address in `from` that is in none of `holes`. */
export const subtractRanges = (from: readonly IovaRange[], holes: readonly IovaRange[]): IovaRange[] => {
  const base = normalizeRanges(from);
  const cut = normalizeRanges(holes);
  const out: IovaRange[] = [];
  let j = 0;
  for (const r of base) {
    let start = r.start;
    // Holes are sorted and disjoint; skip those wholly below this range.
    while (j < cut.length && cut[j]!.end < start) j++;
    let k = j;
    while (k < cut.length && cut[k]!.start <= r.end) {
      const h = cut[k]!;
      if (h.start > start) out.push({ start, end: h.start - 1n });
      if (h.end >= r.end) {
        start = r.end + 1n;
        break;
      }
      start = h.end + 1n;
      k++;
    }
    if (start <= r.end) out.push({ start, end: r.end });
  }
  return out;
};

/** Addresses in both sets. */
export const intersectRanges = (a: readonly IovaRange[], b: readonly IovaRange[]): IovaRange[] => {
  const x = normalizeRanges(a);
  const y = normalizeRanges(b);
  const out: IovaRange[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length && j < y.length) {
    const p = x[i]!;
    const q = y[j]!;
    const start = p.start > q.start ? p.start : q.start;
    const end = p.end < q.end ? p.end : q.end;
    if (start <= end) out.push({ start, end });
    if (p.end < q.end) i++;
    else j++;
  }
  return out;
};

/** Number of addresses covered (sum of lengths). */
export const rangesSize = (ranges: readonly IovaRange[]): bigint => normalizeRanges(ranges).reduce((n, r) => n + (r.end - r.start + 1n), 0n);

export type ReservedKind = 'msi' | 'direct' | 'direct-relaxable' | 'reserved';

export interface UsableIovaOptions {
  /**
   * 'vfio-type1' (default): what the kernel's VFIO type1 container reports. It excludes every
   * reserved region except `direct-relaxable` (vfio_iommu_resv_exclude skips
   * IOMMU_RESV_DIRECT_RELAXABLE: USB/GPU RMRRs the device can live without once assigned).
   * 'strict': exclude every region, direct-relaxable included (the brief's conservative view,
   * and what to plan a guest layout against).
   */
  mode?: 'vfio-type1' | 'strict';
}

export interface UsableIova {
  aperture: IovaRange;
  /** Union of the excluded regions, merged. */
  excluded: IovaRange[];
  /** Regions present but not excluded in this mode (direct-relaxable under vfio-type1). */
  notExcluded: ReservedRegion[];
  ranges: IovaRange[];
}

/** The aperture minus the union of the reserved regions of every member group. */
export const usableIova = (aperture: IovaRange, regions: readonly ReservedRegion[], options: UsableIovaOptions = {}): UsableIova => {
  checkRange(aperture, 'aperture');
  const mode = options.mode ?? 'vfio-type1';
  for (const [i, r] of regions.entries()) checkRange(r, `reserved region ${i} (${r.type})`);
  const excludedRegions = regions.filter((r) => mode === 'strict' || r.type !== 'direct-relaxable');
  const notExcluded = regions.filter((r) => !excludedRegions.includes(r));
  const excluded = normalizeRanges(excludedRegions);
  return { aperture: { ...aperture }, excluded, notExcluded: [...notExcluded], ranges: subtractRanges([aperture], excluded) };
};

export const hex = (n: bigint): string => `0x${n.toString(16)}`;

export const rangeToJson = (r: IovaRange): IovaRangeJson => ({ start: hex(r.start), end: hex(r.end) });
export const rangesToJson = (ranges: readonly IovaRange[]): IovaRangeJson[] => ranges.map(rangeToJson);

const HEX_RE = /^0x[0-9a-fA-F]{1,16}$/;

/** Parse the JSON form back (strict: 0x-prefixed hex, start <= end, within 64 bits). */
export const rangeFromJson = (value: unknown, where = 'range'): IovaRange => {
  const v = value as Partial<IovaRangeJson> | null;
  if (typeof v !== 'object' || v === null || typeof v.start !== 'string' || typeof v.end !== 'string' || !HEX_RE.test(v.start) || !HEX_RE.test(v.end)) {
    throw new IsogroupError('E_INVALID_INPUT', `${where}: expected {"start":"0x..","end":"0x.."} with hex strings`, { where, value });
  }
  const r = { start: BigInt(v.start), end: BigInt(v.end) };
  checkRange(r, where);
  return r;
};

export interface IovaDifference {
  equal: boolean;
  /** Addresses we computed as usable that the kernel does not allow. */
  onlyComputed: IovaRange[];
  /** Addresses the kernel allows that we did not compute. */
  onlyKernel: IovaRange[];
}

/** Compare computed ranges with the kernel's (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE), both ways. */
export const compareIovaRanges = (computed: readonly IovaRange[], kernel: readonly IovaRange[]): IovaDifference => {
  const onlyComputed = subtractRanges(computed, kernel);
  const onlyKernel = subtractRanges(kernel, computed);
  return { equal: onlyComputed.length === 0 && onlyKernel.length === 0, onlyComputed, onlyKernel };
};

/** Throw E_IOVA_MISMATCH naming every difference when the kernel disagrees. */
export const assertIovaMatchesKernel = (computed: readonly IovaRange[], kernel: readonly IovaRange[], where = 'context'): void => {
  const d = compareIovaRanges(computed, kernel);
  if (d.equal) return;
  const parts = [
    ...d.onlyComputed.map((r) => `${hex(r.start)}-${hex(r.end)} computed usable but not in the kernel's list`),
    ...d.onlyKernel.map((r) => `${hex(r.start)}-${hex(r.end)} usable per the kernel but not computed`),
  ];
  throw new IsogroupError('E_IOVA_MISMATCH', `${where}: kernel IOVA ranges differ from the computed ones: ${parts.join('; ')}`, {
    where,
    computed: rangesToJson(normalizeRanges(computed)),
    kernel: rangesToJson(normalizeRanges(kernel)),
    onlyComputed: rangesToJson(d.onlyComputed),
    onlyKernel: rangesToJson(d.onlyKernel),
  });
};

// --- IOMMU unit capabilities -------------------------------------------------------------------

/** What an IOMMU unit's registers say about the address space and the context checks (A.3). */
export interface IommuUnitCaps {
  unit: string;
  kind: string;
  /** Input address width of an UNMANAGED (VFIO) domain on this unit, bits. */
  addressWidth: number;
  aperture: IovaRange;
  /** Where the width came from. */
  source: 'intel-cap' | 'default';
  /**
   * A scalable-mode unit with first-stage tables: a kernel that builds VFIO domains on the first
   * stage restricts IOVA to canonical addresses, i.e. 2^(width-1)-1 (paging_domain_alloc). Compare
   * with the kernel's answer (GET_INFO) to know which one it chose.
   */
  firstStageAperture?: IovaRange;
  /** VT-d fields, when decoded. */
  intel?: {
    mgaw: number;
    sagaw: number;
    /** Largest supported page-table width <= 57 bits (agaw_to_width of the highest SAGAW bit). */
    sagawWidth: number | null;
    domains: number;
    snoopControl: boolean;
    interruptRemapping: boolean;
    passThrough: boolean;
    scalableMode: boolean;
    firstStage: boolean;
  };
}

const parseRegister = (text: string, where: string): bigint => {
  const t = text.trim().replace(/^0x/i, '');
  if (!/^[0-9a-fA-F]{1,16}$/.test(t)) {
    throw new IsogroupError('E_INVALID_INPUT', `${where}: ${JSON.stringify(text.trim())} is not a 64-bit hex register value`, { where, value: text });
  }
  return BigInt(`0x${t}`);
};

const field = (reg: bigint, shift: number, mask: number): number => Number((reg >> BigInt(shift)) & BigInt(mask));

/**
 * Decode the VT-d capability (and extended capability) register as sysfs prints them
 * (/sys/class/iommu/dmarN/intel-iommu/{cap,ecap}, hex without 0x). Layout (VT-d spec 11.4.2/11.4.3,
 * include/linux/intel-iommu.h): ND 2:0 (domains = 2^(4+2*ND)), SAGAW 12:8 (bit n = 30+9n-bit tables),
 * MGAW 21:16 (width-1). ECAP: IR bit 3, PT bit 6, SC bit 7, SMTS bit 43, FLTS bit 47.
 * The domain width follows the kernel's paging_domain_alloc(): min(agaw_to_width(iommu->agaw), MGAW),
 * where iommu->agaw is the highest SAGAW bit not above 57 bits.
 */
export const decodeIntelCap = (unit: string, capText: string, ecapText?: string | null): IommuUnitCaps => {
  const cap = parseRegister(capText, `${unit} intel-iommu/cap`);
  const ecap = ecapText === undefined || ecapText === null ? null : parseRegister(ecapText, `${unit} intel-iommu/ecap`);
  const mgaw = field(cap, 16, 0x3f) + 1;
  const sagaw = field(cap, 8, 0x1f);
  let sagawWidth: number | null = null;
  for (let agaw = 3; agaw >= 0; agaw--) {
    // width_to_agaw(57) = 3: levels above 5 are never used by the kernel.
    if (sagaw & (1 << agaw)) {
      sagawWidth = Math.min(30 + agaw * 9, 64);
      break;
    }
  }
  const addressWidth = sagawWidth === null ? mgaw : Math.min(sagawWidth, mgaw);
  const bit = (reg: bigint | null, n: number): boolean => reg !== null && ((reg >> BigInt(n)) & 1n) === 1n;
  const firstStage = bit(ecap, 43) && bit(ecap, 47);
  return {
    unit,
    kind: 'intel',
    addressWidth,
    aperture: apertureOfWidth(addressWidth),
    source: 'intel-cap',
    ...(firstStage && addressWidth > 1 ? { firstStageAperture: apertureOfWidth(addressWidth - 1) } : {}),
    intel: {
      mgaw,
      sagaw,
      sagawWidth,
      domains: 2 ** (4 + 2 * field(cap, 0, 0x7)),
      snoopControl: bit(ecap, 7),
      interruptRemapping: bit(ecap, 3),
      passThrough: bit(ecap, 6),
      scalableMode: bit(ecap, 43),
      firstStage: bit(ecap, 47),
    },
  };
};

/** A unit whose registers are not known (AMD, SMMU, other): the default 48-bit aperture. */
export const defaultUnitCaps = (unit: string, kind: string, width = DEFAULT_ADDRESS_WIDTH): IommuUnitCaps => ({
  unit,
  kind,
  addressWidth: width,
  aperture: apertureOfWidth(width),
  source: 'default',
});

/** The aperture of a context spanning several units: their intersection (the narrowest wins). */
export const contextAperture = (units: readonly IommuUnitCaps[]): IovaRange => {
  if (units.length === 0) return { ...DEFAULT_APERTURE };
  let acc: IovaRange[] = [units[0]!.aperture];
  for (const u of units.slice(1)) acc = intersectRanges(acc, [u.aperture]);
  const first = acc[0];
  if (!first) throw new IsogroupError('E_INCOMPATIBLE', 'the IOMMU units of this context have disjoint apertures', { units: units.map((u) => u.unit) });
  return first;
};

/** Each unit's capabilities from its registers; a unit without readable, well-formed registers gets the default aperture (the view notes it). */
export const unitCapsOf = (units: readonly { name: string; kind: string; cap: string | null; ecap: string | null }[]): Map<string, IommuUnitCaps> => {
  const out = new Map<string, IommuUnitCaps>();
  for (const u of units) {
    let caps: IommuUnitCaps | null = null;
    if (u.kind === 'intel' && u.cap !== null) {
      try {
        caps = decodeIntelCap(u.name, u.cap, u.ecap);
      } catch {
        caps = null; // garbage registers: the default aperture
      }
    }
    out.set(u.name, caps ?? defaultUnitCaps(u.name, u.kind));
  }
  return out;
};

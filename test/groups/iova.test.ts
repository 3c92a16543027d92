import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { scan } from '../../api/read.js';
import { openSession } from '../../api/session.js';
import { isIsogroupError } from '../../errors.js';
import { attachGroup, contextIova, emptyContextTable, groupFacts, orThrow } from '../../groups/context.js';
import {
  apertureOfWidth,
  assertIovaMatchesKernel,
  compareIovaRanges,
  contextAperture,
  decodeIntelCap,
  defaultUnitCaps,
  type IovaRange,
  intersectRanges,
  normalizeRanges,
  rangeFromJson,
  rangesSize,
  rangesToJson,
  subtractRanges,
  unitCapsOf,
  usableIova,
} from '../../groups/iova.js';

const resolveRoot = (root: string): string => openSession({ root }).root;

import type { ReservedRegion } from '../../model/device.js';
import { readIommuRegisters } from '../../sysfs/iommu-caps.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { bundledCapture, fixturesDir } from '../helpers/paths.js';

const r = (start: bigint | number, end: bigint | number): IovaRange => ({ start: BigInt(start), end: BigInt(end) });
const region = (start: bigint | number, end: bigint | number, type: string): ReservedRegion => ({ start: BigInt(start), end: BigInt(end), type });

// Brute force over a small space: the set of addresses, to check the interval arithmetic against.
const toSet = (ranges: IovaRange[]): Set<number> => {
  const s = new Set<number>();
  for (const x of ranges) for (let a = Number(x.start); a <= Number(x.end); a++) s.add(a);
  return s;
};
const fromSet = (s: Set<number>): IovaRange[] => {
  const sorted = [...s].sort((a, b) => a - b);
  const out: IovaRange[] = [];
  for (const a of sorted) {
    const last = out[out.length - 1];
    if (last && BigInt(a) === last.end + 1n) last.end = BigInt(a);
    else out.push(r(a, a));
  }
  return out;
};

describe('interval arithmetic (inclusive ends, exact)', () => {
  it('merges overlapping and adjacent ranges, keeps a one-address gap', () => {
    expect(normalizeRanges([r(10, 19), r(0, 9), r(30, 40), r(35, 50), r(52, 60)])).toEqual([r(0, 19), r(30, 50), r(52, 60)]);
    // 51 is still free between [30,50] and [52,60].
    expect(normalizeRanges([r(5, 5), r(6, 6), r(7, 7)])).toEqual([r(5, 7)]);
    expect(normalizeRanges([r(0, 100), r(10, 20)])).toEqual([r(0, 100)]);
  });

  it('subtracts crafted overlapping and adjacent holes', () => {
    const aperture = r(0, 0xffff);
    const u = usableIova(
      aperture,
      [region(0x100, 0x1ff, 'reserved'), region(0x180, 0x2ff, 'msi'), region(0x300, 0x3ff, 'direct'), region(0xff00, 0xffff, 'reserved')],
      { mode: 'strict' },
    );
    expect(u.excluded).toEqual([r(0x100, 0x3ff), r(0xff00, 0xffff)]);
    expect(u.ranges).toEqual([r(0, 0xff), r(0x400, 0xfeff)]);
    expect(rangesToJson(u.ranges)).toEqual([
      { start: '0x0', end: '0xff' },
      { start: '0x400', end: '0xfeff' },
    ]);
  });

  it('a hole covering the aperture start, end, or all of it', () => {
    expect(subtractRanges([r(0, 99)], [r(0, 0)])).toEqual([r(1, 99)]);
    expect(subtractRanges([r(0, 99)], [r(99, 200)])).toEqual([r(0, 98)]);
    expect(subtractRanges([r(10, 20)], [r(0, 100)])).toEqual([]);
    expect(subtractRanges([r(10, 20)], [r(21, 30), r(0, 9)])).toEqual([r(10, 20)]);
  });

  it('agrees with brute force on random small inputs', () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const mk = (k: number): IovaRange[] =>
        Array.from({ length: k }, () => {
          const a = rnd(64);
          return r(a, a + rnd(12));
        });
      const a = mk(1 + rnd(4));
      const b = mk(rnd(6));
      const sa = toSet(a);
      const sb = toSet(b);
      expect(subtractRanges(a, b)).toEqual(fromSet(new Set([...sa].filter((x) => !sb.has(x)))));
      expect(intersectRanges(a, b)).toEqual(fromSet(new Set([...sa].filter((x) => sb.has(x)))));
      expect(normalizeRanges([...a, ...b])).toEqual(fromSet(new Set([...sa, ...sb])));
      expect(rangesSize(a)).toBe(BigInt(sa.size));
    }
  });

  it('is exact at 64 bits (no float rounding)', () => {
    const top = (1n << 64n) - 1n;
    const u = usableIova(r(0, top), [region(top - 1n, top, 'reserved'), region(0x1n, 0x1n, 'msi')]);
    expect(u.ranges).toEqual([r(0, 0), r(2n, top - 2n)]);
    expect(rangesToJson(u.ranges)[1]).toEqual({ start: '0x2', end: '0xfffffffffffffffd' });
  });

  it('refuses malformed ranges with a typed error', () => {
    expect(() => normalizeRanges([r(5, 4)])).toThrow(expect.objectContaining({ code: 'E_INVALID_INPUT' }));
    expect(() => usableIova(r(0, 10), [region(-1n, 3n, 'msi')])).toThrow(/reserved region 0 \(msi\)/);
    expect(() => rangeFromJson({ start: '0x10', end: '0x1' })).toThrow(expect.objectContaining({ code: 'E_INVALID_INPUT' }));
    expect(() => rangeFromJson({ start: '16', end: '0x20' })).toThrow(/hex strings/);
    expect(rangeFromJson({ start: '0x0', end: '0xfedfffff' })).toEqual(r(0, 0xfedfffff));
  });
});

describe('kernel comparison', () => {
  it('reports differences both ways and throws E_IOVA_MISMATCH', () => {
    const computed = [r(0, 0xfedfffff), r(0xfef00000, 0x7fffffffff)];
    expect(compareIovaRanges(computed, [r(0, 0xfedfffff), r(0xfef00000, 0x7fffffffff)]).equal).toBe(true);
    // Kernel splits the same set differently: still equal.
    expect(compareIovaRanges(computed, [r(0, 0xfe000000), r(0xfe000001, 0xfedfffff), r(0xfef00000, 0x7fffffffff)]).equal).toBe(true);
    const kernel = [r(0x1000000, 0xfedfffff), r(0xfef00000, 0xffffffffffff)];
    const d = compareIovaRanges(computed, kernel);
    expect(d.equal).toBe(false);
    expect(d.onlyComputed).toEqual([r(0, 0xffffff)]);
    expect(d.onlyKernel).toEqual([r(0x8000000000n, 0xffffffffffffn)]);
    try {
      assertIovaMatchesKernel(computed, kernel, 'alice');
      expect.unreachable();
    } catch (error) {
      expect(isIsogroupError(error) && error.code).toBe('E_IOVA_MISMATCH');
      expect((error as Error).message).toContain('0x0-0xffffff computed usable but not in the kernel');
      expect((error as Error).message).toContain('0x8000000000-0xffffffffffff usable per the kernel');
    }
  });
});

describe('IOMMU unit capabilities', () => {
  it('decodes the VT-d cap register (QEMU intel-iommu: 39-bit)', () => {
    const c = decodeIntelCap('dmar0', 'd2008c22260286\n', 'f00f4a\n');
    expect(c.intel).toMatchObject({
      mgaw: 39,
      sagaw: 0b00010,
      sagawWidth: 39,
      domains: 65536,
      interruptRemapping: true,
      snoopControl: false,
      passThrough: true,
    });
    expect(c.addressWidth).toBe(39);
    expect(c.aperture).toEqual(r(0, 0x7fffffffff));
    // Legacy mode (no SMTS): no first-stage alternative.
    expect(c.firstStageAperture).toBeUndefined();
    // Scalable mode with first-stage tables (ECAP bits 43 and 47): canonical half as the alternative.
    const sm = decodeIntelCap('dmar0', 'd2008c22260286', ((1n << 43n) | (1n << 47n) | 0xf00f4an).toString(16));
    expect(sm.intel).toMatchObject({ scalableMode: true, firstStage: true });
    expect(sm.firstStageAperture).toEqual(r(0, 0x3fffffffff));
  });

  it('takes the smaller of SAGAW and MGAW, and the highest SAGAW level <= 57 bits', () => {
    // SAGAW bits 1+2 (39 and 48 bit), MGAW field 47 -> 48 bits.
    const cap48 = ((0b00110n << 8n) | (47n << 16n)).toString(16);
    expect(decodeIntelCap('dmar1', cap48).addressWidth).toBe(48);
    // SAGAW allows 57 (bit 3) but MGAW says 48.
    const capNarrow = ((0b01100n << 8n) | (47n << 16n)).toString(16);
    expect(decodeIntelCap('dmar2', capNarrow).addressWidth).toBe(48);
    // SAGAW 57-bit, MGAW 57.
    const cap57 = ((0b01000n << 8n) | (56n << 16n)).toString(16);
    expect(decodeIntelCap('dmar3', cap57).aperture.end).toBe((1n << 57n) - 1n);
    expect(() => decodeIntelCap('dmar4', 'zz')).toThrow(/dmar4 intel-iommu\/cap/);
  });

  it('a context spanning units gets the narrowest aperture', () => {
    expect(contextAperture([defaultUnitCaps('ivhd0', 'amd'), decodeIntelCap('dmar0', 'd2008c22260286')])).toEqual(apertureOfWidth(39));
    expect(contextAperture([])).toEqual(apertureOfWidth(48));
  });
});

describe('real reserved_regions from the captures', () => {
  const snap = scan({ root: bundledCapture('mixed'), pciIds: null });

  it('reads every group file through scan(), and the sysfs text matches', () => {
    // The same cached unpacked root scan() read (read-only use).
    const dir = resolveRoot(bundledCapture('mixed'));
    for (const [id, g] of snap.kernelGroups) {
      const text = fs.readFileSync(path.join(dir, 'sys/kernel/iommu_groups', id, 'reserved_regions'), 'utf8');
      const lines = text.trim().split('\n').filter(Boolean);
      expect(g.reservedRegions.length).toBe(lines.length);
      for (const [i, line] of lines.entries()) {
        const [s, e, t] = line.split(/\s+/);
        expect(g.reservedRegions[i]).toEqual({ start: BigInt(s!), end: BigInt(e!), type: t });
      }
    }
  });

  it("the MSI window leaves two usable ranges in the 39-bit space of the capture's dmar0", () => {
    // The same cached unpacked root scan() read (read-only use).
    const dir = resolveRoot(bundledCapture('mixed'));
    const caps = unitCapsOf(readIommuRegisters(new NodeSysfsPort(dir), snap));
    expect(caps.get('dmar0')?.source).toBe('intel-cap');
    const aperture = contextAperture([...caps.values()]);
    expect(aperture).toEqual(r(0, 0x7fffffffff));
    const g23 = snap.kernelGroups.get('23')!;
    expect(g23.reservedRegions.map((x) => x.type)).toEqual(['msi']);
    const u = usableIova(aperture, g23.reservedRegions);
    expect(rangesToJson(u.ranges)).toEqual([
      { start: '0x0', end: '0xfedfffff' },
      { start: '0xfef00000', end: '0x7fffffffff' },
    ]);
  });

  it('the LPC group 15 has a direct-relaxable region: kept by vfio-type1, excluded in strict mode', () => {
    const g15 = snap.kernelGroups.get('15')!;
    const relaxable = g15.reservedRegions.find((x) => x.type === 'direct-relaxable')!;
    expect(relaxable).toEqual(region(0, 0xffffff, 'direct-relaxable'));
    const aperture = apertureOfWidth(39);
    const type1 = usableIova(aperture, g15.reservedRegions);
    expect(type1.notExcluded).toEqual([relaxable]);
    expect(type1.ranges[0]).toEqual(r(0, 0xfedfffff));
    const strict = usableIova(aperture, g15.reservedRegions, { mode: 'strict' });
    expect(rangesToJson(strict.ranges)).toEqual([
      { start: '0x1000000', end: '0xfedfffff' },
      { start: '0xfef00000', end: '0x7fffffffff' },
    ]);
  });

  it('the union over several groups (identical MSI windows merge; the direct region only in strict mode)', () => {
    for (const name of ['mixed', 'noacs', 'mixed-vfio'] as const) {
      const s = name === 'mixed' ? snap : scan({ root: bundledCapture(name), pciIds: null });
      const all = [...s.kernelGroups.values()].flatMap((g) => g.reservedRegions);
      expect(all.length).toBeGreaterThan(s.kernelGroups.size);
      const strict = usableIova(apertureOfWidth(39), all, { mode: 'strict' });
      expect(strict.excluded).toEqual([r(0, 0xffffff), r(0xfee00000, 0xfeefffff)]);
      expect(rangesSize(strict.ranges)).toBe((1n << 39n) - 0x1000000n - 0x100000n);
    }
  });
});

// What a real kernel answered (fixtures/kernel/iova-ranges-6.1.json: VFIO_IOMMU_GET_INFO on 6.1 under
// QEMU's intel-iommu, the same topology as the mixed capture): the computed ranges must be equal, for
// a merged two-group container and for the LPC group whose direct-relaxable region VFIO keeps usable.
describe("computed ranges equal a real kernel's VFIO_IOMMU_GET_INFO", () => {
  const recorded = JSON.parse(fs.readFileSync(path.join(fixturesDir, 'kernel', 'iova-ranges-6.1.json'), 'utf8')) as {
    cases: { label: string; groups: string[]; members: string[]; kernelIovaRanges: { start: string; end: string }[] }[];
  };
  const snap = scan({ root: bundledCapture('mixed-vfio'), pciIds: null });
  const caps = unitCapsOf(readIommuRegisters(new NodeSysfsPort(resolveRoot(bundledCapture('mixed-vfio'))), snap));

  it.each(recorded.cases)('$label (groups $groups)', ({ groups, members, kernelIovaRanges }) => {
    // Same groups with the same members as on the machine the kernel answered on.
    expect(groups.flatMap((g) => snap.kernelGroups.get(g)!.devices).sort()).toEqual([...members].sort());
    let t = emptyContextTable();
    // Viability is irrelevant to the arithmetic (the capture has the LPC group on host drivers).
    for (const g of groups) t = orThrow(attachGroup(t, 'kt', { ...groupFacts(snap, g), viable: true, blockers: [] })).table;
    const computed = contextIova(t, 'kt', snap, { caps });
    const kernel = kernelIovaRanges.map((r) => rangeFromJson(r));
    expect(() => assertIovaMatchesKernel(computed, kernel, groups.join('+'))).not.toThrow();
    expect(computed).toEqual(kernel);
    // Strict mode would disagree wherever a direct-relaxable region exists: VFIO does not exclude it.
    const strict = contextIova(t, 'kt', snap, { caps, iova: { mode: 'strict' } });
    const relaxable = groups.some((g) => snap.kernelGroups.get(g)!.reservedRegions.some((r) => r.type === 'direct-relaxable'));
    expect(compareIovaRanges(strict, kernel).equal).toBe(!relaxable);
  });
});

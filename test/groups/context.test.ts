import { describe, expect, it } from 'vitest';
import { scan } from '../../api/read.js';
import {
  attachGroup,
  type ContextTable,
  checkCompatibility,
  contextIova,
  contextOf,
  contextsListView,
  contextView,
  createContext,
  destroyContext,
  detachGroup,
  emptyContextTable,
  filterForOwner,
  type GroupFacts,
  groupFacts,
  mergeContexts,
  orThrow,
  ownerOfDevice,
  ownerOfGroup,
  snapshotForOwner,
  syncGroupDevices,
  validateContextTable,
} from '../../groups/context.js';
import { decodeIntelCap, type IommuUnitCaps } from '../../groups/iova.js';
import type { Bdf } from '../../model/bdf.js';
import { bundledCapture } from '../helpers/paths.js';

// mixed-vfio: groups 19, 22, 23 hold devices on vfio-pci (viable); 20 has virtio-pci (not viable).
const snap = scan({ root: bundledCapture('mixed-vfio'), pciIds: null });
const caps = new Map<string, IommuUnitCaps>([['dmar0', decodeIntelCap('dmar0', 'd2008c22260286', 'f00f4a')]]);

const facts = (overrides: Partial<GroupFacts> & { id: string }): GroupFacts => ({
  devices: [`0000:${overrides.id.padStart(2, '0')}:00.0` as Bdf],
  viable: true,
  blockers: [],
  units: [{ name: 'dmar0', kind: 'intel' }],
  noiommu: false,
  reservedRegions: [{ start: 0xfee00000n, end: 0xfeefffffn, type: 'msi' }],
  ...overrides,
});

const attach = (t: ContextTable, owner: string, id: string): ContextTable => orThrow(attachGroup(t, owner, groupFacts(snap, id), { caps })).table;

describe('facts from a real capture', () => {
  it('reads members, units, regions and viability', () => {
    const g23 = groupFacts(snap, '23');
    expect(g23).toMatchObject({
      id: '23',
      devices: ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'],
      viable: true,
      blockers: [],
      units: [{ name: 'dmar0', kind: 'intel' }],
      noiommu: false,
    });
    const g20 = groupFacts(snap, '20');
    expect(g20.viable).toBe(false);
    expect(g20.blockers).toEqual(['0000:07:00.0 is bound to host driver virtio-pci']);
    // The bridge on pcieport does not block group 19.
    expect(groupFacts(snap, '19').viable).toBe(true);
    expect(() => groupFacts(snap, '999')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
  });

  it('calls a group no-IOMMU only when no unit backs it and it has no default domain (type "unknown")', () => {
    const kg = snap.kernelGroups.get('23')!;
    const strip = (type: string | null) => ({
      ...snap,
      devices: new Map([...snap.devices].map(([b, d]) => [b, kg.devices.includes(b) ? { ...d, iommu: null } : d])),
      kernelGroups: new Map([...snap.kernelGroups, ['23', { ...kg, type }]]),
    });
    expect(groupFacts(strip('unknown'), '23')).toMatchObject({ noiommu: true, units: [] });
    // An imported dump has groups but no unit links and no type: unknown unit, not no-IOMMU.
    expect(groupFacts(strip(null), '23')).toMatchObject({ noiommu: false, units: [] });
    expect(groupFacts(snap, '23').noiommu).toBe(false);
  });
});

describe('invariants', () => {
  it('a group in two contexts is refused', () => {
    const t = attach(emptyContextTable(), 'alice', '23');
    const r = attachGroup(t, 'bob', groupFacts(snap, '23'));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe('E_CONTEXT');
    expect(r.error.message).toContain("belongs to alice's context ctx-1");
    expect(r.error.details).toMatchObject({ group: '23', owner: 'alice' });
    // The same owner attaching it twice is refused too, never silently repeated.
    const again = attachGroup(t, 'alice', groupFacts(snap, '23'));
    expect(!again.ok && again.error.code).toBe('E_CONTEXT');
  });

  it('a device already held under another group id is refused', () => {
    const t = attach(emptyContextTable(), 'alice', '23');
    const r = attachGroup(t, 'bob', facts({ id: '77', devices: ['0000:0b:00.1' as Bdf] }));
    expect(!r.ok && r.error.message).toContain('device 0000:0b:00.1 of group 77 is already in alice');
  });

  it('an owner with two contexts is refused', () => {
    const t = orThrow(createContext(emptyContextTable(), 'alice')).table;
    const r = createContext(t, 'alice');
    expect(!r.ok && r.error.code).toBe('E_CONTEXT');
    expect(!r.ok && r.error.message).toContain('an owner has at most one context');
    // Attaching more groups reuses the one context.
    const t2 = attach(attach(t, 'alice', '23'), 'alice', '22');
    expect(t2.contexts).toHaveLength(1);
    expect(contextOf(t2, 'alice')!.groups.map((g) => g.id)).toEqual(['23', '22']);
  });

  it('a non-viable group is refused with its blockers', () => {
    const r = attachGroup(emptyContextTable(), 'alice', groupFacts(snap, '20'));
    expect(!r.ok && r.error.code).toBe('E_NOT_VIABLE');
    expect(!r.ok && r.error.details.blockers).toEqual(['0000:07:00.0 is bound to host driver virtio-pci']);
  });

  it('operations never mutate their input table', () => {
    const t = attach(emptyContextTable(), 'alice', '23');
    const before = JSON.stringify(t, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
    attach(t, 'alice', '22');
    detachGroup(t, 'alice', '23');
    destroyContext(t, 'alice', { force: true });
    expect(JSON.stringify(t, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))).toBe(before);
  });

  it('validateContextTable finds every broken invariant', () => {
    const t = attach(attach(emptyContextTable(), 'alice', '23'), 'bob', '22');
    expect(validateContextTable(t)).toEqual([]);
    const broken = structuredClone(t);
    broken.contexts[1]!.owner = 'alice';
    broken.contexts[1]!.groups.push(structuredClone(broken.contexts[0]!.groups[0]!));
    broken.contexts[1]!.devices.push({ index: 0, bdf: '0000:0b:00.0' as Bdf, group: '23' });
    const problems = validateContextTable(broken);
    expect(problems.some((p) => p.includes('owner alice has two contexts'))).toBe(true);
    expect(problems.some((p) => p.includes('group 23 is in two contexts'))).toBe(true);
    expect(problems.some((p) => p.includes('index 0 is used twice'))).toBe(true);
    expect(problems.some((p) => p.includes('device 0000:0b:00.0 is in two places'))).toBe(true);
  });

  it('rejects bad owner names and group ids with E_INVALID_INPUT', () => {
    const bad = attachGroup(emptyContextTable(), '../etc', groupFacts(snap, '23'));
    expect(!bad.ok && bad.error.code).toBe('E_INVALID_INPUT');
    const badId = attachGroup(emptyContextTable(), 'alice', facts({ id: '1/../2' }));
    expect(!badId.ok && badId.error.code).toBe('E_INVALID_INPUT');
  });
});

describe('device namespace', () => {
  it('numbers devices 0..n-1 in attach order; detach leaves holes that are never reused', () => {
    let t = attach(emptyContextTable(), 'alice', '23');
    t = attach(t, 'alice', '19');
    const ctx = contextOf(t, 'alice')!;
    expect(ctx.devices.map((d) => [d.index, d.bdf])).toEqual([
      [0, '0000:0b:00.0'],
      [1, '0000:0b:00.1'],
      [2, '0000:0b:00.2'],
      [3, '0000:05:00.0'],
      [4, '0000:06:00.0'],
    ]);
    const det = orThrow(detachGroup(t, 'alice', '23'));
    expect(det.removed.map((d) => d.index)).toEqual([0, 1, 2]);
    t = det.table;
    // The survivors keep their numbers; the next group starts after the highest ever given.
    t = attach(t, 'alice', '22');
    expect(contextOf(t, 'alice')!.devices.map((d) => [d.index, d.bdf])).toEqual([
      [3, '0000:05:00.0'],
      [4, '0000:06:00.0'],
      [5, '0000:09:00.0'],
      [6, '0000:0a:01.0'],
      [7, '0000:0a:02.0'],
      [8, '0000:0a:03.0'],
    ]);
    // Even re-attaching the detached group does not give back 0..2.
    t = attach(t, 'alice', '23');
    expect(
      contextOf(t, 'alice')!
        .devices.filter((d) => d.group === '23')
        .map((d) => d.index),
    ).toEqual([9, 10, 11]);
    expect(validateContextTable(t)).toEqual([]);
  });

  it('an emptied context keeps its counter until destroyed', () => {
    let t = attach(emptyContextTable(), 'alice', '23');
    t = orThrow(detachGroup(t, 'alice', '23')).table;
    expect(contextOf(t, 'alice')).toMatchObject({ id: 'ctx-1', groups: [], devices: [], nextIndex: 3 });
    t = attach(t, 'alice', '19');
    expect(contextOf(t, 'alice')!.devices[0]!.index).toBe(3);
  });

  it('syncGroupDevices numbers a hot-added function and drops a removed one', () => {
    const t = attach(emptyContextTable(), 'alice', '23');
    const r = orThrow(syncGroupDevices(t, '23', ['0000:0b:00.0', '0000:0b:00.2', '0000:0b:00.3'] as Bdf[]));
    expect(r.added).toEqual([{ index: 3, bdf: '0000:0b:00.3', group: '23' }]);
    expect(r.removed).toEqual([{ index: 1, bdf: '0000:0b:00.1', group: '23' }]);
    expect(contextOf(r.table, 'alice')!.groups[0]!.devices).toEqual(['0000:0b:00.0', '0000:0b:00.2', '0000:0b:00.3']);
    expect(validateContextTable(r.table)).toEqual([]);
    const other = attach(r.table, 'bob', '22');
    const stolen = syncGroupDevices(other, '23', ['0000:0a:01.0'] as Bdf[]);
    expect(!stolen.ok && stolen.error.code).toBe('E_CONTEXT');
  });
});

describe('detach, merge, destroy', () => {
  it('detach refuses a group the owner does not hold, naming the holder', () => {
    const t = attach(attach(emptyContextTable(), 'alice', '23'), 'bob', '22');
    const r = detachGroup(t, 'alice', '22');
    expect(!r.ok && r.error.message).toContain("group 22 is in bob's context ctx-2, not alice's");
    const none = detachGroup(t, 'carol', '22');
    expect(!none.ok && none.error.message).toBe('carol has no context');
  });

  it('merge moves every group into the target context, renumbering after its devices', () => {
    let t = attach(emptyContextTable(), 'alice', '19');
    t = attach(t, 'bob', '23');
    const m = orThrow(mergeContexts(t, 'bob', 'alice', { caps }));
    expect(m.table.contexts.map((c) => c.owner)).toEqual(['alice']);
    expect(m.previousOwner).toBe('bob');
    expect(m.moved).toEqual([
      {
        group: '23',
        devices: [
          { bdf: '0000:0b:00.0', from: 0, to: 2 },
          { bdf: '0000:0b:00.1', from: 1, to: 3 },
          { bdf: '0000:0b:00.2', from: 2, to: 4 },
        ],
      },
    ]);
    expect(ownerOfGroup(m.table, '23')).toBe('alice');
    expect(ownerOfDevice(m.table, '0000:0b:00.2')).toBe('alice');
    expect(validateContextTable(m.table)).toEqual([]);
    // ctx-2 is gone and its number is not handed out again.
    const c = orThrow(createContext(m.table, 'bob'));
    expect(c.context!.id).toBe('ctx-3');
  });

  it('merge refuses itself, missing contexts and incompatible groups, moving nothing', () => {
    let t = attach(emptyContextTable(), 'alice', '19');
    expect(!mergeContexts(t, 'alice', 'alice').ok).toBe(true);
    expect(mergeContexts(t, 'bob', 'alice')).toMatchObject({ ok: false });
    t = orThrow(attachGroup(t, 'bob', facts({ id: '40', units: [{ name: 'ivhd0', kind: 'amd' }] }))).table;
    const r = mergeContexts(t, 'bob', 'alice');
    expect(!r.ok && r.error.code).toBe('E_INCOMPATIBLE');
    expect(t.contexts).toHaveLength(2);
  });

  it('destroy refuses a context that still holds groups unless forced', () => {
    const t = attach(emptyContextTable(), 'alice', '23');
    const r = destroyContext(t, 'alice');
    expect(!r.ok && r.error.message).toContain('still holds group(s) 23');
    const forced = orThrow(destroyContext(t, 'alice', { force: true }));
    expect(forced.released.map((g) => g.id)).toEqual(['23']);
    expect(forced.table.contexts).toEqual([]);
    const emptied = orThrow(detachGroup(t, 'alice', '23')).table;
    expect(orThrow(destroyContext(emptied, 'alice')).table.contexts).toEqual([]);
  });
});

describe('compatibility (anchors A.3)', () => {
  const member = (f: GroupFacts) => orThrow(attachGroup(emptyContextTable(), 'x', f)).context!.groups[0]!;

  it('refuses mixing no-IOMMU and IOMMU groups', () => {
    const t = orThrow(attachGroup(emptyContextTable(), 'alice', facts({ id: '1' }))).table;
    const r = attachGroup(t, 'alice', facts({ id: '2', units: [], noiommu: true, reservedRegions: [] }));
    expect(!r.ok && r.error.code).toBe('E_INCOMPATIBLE');
    expect(!r.ok && r.error.message).toContain('refuses to mix them in one container (EPERM)');
  });

  it('refuses a different IOMMU driver kind', () => {
    const c = checkCompatibility([member(facts({ id: '1' }))], facts({ id: '2', units: [{ name: 'ivhd0', kind: 'amd' }] }));
    expect(c.compatible).toBe(false);
    expect(c.problems[0]).toContain("behind a amd IOMMU, the context's groups behind intel");
  });

  it('allows another unit of the same kind, noting the separate domain', () => {
    const c = checkCompatibility([member(facts({ id: '1' }))], facts({ id: '2', units: [{ name: 'dmar1', kind: 'intel' }] }));
    expect(c.compatible).toBe(true);
    expect(c.notes.map((n) => n.code)).toContain('separate-domain');
    // Same unit: no note.
    expect(checkCompatibility([member(facts({ id: '1' }))], facts({ id: '2' })).notes).toEqual([]);
  });

  it('notes snoop-control differences, missing interrupt remapping and direct regions', () => {
    const noSc = decodeIntelCap('dmar0', 'd2008c22260286', '0');
    const sc = decodeIntelCap('dmar1', 'd2008c22260286', 'f00fca');
    const c = checkCompatibility(
      [member(facts({ id: '1' }))],
      facts({ id: '2', units: [{ name: 'dmar1', kind: 'intel' }], reservedRegions: [{ start: 0x1000n, end: 0x1fffn, type: 'direct' }] }),
      {
        caps: new Map([
          ['dmar0', noSc],
          ['dmar1', sc],
        ]),
      },
    );
    expect(c.notes.map((n) => n.code).sort()).toEqual(['coherency-split', 'direct-region', 'separate-domain']);
    const ir = checkCompatibility([], facts({ id: '3' }), { caps: new Map([['dmar0', noSc]]) });
    expect(ir.notes.map((n) => n.code)).toEqual(['no-interrupt-remapping']);
  });

  it('refuses a group whose reserved regions leave no usable IOVA', () => {
    const c = checkCompatibility([], facts({ id: '1', reservedRegions: [{ start: 0n, end: (1n << 48n) - 1n, type: 'reserved' }] }));
    expect(c.compatible).toBe(false);
    expect(c.problems[0]).toContain('no usable IOVA');
  });
});

describe('views', () => {
  it('contexts show OWNER --json', () => {
    let t = attach(emptyContextTable(), 'alice', '23');
    t = attach(t, 'alice', '19');
    const v = contextView(t, 'alice', snap, { caps });
    expect(v.context).toMatchObject({
      id: 'ctx-1',
      owner: 'alice',
      groups: [
        {
          id: '23',
          devices: ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'],
          iommuUnits: ['dmar0'],
          reservedRegions: [{ start: '0xfee00000', end: '0xfeefffff', type: 'msi' }],
        },
        { id: '19', devices: ['0000:05:00.0', '0000:06:00.0'] },
      ],
      iovaRanges: [
        { start: '0x0', end: '0xfedfffff' },
        { start: '0xfef00000', end: '0x7fffffffff' },
      ],
      aperture: { start: '0x0', end: '0x7fffffffff' },
      iommuUnits: [{ name: 'dmar0', kind: 'intel', addressWidth: 39, source: 'intel-cap' }],
      notes: [],
    });
    expect(v.context.devices.map((d) => [d.index, d.bdf, d.driver, d.present])).toEqual([
      [0, '0000:0b:00.0', 'vfio-pci', true],
      [1, '0000:0b:00.1', 'vfio-pci', true],
      [2, '0000:0b:00.2', 'vfio-pci', true],
      [3, '0000:05:00.0', 'pcieport', true],
      [4, '0000:06:00.0', 'vfio-pci', true],
    ]);
    // Plain JSON: no bigints left.
    expect(JSON.parse(JSON.stringify(v))).toEqual(v);
    expect(contextIova(t, 'alice', snap, { caps })).toEqual([
      { start: 0n, end: 0xfedfffffn },
      { start: 0xfef00000n, end: 0x7fffffffffn },
    ]);
    expect(() => contextView(t, 'bob', snap)).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
  });

  it('without unit caps or a snapshot it falls back to the stored regions and a noted 48-bit default', () => {
    const t = attach(emptyContextTable(), 'alice', '23');
    const v = contextView(t, 'alice', null);
    expect(v.context.aperture).toEqual({ start: '0x0', end: '0xffffffffffff' });
    expect(v.context.iovaRanges[1]).toEqual({ start: '0xfef00000', end: '0xffffffffffff' });
    expect(v.context.notes.map((n) => n.code)).toEqual(['default-aperture']);
    expect(v.context.devices[0]).toMatchObject({ present: true, driver: null });
  });

  it('lists contexts', () => {
    const t = attach(attach(emptyContextTable(), 'alice', '23'), 'bob', '22');
    expect(contextsListView(t)).toEqual({
      contexts: [
        { id: 'ctx-1', owner: 'alice', groups: ['23'], devices: 3 },
        { id: 'ctx-2', owner: 'bob', groups: ['22'], devices: 4 },
      ],
    });
  });

  it('an owner sees only its own devices and groups', () => {
    const t = attach(attach(emptyContextTable(), 'alice', '23'), 'bob', '22');
    const a = snapshotForOwner(snap, t, 'alice');
    expect([...a.devices.keys()]).toEqual(['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2']);
    expect([...a.kernelGroups.keys()]).toEqual(['23']);
    expect([...a.config.keys()]).toEqual(['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2']);
    expect(a.iommuUnits.get('dmar0')!.devices).toEqual(['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2']);
    const nobody = snapshotForOwner(snap, t, 'carol');
    expect(nobody.devices.size + nobody.kernelGroups.size + nobody.iommuUnits.size).toBe(0);
    const status = [{ group: '23', owner: 'alice' }, { group: '22', owner: 'bob' }, { bdf: '0000:0a:01.0' }, { bdf: '0000:0b:00.1' }];
    expect(filterForOwner(status, t, 'alice', (s) => ({ group: s.group ?? null, bdf: s.bdf ?? null }))).toEqual([
      { group: '23', owner: 'alice' },
      { bdf: '0000:0b:00.1' },
    ]);
    expect(filterForOwner(status, t, 'carol', (s) => ({ group: s.group ?? null }))).toEqual([]);
  });
});

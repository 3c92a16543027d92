import { describe, expect, it } from 'vitest';
import { scan } from '../../api/read.js';
import { isIsogroupError } from '../../errors.js';
import { type DeviceFacts, evaluateDevice, evaluateGroup, formatIssuePath, type Policy, parsePolicy } from '../../groups/policy.js';
import type { Subject } from '../../model/owner.js';
import { bundledCapture } from '../helpers/paths.js';

const alice: Subject = { name: 'alice', uid: 1000, gids: [1000, 44] };
const bob: Subject = { name: 'bob', uid: 1001, gids: [1001] };
const root: Subject = { name: 'root', uid: 0, gids: [0] };

const dev = (o: Partial<DeviceFacts> = {}): DeviceFacts => ({
  bdf: '0000:0b:00.0',
  vendor: '0x8086',
  device: '0x10d3',
  class: '0x020000',
  kernelGroup: '23',
  iommu: 'dmar0',
  ...o,
});

const issuesOf = (value: unknown): { path: string; message: string }[] => {
  try {
    parsePolicy(value, 'test.yaml');
  } catch (error) {
    if (isIsogroupError(error) && error.code === 'E_POLICY_INVALID') return error.details.issues as { path: string; message: string }[];
    throw error;
  }
  throw new Error('policy was accepted');
};

describe('schema: errors point at the field', () => {
  it('rules[2].allow.selector.vendor: expected 4 hex digits', () => {
    const issues = issuesOf({
      rules: [
        { allow: { owners: [{ name: 'alice' }], selector: { all: true } } },
        { deny: { owners: [{ uid: 1001 }], selector: { class: '03' } } },
        { allow: { owners: [{ gid: 44 }], selector: { vendor: '10de0' } } },
      ],
    });
    expect(issues).toEqual([{ path: 'rules[2].allow.selector.vendor', message: 'expected 4 hex digits' }]);
    expect(() => parsePolicy({ rules: [{}, {}, { allow: { owners: [{ gid: 44 }], selector: { vendor: 'xyz' } } }] }, 'p.yaml')).toThrow(
      /^p\.yaml: .*rules\[2\]\.allow\.selector\.vendor: expected 4 hex digits/,
    );
  });

  it('names each bad field', () => {
    const issues = issuesOf({
      rules: [
        { allow: { owners: [{ name: 'alice', uid: 3 }], selector: { bdf: '../../etc' } } },
        { allow: { owners: [], selector: {} }, deny: { owners: [{ any: true }], selector: { all: true } } },
        { deny: { owners: [{ uid: -1 }], selector: { class: '0x0300', classMask: 'ff0000' } } },
        { permit: {} },
      ],
      extra: 1,
    });
    const paths = issues.map((i) => `${i.path}: ${i.message}`);
    expect(paths).toContain('rules[0].allow.owners[0]: expected exactly one of name, uid, gid, any');
    expect(paths).toContain('rules[0].allow.selector.bdf: expected a BDF DDDD:BB:DD.F (e.g. 0000:01:00.0)');
    expect(paths).toContain('rules[1].allow.owners: expected at least one owner');
    expect(paths).toContain('rules[1].allow.selector: expected at least one of all, bdf, vendor, device, id, class, group, iommu');
    expect(paths).toContain('rules[1]: expected exactly one of allow, deny');
    expect(paths).toContain('rules[2].deny.owners[0].uid: expected uid >= 0');
    expect(paths).toContain('rules[2].deny.selector.classMask: classMask needs a 6-digit class');
    expect(paths.some((p) => p.startsWith('rules[3]') && p.includes('permit'))).toBe(true);
    expect(paths.some((p) => p.includes('extra'))).toBe(true);
  });

  it('formats paths', () => {
    expect(formatIssuePath(['rules', 2, 'allow', 'selector', 'vendor'])).toBe('rules[2].allow.selector.vendor');
    expect(formatIssuePath([])).toBe('');
  });
});

const policy = (rules: unknown[]): Policy => parsePolicy({ version: 1, rules }, 'test');

describe('evaluation: deny-overrides, default deny except root', () => {
  it('default: root allowed, everyone else denied', () => {
    const p = policy([]);
    expect(evaluateDevice(p, root, dev())).toMatchObject({ allowed: true, rule: null, effect: 'default-allow' });
    const d = evaluateDevice(p, alice, dev());
    expect(d).toMatchObject({ allowed: false, rule: null, effect: 'default-deny' });
    expect(d.reason).toContain('no rule allows alice (uid 1000) device 0000:0b:00.0');
  });

  it('allow by name, uid or gid, and by each selector kind', () => {
    const p = policy([
      { allow: { owners: [{ name: 'alice' }], selector: { id: '8086:10d3' } } },
      { allow: { owners: [{ uid: 1001 }], selector: { class: '02' } } },
      { allow: { owners: [{ gid: 44 }], selector: { group: 22 } } },
      { allow: { owners: [{ name: 'bob' }], selector: { bdf: ['0000:0c:00.0', '0000:0d:00.0'] } } },
      { allow: { owners: [{ name: 'bob' }], selector: { iommu: 'dmar7' } } },
      { allow: { owners: [{ name: 'carol' }], selector: { class: '0x0c0330', classMask: 'ffff00' } } },
    ]);
    expect(evaluateDevice(p, alice, dev())).toMatchObject({ allowed: true, rule: 0 });
    expect(evaluateDevice(p, alice, dev({ device: '0x10d4', kernelGroup: '22' }))).toMatchObject({ allowed: true, rule: 2 });
    expect(evaluateDevice(p, alice, dev({ device: '0x10d4' }))).toMatchObject({ allowed: false, effect: 'default-deny' });
    expect(evaluateDevice(p, bob, dev({ class: '0x020000' }))).toMatchObject({ allowed: true, rule: 1 });
    expect(evaluateDevice(p, bob, dev({ class: '0x030000' }))).toMatchObject({ allowed: false });
    expect(evaluateDevice(p, bob, dev({ class: '0x030000', bdf: '0000:0d:00.0' }))).toMatchObject({ allowed: true, rule: 3 });
    expect(evaluateDevice(p, bob, dev({ class: '0x030000', iommu: 'dmar7' }))).toMatchObject({ allowed: true, rule: 4 });
    const carol: Subject = { name: 'carol', uid: 1002, gids: [] };
    // Mask ffff00 ignores the prog-if byte: xHCI 0c0330 matches 0c0320 (EHCI) too.
    expect(evaluateDevice(p, carol, dev({ class: '0x0c0320' }))).toMatchObject({ allowed: true, rule: 5 });
    expect(evaluateDevice(p, carol, dev({ class: '0x0c0500' }))).toMatchObject({ allowed: false });
  });

  it('a deny anywhere overrides any allow, whatever the order; the lowest matching deny is reported', () => {
    const allowAll = { allow: { owners: [{ any: true }], selector: { all: true } } };
    const denyGpu = { deny: { owners: [{ gid: 44 }], selector: { class: '03' } }, comment: 'no GPUs for group 44' };
    const gpu = dev({ class: '0x030000', vendor: '0x10de' });
    for (const p of [policy([allowAll, denyGpu]), policy([denyGpu, allowAll])]) {
      const d = evaluateDevice(p, alice, gpu);
      expect(d.allowed).toBe(false);
      expect(d.effect).toBe('deny');
      expect(p.rules[d.rule!]!.effect).toBe('deny');
      expect(d.reason).toContain('no GPUs for group 44');
      expect(evaluateDevice(p, bob, gpu).allowed).toBe(true);
    }
    const two = policy([allowAll, { deny: { owners: [{ name: 'alice' }], selector: { vendor: '10de' } } }, denyGpu]);
    expect(evaluateDevice(two, alice, gpu).rule).toBe(1);
  });

  it('an explicit deny applies to root too', () => {
    const p = policy([{ deny: { owners: [{ uid: 0 }], selector: { bdf: '0000:00:1f.2' } } }]);
    expect(evaluateDevice(p, root, dev({ bdf: '0000:00:1f.2' }))).toMatchObject({ allowed: false, rule: 0 });
    expect(evaluateDevice(p, root, dev())).toMatchObject({ allowed: true, effect: 'default-allow' });
  });

  it('a whole group is allowed only if every device is', () => {
    const p = policy([{ allow: { owners: [{ name: 'alice' }], selector: { vendor: '8086' } } }]);
    const ok = evaluateGroup(p, alice, [dev({ bdf: '0000:0b:00.0' }), dev({ bdf: '0000:0b:00.1' })]);
    expect(ok).toMatchObject({ allowed: true, rule: 0 });
    const mixed = evaluateGroup(p, alice, [
      dev({ bdf: '0000:0b:00.0' }),
      dev({ bdf: '0000:0b:00.1', vendor: '0x1af4' }),
      dev({ bdf: '0000:0b:00.2', vendor: '0x1af4' }),
    ]);
    expect(mixed.allowed).toBe(false);
    expect(mixed.devices.map((d) => d.allowed)).toEqual([true, false, false]);
    expect(mixed.reason).toContain('0000:0b:00.1');
    expect(mixed.reason).toContain('and 1 more device(s) refused');
    expect(evaluateGroup(p, alice, []).allowed).toBe(false);
  });

  it('works on a real group from a capture (bridge included)', () => {
    const snap = scan({ root: bundledCapture('mixed-vfio'), pciIds: null });
    const members = snap.kernelGroups.get('19')!.devices.map((b) => snap.devices.get(b)!);
    const byGroup = policy([{ allow: { owners: [{ name: 'alice' }], selector: { group: '19' } } }]);
    expect(evaluateGroup(byGroup, alice, members)).toMatchObject({ allowed: true, rule: 0 });
    // Allowing only the NIC by id leaves the downstream port 05:00.0 denied, so the group is refused.
    const byId = policy([{ allow: { owners: [{ name: 'alice' }], selector: { id: '8086:10d3' } } }]);
    const d = evaluateGroup(byId, alice, members);
    expect(d.allowed).toBe(false);
    expect(d.devices.find((x) => !x.allowed)!.bdf).toBe('0000:05:00.0');
  });
});

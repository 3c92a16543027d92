import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../bench/config-builder.js';
import { type FixtureDeviceSpec, writeFixtureRoot } from '../../capture/fixture-writer.js';
import { runCli } from '../../cli/main.js';
import { bundledCapture } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

const run = async (...argv: string[]) => {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
};

// The CLI reports disagreement through process.exitCode; never let it leak out of a test.
afterEach(() => {
  process.exitCode = undefined;
});

/** Config space: ids, class, header type, optional PCIe capability (port type) and ACS (cap, ctrl). */
const cfg = (o: {
  vendor?: number;
  device?: number;
  cls?: number;
  bridge?: [number, number, number];
  pcieType?: number;
  acs?: [number, number];
  mf?: boolean;
}): Uint8Array => {
  const b = new Uint8Array(o.pcieType === undefined ? 256 : 4096);
  const w16 = (off: number, v: number) => {
    b[off] = v & 0xff;
    b[off + 1] = (v >> 8) & 0xff;
  };
  w16(0, o.vendor ?? 0x1b36);
  w16(2, o.device ?? 0x0001);
  const cls = o.cls ?? (o.bridge ? 0x060400 : 0x020000);
  b[0x09] = cls & 0xff;
  b[0x0a] = (cls >> 8) & 0xff;
  b[0x0b] = (cls >> 16) & 0xff;
  b[0x0e] = (o.bridge ? 1 : 0) | (o.mf ? 0x80 : 0);
  if (o.bridge) [b[0x18], b[0x19], b[0x1a]] = o.bridge;
  if (o.pcieType !== undefined) {
    w16(0x06, 0x10);
    b[0x34] = 0x40;
    b[0x40] = 0x10;
    w16(0x42, 2 | (o.pcieType << 4));
    if (o.acs) {
      w16(0x100, 0x000d);
      w16(0x102, 0x0001);
      w16(0x104, o.acs[0]);
      w16(0x106, o.acs[1]);
    }
  }
  return b;
};

const fixture = (groups: Record<string, string | null>): string => {
  const root = tmpDir();
  const devices: FixtureDeviceSpec[] = [
    { bdf: '0000:00:01.0', config: cfg({ bridge: [0, 1, 1], pcieType: 4, acs: [0x1f, 0x1f] }), driver: 'pcieport' },
    { bdf: '0000:01:00.0', parent: '0000:00:01.0', config: cfg({ pcieType: 0 }), driver: 'e1000e' },
    { bdf: '0000:00:02.0', config: cfg({ pcieType: 9, device: 0x0002 }), driver: null },
  ].map((d) => ({ ...d, group: groups[d.bdf] ?? null }));
  writeFixtureRoot(root, { devices, iommuUnits: ['dmar0'] });
  return root;
};

describe('isogroup groups', () => {
  it('--compare --json on a real capture agrees and exits 0', async () => {
    const r = await run('groups', '--compare', '--json', '--root', bundledCapture('mixed'));
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ agree: true, kernelGroups: 26, derivedGroups: 26, mismatches: [] });
  });

  it('--json prints each group with id, devices, viability, blockers and reasons', async () => {
    const r = await run('groups', '--json', '--root', bundledCapture('mixed-vfio'));
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as {
      source: string;
      groups: { id: string; devices: string[]; viable: boolean; blockers: { bdf: string; driver: string }[]; reasons: { device: string; rule: string }[] }[];
    };
    expect(out.source).toBe('kernel');
    const g23 = out.groups.find((g) => g.devices.includes('0000:0b:00.0'))!;
    expect(g23).toMatchObject({ viable: true, blockers: [], devices: ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'] });
    expect(g23.reasons.map((x) => x.rule)).toEqual(['isolated', 'multifunction', 'multifunction']);
    const nvme = out.groups.find((g) => g.devices.includes('0000:02:00.0'))!;
    expect(nvme).toMatchObject({ viable: false, blockers: [{ bdf: '0000:02:00.0', driver: 'nvme' }] });
  });

  it('--derived --explain tells an operator why devices share a group', async () => {
    const r = await run('groups', '--derived', '--explain', '--root', bundledCapture('noacs'));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('13 derived group(s)');
    expect(r.stdout).toContain('0000:0a:00.0 joined 0000:00:1c.0: root port 00:1c.0: no ACS capability [acs-path]');
    expect(r.stdout).toMatch(/functions 00:1c\.0\/\.1\/\.2\/\.3 share a multifunction slot without ACS/);
    expect(r.stdout).toContain('notes:');
  });

  it("--assume-acs: what if the switch's root port isolated", async () => {
    const before = JSON.parse((await run('groups', '--derived', '--json', '--root', bundledCapture('noacs'))).stdout);
    const r = await run('groups', '--derived', '--json', '--assume-acs', '0000:00:04.0', '--root', bundledCapture('noacs'));
    expect(r.code).toBe(0);
    const after = JSON.parse(r.stdout) as { groups: { devices: string[] }[]; notes: string[] };
    const sets = after.groups.map((g) => g.devices.join(' '));
    expect(sets).toContain('0000:00:04.0');
    expect(sets).toContain('0000:01:00.0');
    expect(sets).toContain('0000:02:00.0 0000:03:00.0');
    expect(after.groups.length).toBe(before.groups.length + 3);
    expect(after.notes.join(' ')).toContain('what-if: ACS assumed on 0000:00:04.0');
  });

  it('--rules acs-rework widens the switch group (every downstream port lacks ACS)', async () => {
    const r = await run('groups', '--derived', '--json', '--rules', 'acs-rework', '--root', bundledCapture('mixed'));
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { rules: string; groups: { devices: string[] }[] };
    expect(out.rules).toBe('acs-rework');
    expect(out.groups.map((g) => g.devices.join(' '))).toContain('0000:04:00.0 0000:05:00.0 0000:05:01.0 0000:05:02.0 0000:06:00.0 0000:07:00.0');
  });

  it('--compare exits 1 and names the devices, both groupings and the rule when they differ', async () => {
    const root = fixture({ '0000:00:01.0': '0', '0000:00:02.0': '0', '0000:01:00.0': '1' });
    const r = await run('groups', '--compare', '--json', '--root', root);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout);
    expect(out.agree).toBe(false);
    expect(out.mismatches).toHaveLength(1);
    expect(out.mismatches[0]).toMatchObject({
      devices: ['0000:00:01.0', '0000:00:02.0'],
      kernel: [{ id: '0', devices: ['0000:00:01.0', '0000:00:02.0'] }],
      rule: 'isolated',
    });
    expect(out.mismatches[0].derived).toHaveLength(2);
    const text = await run('groups', '--compare', '--root', root);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain('DISAGREE: 1 of 2 kernel groups match');
  });

  it('--compare on an AMD-Vi host names an IVRS alias as the likely cause of a same-bus join', async () => {
    const root = tmpDir();
    writeFixtureRoot(root, {
      devices: [
        { bdf: '0000:00:00.2', config: cfg({ vendor: 0x1022, device: 0x1481, cls: 0x080600, pcieType: 9 }), group: null },
        { bdf: '0000:00:08.0', config: cfg({ vendor: 0x1022, device: 0x1482, cls: 0x060000, pcieType: 9 }), group: '3' },
        { bdf: '0000:00:09.0', config: cfg({ vendor: 0x1022, device: 0x1482, cls: 0x060000, pcieType: 9 }), group: '3' },
      ],
      iommuUnits: ['ivhd0'],
    });
    const r = await run('groups', '--compare', '--json', '--root', root);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout);
    expect(out.mismatches[0].explanation).toContain('possibly an AMD IVRS alias entry');
    expect(out.onlyKernel).toEqual([]);
  });

  it('--compare on a host without kernel groups says so (E_NO_IOMMU, exit 1)', async () => {
    const r = await run('groups', '--compare', '--root', fixture({}));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('E_NO_IOMMU: no kernel IOMMU groups');
    const d = await run('groups', '--root', fixture({}));
    expect(d.code).toBe(0);
    expect(d.stdout).toContain('3 derived group(s)');
  });

  it('bad options are usage errors; a non-BDF never reaches the filesystem', async () => {
    expect((await run('groups', '--rules', 'zen', '--root', bundledCapture('mixed'))).code).toBe(2);
    const bad = await run('groups', '--assume-acs', '../../etc', '--root', bundledCapture('mixed'));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('E_INVALID_BDF');
    const missing = await run('groups', '--assume-acs', '0000:7f:00.0', '--root', bundledCapture('mixed'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('E_NOT_FOUND');
    expect((await run('groups', '--kernel', '--derived', '--root', bundledCapture('mixed'))).code).toBe(2);
  });

  it('show <BDF> gains the derived group and its reason', async () => {
    const r = await run('show', '0000:07:00.0', '--root', bundledCapture('mixed'));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('derived:    group 20 members 0000:05:01.0 0000:07:00.0');
    expect(r.stdout).toContain('why:        0000:07:00.0 joined 0000:05:01.0: switch downstream port 05:01.0: no ACS capability [acs-path]');
  });
});

describe('groups on a root without an IOMMU', () => {
  it("says the groups are predicted, not the kernel's", async () => {
    const root = tmpDir();
    writeFixtureRoot(root, {
      devices: [{ bdf: '0000:00:02.0', config: buildConfig({ vendor: 0x1af4, device: 0x1042, classCode: 0x010000 }), driver: 'virtio-pci' }],
    });
    let out = '';
    const code = await runCli(['groups', '--root', root], { stdout: (s) => (out += s), stderr: () => undefined });
    expect(code).toBe(0);
    expect(out).toMatch(/1 derived group\(s\)/);
    expect(out).toMatch(/note: no IOMMU is active under .*: these groups are predicted/);
  });
});

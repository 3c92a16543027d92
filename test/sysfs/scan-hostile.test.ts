import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../bench/config-builder.js';
import { type FixtureSpec, writeFixtureRoot } from '../../capture/fixture-writer.js';
import { IsogroupError } from '../../errors.js';
import type { Bdf } from '../../model/bdf.js';
import { NodeSysfsPort, type SysfsPort } from '../../sysfs/port.js';
import { scanHost } from '../../sysfs/scan.js';
import { tmpDir } from '../helpers/tmp.js';

// A small healthy host: a root port with ACS, an endpoint behind it, and a device on the root bus.
const baseSpec = (): FixtureSpec => ({
  devices: [
    {
      bdf: '0000:00:01.0',
      config: buildConfig({
        vendor: 0x8086,
        device: 0x1901,
        classCode: 0x060400,
        bridge: true,
        secondary: 1,
        subordinate: 1,
        pcieType: 4,
        acs: { cap: 0x1f, ctrl: 0x1d },
      }),
      driver: 'pcieport',
      group: '1',
    },
    {
      bdf: '0000:01:00.0',
      parent: '0000:00:01.0',
      config: buildConfig({ vendor: 0x10de, device: 0x2204, classCode: 0x030000, pcieType: 0 }),
      driver: 'nvidia',
      group: '2',
    },
    { bdf: '0000:00:1f.0', config: buildConfig({ vendor: 0x8086, device: 0xa305, classCode: 0x060100 }), driver: 'lpc_ich', group: '3' },
  ],
});

const fixture = (mutate?: (root: string) => void): string => {
  const root = tmpDir();
  writeFixtureRoot(root, baseSpec());
  mutate?.(root);
  return root;
};

const devDir = (root: string, rel: string): string => path.join(root, 'sys/devices/pci0000:00', rel);
const bdf = (s: string): Bdf => s as Bdf;
const enoent = (rel: string): IsogroupError => new IsogroupError('E_DEVICE_GONE', `read ${rel}: ENOENT`, { path: rel, errno: 'ENOENT' });

// Wraps a port; `fail(op, rel)` may throw before the real call (EACCES, EIO, or a deletion race).
class FaultyPort implements SysfsPort {
  constructor(
    private readonly inner: SysfsPort,
    private readonly fail: (op: string, rel: string) => void,
  ) {}
  get root(): string {
    return this.inner.root;
  }
  readText(rel: string): string {
    this.fail('readText', rel);
    return this.inner.readText(rel);
  }
  readBytes(rel: string): Buffer {
    this.fail('readBytes', rel);
    return this.inner.readBytes(rel);
  }
  readLink(rel: string): string {
    this.fail('readLink', rel);
    return this.inner.readLink(rel);
  }
  list(rel: string) {
    this.fail('list', rel);
    return this.inner.list(rel);
  }
  kind(rel: string) {
    return this.inner.kind(rel);
  }
  exists(rel: string): boolean {
    return this.inner.exists(rel);
  }
  writeText(rel: string, text: string): void {
    this.inner.writeText(rel, text);
  }
}

describe('scan of a hostile root', () => {
  it('the healthy fixture scans clean (so every problem below comes from its mutation)', () => {
    const snap = scanHost(new NodeSysfsPort(fixture()));
    expect(snap.devices.size).toBe(3);
    expect(snap.problems).toEqual([]);
    for (const d of snap.devices.values()) expect(d.problems).toEqual([]);
  });

  it('a missing attribute file falls back to config space without a crash', () => {
    const root = fixture((r) => {
      fs.rmSync(devDir(r, '0000:00:01.0/0000:01:00.0/vendor'));
      fs.rmSync(devDir(r, '0000:00:01.0/0000:01:00.0/numa_node'));
    });
    const d = scanHost(new NodeSysfsPort(root)).devices.get(bdf('0000:01:00.0'))!;
    expect(d.vendor).toBe('0x10de');
    expect(d.numaNode).toBeNull();
    expect(d.driver).toBe('nvidia');
  });

  it('an unreadable attribute (EACCES) is a problem naming the file, and the rest of the device loads', () => {
    const root = fixture();
    const port = new FaultyPort(new NodeSysfsPort(root), (_op, rel) => {
      if (rel.endsWith('0000:01:00.0/driver_override')) throw new IsogroupError('E_PERMISSION', `read ${rel}: EACCES`, { path: rel, errno: 'EACCES' });
    });
    const snap = scanHost(port);
    const d = snap.devices.get(bdf('0000:01:00.0'))!;
    expect(d.problems).toEqual([expect.objectContaining({ code: 'unreadable', file: 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/driver_override' })]);
    expect(d.problems[0]!.message).toContain('EACCES');
    expect(d.driverOverride).toBeNull();
    expect(d.kernelGroup).toBe('2');
  });

  it('an unreadable config (EIO) leaves ids from the attributes and ACS unknown', () => {
    const root = fixture();
    const port = new FaultyPort(new NodeSysfsPort(root), (op, rel) => {
      if (op === 'readBytes' && rel.endsWith('0000:00:01.0/config')) throw new IsogroupError('E_SYSFS_IO', `read ${rel}: EIO`, { path: rel, errno: 'EIO' });
    });
    const d = scanHost(port).devices.get(bdf('0000:00:01.0'))!;
    expect(d.vendor).toBe('0x8086');
    expect(d.acs).toBeNull();
    expect(d.acsKnown).toBe(false);
    expect(d.problems.map((p) => p.code)).toContain('unreadable');
  });

  it('garbage in vendor is reported and the id is taken from config space', () => {
    const root = fixture((r) => fs.writeFileSync(devDir(r, '0000:00:1f.0/vendor'), '../../etc/passwd\u0000\n'));
    const d = scanHost(new NodeSysfsPort(root)).devices.get(bdf('0000:00:1f.0'))!;
    expect(d.vendor).toBe('0x8086');
    expect(d.problems).toEqual([expect.objectContaining({ code: 'bad-attribute', file: 'sys/devices/pci0000:00/0000:00:1f.0/vendor' })]);
  });

  it('a vendor attribute that disagrees with config space is reported', () => {
    const root = fixture((r) => fs.writeFileSync(devDir(r, '0000:00:1f.0/vendor'), '0x1022\n'));
    const d = scanHost(new NodeSysfsPort(root)).devices.get(bdf('0000:00:1f.0'))!;
    expect(d.problems.map((p) => p.code)).toEqual(['id-mismatch']);
  });

  it('a dangling device symlink is reported and skipped', () => {
    const root = fixture((r) => fs.symlinkSync('../../../devices/pci0000:00/0000:00:05.0', path.join(r, 'sys/bus/pci/devices/0000:00:05.0')));
    const snap = scanHost(new NodeSysfsPort(root));
    expect(snap.devices.size).toBe(3);
    expect(snap.problems).toEqual([expect.objectContaining({ code: 'dangling-link', file: 'sys/bus/pci/devices/0000:00:05.0' })]);
  });

  it('a looping device symlink is reported and skipped', () => {
    const root = fixture((r) => {
      fs.symlinkSync('0000:00:07.0', path.join(r, 'sys/bus/pci/devices/0000:00:06.0'));
      fs.symlinkSync('0000:00:06.0', path.join(r, 'sys/bus/pci/devices/0000:00:07.0'));
    });
    const snap = scanHost(new NodeSysfsPort(root));
    expect(snap.devices.size).toBe(3);
    expect(snap.problems.map((p) => [p.code, p.file])).toEqual([
      ['link-loop', 'sys/bus/pci/devices/0000:00:06.0'],
      ['link-loop', 'sys/bus/pci/devices/0000:00:07.0'],
    ]);
  });

  it('a device symlink pointing out of the root is refused', () => {
    const root = fixture((r) => fs.symlinkSync('../../../../../../../../etc', path.join(r, 'sys/bus/pci/devices/0000:00:08.0')));
    const snap = scanHost(new NodeSysfsPort(root));
    expect(snap.devices.has(bdf('0000:00:08.0'))).toBe(false);
    expect(snap.problems.map((p) => p.code)).toEqual(['link-outside-root']);
  });

  it('a non-BDF entry in sys/bus/pci/devices is reported, never used as a path', () => {
    const root = fixture((r) => fs.mkdirSync(path.join(r, 'sys/bus/pci/devices/..evil')));
    const snap = scanHost(new NodeSysfsPort(root));
    expect(snap.problems.map((p) => p.code)).toEqual(['bad-entry']);
  });

  it('a truncated 64-byte config is reported as such and ACS is unknown', () => {
    const root = fixture((r) => {
      const f = devDir(r, '0000:00:01.0/config');
      fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 64));
    });
    const d = scanHost(new NodeSysfsPort(root)).devices.get(bdf('0000:00:01.0'))!;
    expect(d.configSize).toBe(64);
    expect(d.acs).toBeNull();
    expect(d.acsKnown).toBe(false);
    expect(d.portType).toBe('unknown');
    expect(d.secondaryBus).toBe(1);
    expect(d.problems.map((p) => p.code)).toContain('short-config');
    expect(d.problems.find((p) => p.code === 'short-config')!.message).toMatch(/64 bytes/);
  });

  it('a config whose capability pointers loop or leave the buffer is reported, not followed', () => {
    const root = fixture((r) => {
      const f = devDir(r, '0000:00:01.0/0000:01:00.0/config');
      const b = fs.readFileSync(f);
      b[0x91] = 0x40; // MSI -> back to the PCIe capability
      b.writeUInt32LE(0x00010001 | (0x7fc << 20), 0x100); // AER -> 0x7fc, then a loop there
      b.writeUInt32LE(0x0001000d | (0x7fc << 20), 0x7fc);
      fs.writeFileSync(f, b);
      const g = devDir(r, '0000:00:1f.0/config');
      const c = fs.readFileSync(g);
      c[0x34] = 0xfc;
      fs.writeFileSync(g, c.subarray(0, 0xf0));
    });
    const snap = scanHost(new NodeSysfsPort(root));
    const ep = snap.devices.get(bdf('0000:01:00.0'))!;
    expect(ep.problems.map((p) => p.code).sort()).toEqual(['cap-loop', 'ext-cap-loop']);
    expect(ep.portType).toBe('endpoint');
    expect(snap.devices.get(bdf('0000:00:1f.0'))!.problems.map((p) => p.code)).toEqual(['cap-out-of-range']);
  });

  it('a device that vanishes between listing and reading is noted and skipped (ENOENT)', () => {
    const root = fixture();
    const victim = 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0';
    let removed = false;
    const port = new FaultyPort(new NodeSysfsPort(root), (op, rel) => {
      // The directory was listed; before its first attribute read, the kernel removes it (hot-unplug).
      if (!removed && op !== 'list' && rel.startsWith(`${victim}/`)) {
        fs.rmSync(path.join(root, victim), { recursive: true, force: true });
        removed = true;
        throw enoent(rel);
      }
    });
    const snap = scanHost(port);
    expect(removed).toBe(true);
    expect(snap.devices.has(bdf('0000:01:00.0'))).toBe(false);
    expect([...snap.devices.keys()]).toEqual(['0000:00:01.0', '0000:00:1f.0']);
    expect(snap.problems).toContainEqual(expect.objectContaining({ code: 'device-gone', file: victim }));
  });

  it('a device whose directory listing fails with ENOENT is noted and skipped', () => {
    const root = fixture();
    const port = new FaultyPort(new NodeSysfsPort(root), (op, rel) => {
      if (op === 'list' && rel === 'sys/devices/pci0000:00/0000:00:1f.0') throw enoent(rel);
    });
    const snap = scanHost(port);
    expect(snap.devices.has(bdf('0000:00:1f.0'))).toBe(false);
    expect(snap.problems).toContainEqual(expect.objectContaining({ code: 'device-gone' }));
  });

  it('a root without sys/bus/pci says so instead of failing', () => {
    const snap = scanHost(new NodeSysfsPort(tmpDir()));
    expect(snap.devices.size).toBe(0);
    expect(snap.problems.map((p) => p.code)).toEqual(['no-pci-bus']);
  });

  it('a malformed reserved_regions line is reported', () => {
    const root = fixture((r) => fs.writeFileSync(path.join(r, 'sys/kernel/iommu_groups/2/reserved_regions'), '0x10 0x0f msi\nnot a region\n'));
    const snap = scanHost(new NodeSysfsPort(root));
    expect(snap.kernelGroups.get('2')!.reservedRegions).toEqual([]);
    expect(snap.problems.map((p) => p.code)).toEqual(['bad-attribute', 'bad-attribute']);
  });

  it('groups with the same reserved_regions text each get their own regions, and each its own problems', () => {
    const bad = '0x10 0x0f msi\n0x00000000fee00000 0x00000000feefffff msi\n';
    const root = fixture((r) => {
      fs.writeFileSync(path.join(r, 'sys/kernel/iommu_groups/1/reserved_regions'), bad);
      fs.writeFileSync(path.join(r, 'sys/kernel/iommu_groups/2/reserved_regions'), bad);
    });
    const snap = scanHost(new NodeSysfsPort(root));
    expect(snap.problems.map((p) => p.file)).toEqual(['sys/kernel/iommu_groups/1/reserved_regions', 'sys/kernel/iommu_groups/2/reserved_regions']);
    expect(snap.kernelGroups.get('2')!.reservedRegions).toEqual([{ start: 0xfee00000n, end: 0xfeefffffn, type: 'msi' }]);
    // The same clean text (the writer's default for every group): equal regions, not shared objects.
    const clean = scanHost(new NodeSysfsPort(fixture()));
    const [one, two, three] = ['1', '2', '3'].map((id) => clean.kernelGroups.get(id)!.reservedRegions);
    expect(one!.length).toBeGreaterThan(0);
    expect([two, three]).toEqual([one, one]);
    one![0]!.type = 'changed';
    expect([two![0]!.type, three![0]!.type]).not.toContain('changed');
  });
});

import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { writeFixtureRoot } from '../../capture/fixture-writer.js';
import { type IsogroupError, isIsogroupError } from '../../errors.js';
import { synthConfig } from '../../sim/config.js';
import { openSimulatedRoot } from '../../sim/index.js';
import { findHostUse } from '../../sysfs/host-use.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { scanHost } from '../../sysfs/scan.js';
import { fastTmpDir } from '../helpers/sim-root.js';

// Each host-use refusal on a small fixture root whose proc/ and sys/ files say what the host uses.
// Devices 00:0N.0 each sit alone in group N.

const conf = (cls = 0x020000) => synthConfig({ vendor: 0x8086, device: 0x10d3, classCode: cls, pcie: false });

const build = (): string => {
  const root = path.join(fastTmpDir(), 'root');
  const dev = (n: number, driver: string, extra: Record<string, unknown> = {}) => ({
    bdf: `0000:00:0${n}.0`,
    config: conf(),
    driver,
    group: String(n),
    iommu: 'dmar0',
    ...extra,
  });
  writeFixtureRoot(root, {
    devices: [
      dev(1, 'ahci', { children: ['ata1/host0/target0:0:0/0:0:0:0/block/sdb'] }), // mounted partition
      dev(2, 'ahci', { children: ['ata2/host1/target1:0:0/1:0:0:0/block/sdc'] }), // swap
      dev(3, 'nvme', { children: ['nvme/nvme0/block/nvme0n1'] }), // held by device-mapper, which is mounted
      dev(4, 'ahci', { children: ['ata3/host2/target2:0:0/2:0:0:0/block/sda'] }), // root filesystem
      dev(5, 'e1000e', { children: ['net/eth0'] }), // up, default route
      dev(6, 'e1000e', { children: ['net/eth1'] }), // down
      dev(7, 'i915', { attrs: { boot_vga: '1\n' } }), // boot VGA
      dev(8, 'bochs-drm'), // console framebuffer
      dev(9, 'e1000e'), // unused
    ],
  });
  const w = (rel: string, text: string): void => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  w('sys/block/sdb/sdb1/partition', '1\n');
  w('sys/block/sdc/dev', '8:32\n');
  fs.mkdirSync(path.join(root, 'sys/block/nvme0n1/holders/dm-0'), { recursive: true });
  w('sys/block/dm-0/dm/name', 'vg0-data\n');
  w('sys/block/sda/sda2/partition', '2\n');
  w(
    'proc/mounts',
    ['/dev/sda2 / ext4 rw,relatime 0 0', 'proc /proc proc rw 0 0', '/dev/sdb1 /srv\\040data xfs rw 0 0', '/dev/vg0/data /var/lib/db ext4 rw 0 0', ''].join(
      '\n',
    ),
  );
  w('proc/swaps', 'Filename\tType\tSize\tUsed\tPriority\n/dev/sdc partition 1000 0 -2\n');
  w('sys/class/net/eth0/flags', '0x1003\n');
  w('sys/class/net/eth1/flags', '0x1002\n');
  w(
    'proc/net/route',
    'Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\neth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\neth1\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n',
  );
  // /sys/class/graphics/fb0 -> the fb dir under the device; fb0/device -> the device.
  const devDir = 'sys/devices/pci0000:00/0000:00:08.0';
  fs.mkdirSync(path.join(root, devDir, 'graphics/fb0'), { recursive: true });
  fs.symlinkSync('../../../0000:00:08.0', path.join(root, devDir, 'graphics/fb0/device'));
  fs.mkdirSync(path.join(root, 'sys/class/graphics'), { recursive: true });
  fs.symlinkSync(`../../devices/pci0000:00/0000:00:08.0/graphics/fb0`, path.join(root, 'sys/class/graphics/fb0'));
  return root;
};

const attempt = async (root: string, group: string, force = false): Promise<IsogroupError | null> => {
  try {
    await assignGroup(group, { root, simulate: true, force, owner: 'alice' });
    return null;
  } catch (error) {
    if (isIsogroupError(error)) return error;
    throw error;
  }
};

describe('host-use safety', () => {
  it('findHostUse names each use with what would be lost', () => {
    const root = build();
    const port = new NodeSysfsPort(root);
    const snap = scanHost(port);
    const uses = findHostUse(port, snap, [...snap.devices.keys()]);
    const byDev = (n: number) => uses.filter((u) => u.bdf === `0000:00:0${n}.0`).map((u) => u.kind);
    expect(byDev(1)).toEqual(['mount']);
    expect(uses.find((u) => u.bdf === '0000:00:01.0')!.what).toBe('/dev/sdb1 is mounted at /srv data');
    expect(byDev(2)).toEqual(['swap']);
    expect(byDev(3).sort()).toEqual(['holder', 'mount']);
    expect(byDev(4)).toEqual(['root-fs']);
    expect(byDev(5)).toEqual(['net']);
    expect(uses.find((u) => u.bdf === '0000:00:05.0')!.loss).toMatch(/default route/);
    expect(byDev(6)).toEqual([]);
    expect(byDev(7)).toEqual(['boot-vga']);
    expect(byDev(8)).toEqual(['framebuffer']);
    expect(byDev(9)).toEqual([]);
    expect(uses.every((u) => u.loss.length > 0)).toBe(true);
  });

  it.each([
    ['1', /\/srv data/],
    ['2', /swap/],
    ['3', /dm-0|\/var\/lib\/db/],
    ['5', /eth0/],
    ['7', /boot VGA/],
    ['8', /framebuffer/],
  ])('group %s is refused (E_HOST_IN_USE, nothing changed) and --force takes it', async (group, why) => {
    const root = build();
    const sim = openSimulatedRoot(root);
    const bdf = `0000:00:0${group}.0`;
    const before = sim.kernel.driverOf(bdf);
    const error = await attempt(root, group);
    expect(error?.code).toBe('E_HOST_IN_USE');
    expect(error?.message).toMatch(why);
    expect(error?.message).toContain(bdf);
    expect(sim.kernel.driverOf(bdf)).toBe(before);
    expect(await attempt(root, group, true)).toBeNull();
    expect(sim.kernel.driverOf(bdf)).toBe('vfio-pci');
  });

  it('the root filesystem disk is refused even with --force', async () => {
    const root = build();
    const sim = openSimulatedRoot(root);
    for (const force of [false, true]) {
      const error = await attempt(root, '4', force);
      expect(error?.code).toBe('E_HOST_IN_USE');
      expect(error?.message).toMatch(/root filesystem/);
    }
    expect(sim.kernel.driverOf('0000:00:04.0')).toBe('ahci');
  });

  it('an interface that is down, or an unused device, is taken without --force', async () => {
    const root = build();
    expect(await attempt(root, '6')).toBeNull();
    expect(await attempt(root, '9')).toBeNull();
  });
});

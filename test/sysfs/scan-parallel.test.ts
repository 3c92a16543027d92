import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateHost } from '../../bench/generate.js';
import { writeFixtureRoot } from '../../capture/fixture-writer.js';
import { parsePciIds } from '../../model/pci-ids.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { PARALLEL_MIN_DEVICES, scanHost } from '../../sysfs/scan.js';
import { fastTmpDir } from '../helpers/sim-root.js';

// The two-thread scan (large hosts) must give exactly the snapshot the one-thread scan gives: same
// devices, bytes, names, groups and problems, in the same order.

const PCI_IDS = ['8086  Intel Corporation', '\t1901  Xeon E3-1200 PCIe Controller', '10de  NVIDIA Corporation', 'C 06  Bridge', '\t04  PCI bridge', ''].join(
  '\n',
);

const asPlain = (snap: ReturnType<typeof scanHost>) => ({
  devices: [...snap.devices.entries()],
  config: [...snap.config.entries()].map(([bdf, bytes]) => [bdf, Buffer.from(bytes).toString('hex')]),
  groups: [...snap.kernelGroups.entries()],
  units: [...snap.iommuUnits.entries()],
  problems: snap.problems,
});

describe('two-thread scan', () => {
  it('gives the one-thread snapshot exactly, names included, on a generated host', () => {
    const root = fastTmpDir();
    writeFixtureRoot(root, generateHost(300));
    const port = new NodeSysfsPort(root);
    const ids = parsePciIds(PCI_IDS, 'test');
    const one = scanHost(port, { pciIds: ids, threads: 1 });
    const two = scanHost(port, { pciIds: ids, threads: 2 });
    expect([one.scanThreads, two.scanThreads]).toEqual([1, 2]);
    expect(two.devices.size).toBe(one.devices.size);
    expect(asPlain(two)).toEqual(asPlain(one));
    expect([...two.devices.values()].some((d) => d.vendorName === 'Intel Corporation')).toBe(true);
    // Config bytes come back as Buffers, as every reader of the snapshot expects.
    expect([...two.config.values()].every((b) => Buffer.isBuffer(b))).toBe(true);
  });

  it('reports the problems of a damaged second half as the one-thread scan does, in the same order', () => {
    const root = fastTmpDir();
    writeFixtureRoot(root, generateHost(120));
    const devices = path.join(root, 'sys/bus/pci/devices');
    const names = fs.readdirSync(devices).sort();
    const late = names.slice(-3);
    fs.rmSync(`${devices}/${late[0]!}`);
    fs.symlinkSync('../../../devices/nowhere', path.join(devices, late[0]!)); // dangling
    fs.writeFileSync(path.join(fs.realpathSync(path.join(devices, late[1]!)), 'vendor'), 'garbage\n');
    fs.writeFileSync(path.join(devices, 'not-a-bdf'), '');
    // A group directory naming a device that does not exist (read by the helper, checked by the main thread).
    const ghost = path.join(root, 'sys/kernel/iommu_groups/99999/devices');
    fs.mkdirSync(ghost, { recursive: true });
    fs.symlinkSync('../../../../devices/pci0000:00/0000:00:1f.7', path.join(ghost, '0000:00:1f.7'));
    const port = new NodeSysfsPort(root);
    // The damage must reach the helper's half (the second half of the listing, in listing order).
    const listed = port.list('sys/bus/pci/devices').map((e) => e.name);
    const helperHalf = listed.slice(Math.ceil(listed.length / 2));
    expect(helperHalf.filter((n) => [...late.slice(0, 2), 'not-a-bdf'].includes(n)).length).toBeGreaterThan(0);
    const one = scanHost(port, { threads: 1 });
    const two = scanHost(port, { threads: 2 });
    expect(two.scanThreads).toBe(2);
    expect(one.problems.length + [...one.devices.values()].reduce((n, d) => n + d.problems.length, 0)).toBeGreaterThanOrEqual(3);
    expect(two.problems.map((p) => p.code)).toContain('group-member-missing');
    expect(asPlain(two)).toEqual(asPlain(one));
  });

  it('is the default from PARALLEL_MIN_DEVICES devices on, not below', () => {
    const root = fastTmpDir();
    writeFixtureRoot(root, generateHost(PARALLEL_MIN_DEVICES));
    const port = new NodeSysfsPort(root);
    const auto = scanHost(port);
    expect(auto.scanThreads).toBe(2);
    expect(asPlain(auto)).toEqual(asPlain(scanHost(port, { threads: 1 })));
    const small = fastTmpDir();
    writeFixtureRoot(small, generateHost(100));
    expect(scanHost(new NodeSysfsPort(small)).scanThreads).toBe(1);
  });
});

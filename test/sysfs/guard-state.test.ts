import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../bench/config-builder.js';
import { writeFixtureRoot } from '../../capture/fixture-writer.js';
import type { Bdf } from '../../model/bdf.js';
import type { GuardDeviceState, PciDevice } from '../../model/device.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { readGuardState } from '../../sysfs/read.js';
import { scanHost } from '../../sysfs/scan.js';
import { copyRoot, fastTmpDir } from '../helpers/sim-root.js';

// The daemon's hint path reads a device with readGuardState; it must see exactly what a full scan sees
// in the fields the guard decides by, or a hint and the rescan after it would decide differently.

const fields = (d: PciDevice): GuardDeviceState => ({
  bdf: d.bdf,
  isBridge: d.isBridge,
  driver: d.driver,
  vfioDriver: d.vfioDriver,
  driverOverride: d.driverOverride,
  sriov: d.sriov ? { totalVfs: d.sriov.totalVfs, driversAutoprobe: d.sriov.driversAutoprobe } : null,
});

const sameAsScan = (root: string): number => {
  const port = new NodeSysfsPort(root);
  const snap = scanHost(port, { threads: 1 });
  for (const d of snap.devices.values()) expect(readGuardState(port, d.bdf)).toEqual(fields(d));
  return snap.devices.size;
};

describe('readGuardState (the daemon hint path)', () => {
  it.each(['mixed', 'noacs', 'mixed-vfio'])('agrees with a full scan on every device of the %s capture', (name) => {
    expect(sameAsScan(copyRoot(name))).toBeGreaterThan(10);
  });

  it('agrees on a PF with SR-IOV (autoprobe off), a vfio-pci device with an override, a bridge, and a device without config', () => {
    const root = fastTmpDir();
    writeFixtureRoot(root, {
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
          config: buildConfig({
            vendor: 0x8086,
            device: 0x10fb,
            classCode: 0x020000,
            pcieType: 0,
            sriov: { total: 8, num: 0, offset: 1, stride: 1, vfDevice: 0x10ed },
          }),
          driver: 'ixgbe',
          group: '2',
        },
        { bdf: '0000:00:02.0', config: buildConfig({ vendor: 0x10de, device: 0x2204, classCode: 0x030000 }), driver: 'vfio-pci', group: '3' },
        { bdf: '0000:00:03.0', config: buildConfig({ vendor: 0x8086, device: 0x100e, classCode: 0x020000 }), group: '4' },
      ],
    });
    const dev = (bdf: string): string => fs.realpathSync(path.join(root, 'sys/bus/pci/devices', bdf));
    fs.writeFileSync(path.join(dev('0000:01:00.0'), 'sriov_totalvfs'), '8\n');
    fs.writeFileSync(path.join(dev('0000:01:00.0'), 'sriov_numvfs'), '0\n');
    fs.writeFileSync(path.join(dev('0000:01:00.0'), 'sriov_drivers_autoprobe'), '0\n');
    fs.writeFileSync(path.join(dev('0000:00:02.0'), 'driver_override'), 'vfio-pci\n');
    fs.rmSync(path.join(dev('0000:00:03.0'), 'config'));
    expect(sameAsScan(root)).toBe(4);
    const port = new NodeSysfsPort(root);
    expect(readGuardState(port, '0000:01:00.0' as Bdf)?.sriov).toEqual({ totalVfs: 8, driversAutoprobe: false });
    expect(readGuardState(port, '0000:00:02.0' as Bdf)).toMatchObject({ vfioDriver: true, driverOverride: 'vfio-pci' });
    expect(readGuardState(port, '0000:00:01.0' as Bdf)?.isBridge).toBe(true);
    expect(readGuardState(port, '0000:0f:00.0' as Bdf)).toBeNull(); // not there
  });
});

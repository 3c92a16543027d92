import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeFixtureRoot } from '../../capture/fixture-writer.js';
import { isIsogroupError } from '../../errors.js';
import { deriveGroups } from '../../groups/derive.js';
import type { SimulatedRoot } from '../../sim/index.js';
import { openSimulatedRoot } from '../../sim/index.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { scanHost } from '../../sysfs/scan.js';
import { repoRoot } from '../helpers/paths.js';
import { simCopy, fastTmpDir as tmpDir } from '../helpers/sim-root.js';

// The fixture kernel against what the real 6.1 kernel did in oracle/NOTES.md.

const errnoOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    if (isIsogroupError(error)) return String(error.details.errno);
    throw error;
  }
  return undefined;
};

const toVfio = (sim: SimulatedRoot, bdf: string): void => {
  sim.port.writeText(`sys/bus/pci/devices/${bdf}/driver_override`, 'vfio-pci');
  if (sim.kernel.driverOf(bdf)) sim.port.writeText(`sys/bus/pci/devices/${bdf}/driver/unbind`, bdf);
  sim.port.writeText('sys/bus/pci/drivers_probe', bdf);
};

const G23 = ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'];
const G22 = ['0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'];

describe('fixture kernel: driver binding', () => {
  it('driver_override + unbind + drivers_probe moves a device to vfio-pci; "\\n" clears the override', () => {
    const sim = simCopy();
    const bdf = '0000:0b:00.0';
    expect(sim.kernel.driverOf(bdf)).toBe('e1000e');
    sim.port.writeText(`sys/bus/pci/devices/${bdf}/driver_override`, 'vfio-pci\n');
    expect(sim.kernel.driverOf(bdf)).toBe('e1000e'); // writing the override does not unbind
    expect(sim.port.readText(`sys/bus/pci/devices/${bdf}/driver_override`)).toBe('vfio-pci\n');
    sim.port.writeText(`sys/bus/pci/drivers/e1000e/unbind`, bdf);
    expect(sim.kernel.driverOf(bdf)).toBeNull();
    sim.port.writeText('sys/bus/pci/drivers_probe', bdf);
    expect(sim.kernel.driverOf(bdf)).toBe('vfio-pci');
    expect(fs.existsSync(path.join(sim.root, 'sys/bus/pci/drivers/vfio-pci', bdf))).toBe(true);
    // The scanner sees the kernel state through the files.
    const snap = scanHost(new NodeSysfsPort(sim.root));
    expect(snap.devices.get(bdf as never)?.vfioDriver).toBe(true);
    sim.port.writeText(`sys/bus/pci/devices/${bdf}/driver_override`, '\n');
    expect(sim.port.readText(`sys/bus/pci/devices/${bdf}/driver_override`)).toBe('(null)\n');
    sim.port.writeText(`sys/bus/pci/drivers/vfio-pci/unbind`, bdf);
    sim.port.writeText('sys/bus/pci/drivers_probe', bdf);
    expect(sim.kernel.driverOf(bdf)).toBe('e1000e');
  });

  it('unbind from a driver the device is not bound to fails with ENODEV; bind of a bound device EBUSY', () => {
    const sim = simCopy();
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers/e1000/unbind', '0000:0b:00.0'))).toBe('ENODEV');
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers/e1000e/bind', '0000:0b:00.0'))).toBe('EBUSY');
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers_probe', '0000:77:00.0'))).toBe('ENODEV');
    // vfio-pci matches nothing without driver_override (override_only id table).
    sim.port.writeText('sys/bus/pci/drivers/e1000e/unbind', '0000:0b:00.0');
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers/vfio-pci/bind', '0000:0b:00.0'))).toBe('ENODEV');
  });

  it('vfio-pci on a bridge: drivers_probe returns OK but the bridge stays driverless (probe -22)', () => {
    const sim = simCopy();
    const bridge = '0000:09:00.0';
    sim.port.writeText(`sys/bus/pci/devices/${bridge}/driver_override`, 'vfio-pci');
    expect(() => sim.port.writeText('sys/bus/pci/drivers_probe', bridge)).not.toThrow();
    expect(sim.kernel.driverOf(bridge)).toBeNull();
    expect(sim.kernel.dmesg()).toContain(`vfio-pci: probe of ${bridge} failed with error -22`);
    // The driver's own bind file does report the probe error.
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers/vfio-pci/bind', bridge))).toBe('EINVAL');
  });

  it('/dev/vfio/N appears with the first vfio-pci device of group N and disappears with the last', () => {
    const sim = simCopy();
    const node = path.join(sim.root, 'dev/vfio/23');
    expect(fs.existsSync(path.join(sim.root, 'dev/vfio/vfio'))).toBe(true);
    expect(fs.existsSync(node)).toBe(false);
    toVfio(sim, G23[0]!);
    expect(fs.existsSync(node)).toBe(true);
    toVfio(sim, G23[1]!);
    for (const b of G23.slice(0, 2)) {
      sim.port.writeText(`sys/bus/pci/devices/${b}/driver_override`, '\n');
      sim.port.writeText('sys/bus/pci/drivers/vfio-pci/unbind', b);
      expect(fs.existsSync(node)).toBe(b === G23[0]);
    }
  });

  it('failure injection: the n-th write and writes to a file fail with the errno, with no effect', () => {
    const sim = simCopy();
    sim.kernel.injectFailure({ nth: 2, errno: 'EIO' });
    sim.port.writeText('sys/bus/pci/devices/0000:0b:00.0/driver_override', 'vfio-pci');
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers/e1000e/unbind', '0000:0b:00.0'))).toBe('EIO');
    expect(sim.kernel.driverOf('0000:0b:00.0')).toBe('e1000e');
    sim.port.writeText('sys/bus/pci/drivers/e1000e/unbind', '0000:0b:00.0'); // one shot
    expect(sim.kernel.driverOf('0000:0b:00.0')).toBeNull();
    sim.kernel.injectFailure({ file: 'drivers_probe', errno: 'ENOMEM', persistent: true });
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers_probe', '0000:0b:00.0'))).toBe('ENOMEM');
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers_probe', '0000:0b:00.0'))).toBe('ENOMEM');
    sim.kernel.clearFailures();
    sim.port.writeText('sys/bus/pci/drivers_probe', '0000:0b:00.0');
    expect(sim.kernel.driverOf('0000:0b:00.0')).toBe('vfio-pci');
  });

  it('remove then rescan brings a device back with its group and host driver', () => {
    const sim = simCopy();
    const bdf = '0000:0a:02.0';
    sim.port.writeText(`sys/bus/pci/devices/${bdf}/remove`, '1');
    expect(sim.kernel.devDir(bdf)).toBeNull();
    expect(sim.kernel.groupMembers('22')).not.toContain(bdf);
    sim.port.writeText('sys/bus/pci/rescan', '1');
    expect(sim.kernel.groupOf(bdf)).toBe('22');
    expect(sim.kernel.driverOf(bdf)).toBe('8139cp');
  });
});

describe('fixture kernel: shared state', () => {
  it("two handles on one root (two processes or threads) see each other's changes at once, whatever each has cached", () => {
    const a = simCopy();
    const b = openSimulatedRoot(a.root);
    a.kernel.injectFailure({ file: 'drivers_probe', errno: 'EIO' }); // a caches the state it wrote
    expect(errnoOf(() => b.port.writeText('sys/bus/pci/drivers_probe', '0000:0b:00.0'))).toBe('EIO'); // b used it up
    b.kernel.setDefaultDriver('0000:0a:02.0', null);
    expect(a.kernel.defaultDriver('0000:0a:02.0')).toBeNull(); // a re-reads what b wrote
    a.port.writeText('sys/bus/pci/drivers_probe', '0000:0b:00.0'); // the one-shot failure is gone for a too
    const total = a.kernel.writeCount();
    expect(b.kernel.writeCount()).toBe(total);
    expect(total).toBe(2); // b's refused write counts too, as the kernel's own sequence does
    expect([a.kernel.writesByThisHandle, b.kernel.writesByThisHandle]).toEqual([1, 0]);
  });

  it('a corrupt state file is a typed error naming it, for a handle that had a good copy cached too', () => {
    const sim = simCopy();
    sim.kernel.writeCount();
    fs.writeFileSync(path.join(sim.root, '.isogroup-sim', 'state.json'), '{"version":1,');
    let caught: unknown;
    try {
      sim.kernel.writeCount();
    } catch (error) {
      caught = error;
    }
    expect(isIsogroupError(caught) && caught.code).toBe('E_INVALID_INPUT');
    expect(String((caught as Error).message)).toContain('state.json');
  });

  it('an address removed, then taken by a new device, is not overwritten by a later rescan', () => {
    const sim = simCopy();
    const bdf = '0000:0a:02.0';
    sim.port.writeText(`sys/bus/pci/devices/${bdf}/remove`, '1');
    const fresh = sim.kernel.addDevice({ bridge: '0000:09:00.0', vendor: 0x8086, device: 0x100e, driver: 'e1000', bdf });
    expect(fresh.driver).toBe('e1000');
    sim.port.writeText('sys/bus/pci/rescan', '1');
    expect(sim.kernel.driverOf(bdf)).toBe('e1000');
    expect(fs.readFileSync(path.join(sim.root, 'sys/bus/pci/devices', bdf, 'device'), 'utf8').trim()).toBe('0x100e');
    // The parked copy is gone: a second rescan has nothing to bring back.
    sim.port.writeText(`sys/bus/pci/devices/${bdf}/remove`, '1');
    sim.port.writeText('sys/bus/pci/rescan', '1');
    expect(fs.readFileSync(path.join(sim.root, 'sys/bus/pci/devices', bdf, 'device'), 'utf8').trim()).toBe('0x100e');
  });
});

describe('fixture kernel: VFIO group files (NOTES.md bind test)', () => {
  it('partial group: open ok, not viable, SET_CONTAINER EPERM; second open EBUSY', () => {
    const sim = simCopy();
    toVfio(sim, G23[0]!);
    const g = sim.vfio.openGroup('23');
    expect(g.status()).toEqual({ viable: false, containerSet: false });
    expect(errnoOf(() => sim.vfio.openGroup('23'))).toBe('EBUSY');
    const c = sim.vfio.openContainer();
    expect(errnoOf(() => g.setContainer(c))).toBe('EPERM');
    g.close();
    c.close();
  });

  it('all on vfio-pci, or some driverless: viable, SET_CONTAINER and SET_IOMMU work', () => {
    const sim = simCopy();
    toVfio(sim, G23[0]!);
    toVfio(sim, G23[1]!);
    sim.port.writeText(`sys/bus/pci/devices/${G23[2]}/driver/unbind`, G23[2]!);
    const g = sim.vfio.openGroup('23');
    expect(g.status()).toEqual({ viable: true, containerSet: false });
    const c = sim.vfio.openContainer();
    g.setContainer(c);
    c.setIommu('type1v2');
    expect(g.status()).toEqual({ viable: true, containerSet: true });
    const ranges = c.iovaRanges();
    // The MSI window of the group's reserved_regions is cut out of the address space.
    expect(ranges.some((r) => r.start <= 0xfee00000n && r.end >= 0xfee00000n)).toBe(false);
    g.close();
    c.close();
  });

  it('opening a group no vfio driver owns: ENOENT', () => {
    const sim = simCopy();
    expect(errnoOf(() => sim.vfio.openGroup('23'))).toBe('ENOENT');
  });

  it("a dead process's hold vanishes, as its fds would", () => {
    const sim = simCopy();
    for (const b of G23) toVfio(sim, b);
    const script = `
      import { openSimulatedRoot } from ${JSON.stringify(path.join(repoRoot, 'dist/sim/index.js'))};
      const s = openSimulatedRoot(${JSON.stringify(sim.root)});
      s.vfio.openGroup('23');
      process.stdout.write('held');
      process.exit(0);`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(child.stdout).toBe('held');
    const g = sim.vfio.openGroup('23');
    expect(g.status().viable).toBe(true);
    g.close();
  });
});

describe('fixture kernel: hotplug (NOTES.md hotplug test)', () => {
  it('a hot-added device binds its host driver at once even with drivers_autoprobe=0', () => {
    const sim = simCopy();
    sim.port.writeText('sys/bus/pci/drivers_autoprobe', '0');
    expect(sim.port.readText('sys/bus/pci/drivers_autoprobe')).toBe('0\n');
    const behindBridge = sim.kernel.addDevice({ bridge: '0000:00:03.0', vendor: 0x8086, device: 0x100e, driver: 'e1000' });
    expect(behindBridge.group).toBe('4'); // joins the conventional bridge's group
    expect(behindBridge.driver).toBe('e1000');
    const onEmptyPort = sim.kernel.addDevice({ bridge: '0000:00:10.6', vendor: 0x8086, device: 0x10d3, driver: 'e1000e' });
    expect(onEmptyPort.group).toBe('26'); // next free group number
    expect(onEmptyPort.driver).toBe('e1000e');
    expect(sim.kernel.driverOf(onEmptyPort.bdf)).toBe('e1000e');
  });

  it('held group (container set): the host driver attach fails with EBUSY, device driverless, group viable', () => {
    const sim = simCopy();
    for (const b of G22) toVfio(sim, b);
    const g = sim.vfio.openGroup('22');
    const c = sim.vfio.openContainer();
    g.setContainer(c);
    c.setIommu('type1v2');
    const added = sim.kernel.addDevice({ bridge: '0000:09:00.0', vendor: 0x8086, device: 0x100e, driver: 'e1000' });
    expect(added.group).toBe('22');
    expect(added.driver).toBeNull();
    expect(added.attachError).toMatch(/-16/);
    expect(sim.kernel.dmesg()).toContain(`pci ${added.bdf}: device attach failed (-16)`);
    expect(g.status()).toEqual({ viable: true, containerSet: true });
    // Binding it to vfio-pci afterwards works (vfio-pci is DMA-managed).
    toVfio(sim, added.bdf);
    expect(sim.kernel.driverOf(added.bdf)).toBe('vfio-pci');
    // An explicit host bind is refused too.
    sim.port.writeText(`sys/bus/pci/devices/${added.bdf}/driver_override`, '\n');
    sim.port.writeText('sys/bus/pci/drivers/vfio-pci/unbind', added.bdf);
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/drivers/e1000/bind', added.bdf))).toBe('EBUSY');
    g.close();
    c.close();
  });

  it('assigned but idle group: the hot-added device gets its host driver and the group is no longer viable', () => {
    const sim = simCopy();
    for (const b of G22) toVfio(sim, b);
    const added = sim.kernel.addDevice({ bridge: '0000:09:00.0', vendor: 0x8086, device: 0x100e, driver: 'e1000' });
    expect(added.driver).toBe('e1000');
    const g = sim.vfio.openGroup('22');
    expect(g.status().viable).toBe(false);
    const c = sim.vfio.openContainer();
    expect(errnoOf(() => g.setContainer(c))).toBe('EPERM');
    g.close();
    c.close();
  });

  it('a device whose driver module is not loaded stays driverless; modprobe binds it only with autoprobe=1 (NOTES step 6)', () => {
    const sim = simCopy();
    sim.port.writeText('sys/bus/pci/drivers_autoprobe', '0');
    const added = sim.kernel.addDevice({ bridge: '0000:00:03.0', vendor: 0x1022, device: 0x2000, driver: 'pcnet32' });
    expect(added.driver).toBeNull();
    sim.kernel.loadModule('pcnet32');
    expect(sim.kernel.driverOf(added.bdf)).toBeNull();
    sim.port.writeText('sys/bus/pci/drivers_autoprobe', '1');
    expect(sim.kernel.driverOf(added.bdf)).toBeNull(); // turning autoprobe back on probes nothing
    sim.port.writeText('sys/bus/pci/drivers_probe', added.bdf);
    expect(sim.kernel.driverOf(added.bdf)).toBe('pcnet32');
    // With autoprobe=1 a newly loaded module attaches at once.
    const other = sim.kernel.addDevice({ bridge: '0000:00:03.0', vendor: 0x8086, device: 0x25ab, driver: 'i6300esb' });
    expect(other.driver).toBeNull();
    sim.kernel.loadModule('i6300esb');
    expect(sim.kernel.driverOf(other.bdf)).toBe('i6300esb');
  });

  it('a bridge unbound from shpchp has no hotplug: the device appears only after a rescan', () => {
    const sim = simCopy();
    const bridge = '0000:09:00.0';
    sim.kernel.setDefaultDriver(bridge, 'shpchp');
    sim.port.writeText('sys/bus/pci/drivers_probe', bridge);
    expect(sim.kernel.driverOf(bridge)).toBe('shpchp');
    sim.port.writeText('sys/bus/pci/drivers/shpchp/unbind', bridge);
    const added = sim.kernel.addDevice({ bridge, vendor: 0x8086, device: 0x100e, driver: 'e1000' });
    expect(added.pending).toBe(true);
    expect(sim.kernel.devDir(added.bdf)).toBeNull();
    sim.port.writeText('sys/bus/pci/rescan', '1');
    expect(sim.kernel.groupOf(added.bdf)).toBe('22');
    expect(sim.kernel.driverOf(added.bdf)).toBe('e1000');
  });
});

describe('fixture kernel: SR-IOV', () => {
  const u16 = (b: Uint8Array, o: number, v: number): void => {
    b[o] = v & 0xff;
    b[o + 1] = (v >> 8) & 0xff;
  };
  const rootPort = (): Uint8Array => {
    const b = new Uint8Array(4096);
    u16(b, 0, 0x8086);
    u16(b, 2, 0x7a38);
    u16(b, 6, 0x10);
    b[0x0b] = 0x06;
    b[0x0a] = 0x04;
    b[0x0e] = 0x01;
    b[0x18] = 0;
    b[0x19] = 1;
    b[0x1a] = 1;
    b[0x34] = 0x40;
    b[0x40] = 0x10;
    u16(b, 0x42, 0x0042); // PCIe root port
    u16(b, 0x100, 0x000d);
    u16(b, 0x102, 0x0001);
    u16(b, 0x104, 0x001f);
    u16(b, 0x106, 0x001f); // ACS all
    return b;
  };
  const pf = (): Uint8Array => {
    const b = new Uint8Array(4096);
    u16(b, 0, 0x8086);
    u16(b, 2, 0x10fb);
    u16(b, 6, 0x10);
    b[0x0b] = 0x02;
    b[0x34] = 0x40;
    b[0x40] = 0x10;
    u16(b, 0x42, 0x0002);
    u16(b, 0x100, 0x0010);
    u16(b, 0x102, 0x0001); // SR-IOV, last in chain
    u16(b, 0x10c, 4);
    u16(b, 0x10e, 4);
    u16(b, 0x114, 1);
    u16(b, 0x116, 1);
    u16(b, 0x11a, 0x10ed);
    return b;
  };
  const build = (): SimulatedRoot => {
    const root = tmpDir();
    writeFixtureRoot(root, {
      devices: [
        { bdf: '0000:00:01.0', config: rootPort(), driver: 'pcieport', group: '0', iommu: 'dmar0' },
        { bdf: '0000:01:00.0', parent: '0000:00:01.0', config: pf(), driver: 'ixgbe', group: '1', iommu: 'dmar0' },
      ],
    });
    return openSimulatedRoot(root);
  };

  it('VFs appear with physfn/virtfnN links, their default driver, and the groups the derivation gives', () => {
    const sim = build();
    sim.kernel.loadModule('ixgbe');
    sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '2');
    const snap = scanHost(new NodeSysfsPort(sim.kernel.root));
    const pfDev = snap.devices.get('0000:01:00.0' as never)!;
    expect(pfDev.virtfns).toEqual(['0000:01:00.1', '0000:01:00.2']);
    for (const vf of pfDev.virtfns) {
      const d = snap.devices.get(vf)!;
      expect(d.physfn).toBe('0000:01:00.0');
      expect(d.driver).toBe('ixgbe');
      expect(d.kernelGroup).not.toBeNull();
    }
    // Each VF's kernel group has exactly the members the derivation puts with it.
    const derived = deriveGroups(snap);
    for (const vf of pfDev.virtfns) {
      const kernelMembers = snap.kernelGroups.get(snap.devices.get(vf)!.kernelGroup!)!.devices;
      const derivedMembers = derived.groups.find((g) => g.id === derived.groupOf.get(vf))!.devices;
      expect([...kernelMembers].sort()).toEqual([...derivedMembers].sort());
    }
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '3'))).toBe('EBUSY');
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '0'))).toBeUndefined();
    expect(sim.kernel.devDir('0000:01:00.1')).toBeNull();
    expect(errnoOf(() => sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '9'))).toBe('ERANGE');
  });

  it('sriov_drivers_autoprobe=0 keeps new VFs driverless; a PF on vfio-pci captures its VFs', () => {
    const sim = build();
    sim.kernel.loadModule('vfio-pci');
    sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe', '0');
    sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '1');
    expect(sim.kernel.driverOf('0000:01:00.1')).toBeNull();
    sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '0');
    sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe', '1');
    toVfio(sim, '0000:01:00.0');
    sim.port.writeText('sys/bus/pci/devices/0000:01:00.0/sriov_numvfs', '1');
    expect(sim.kernel.overrideOf('0000:01:00.1')).toBe('vfio-pci');
    expect(sim.kernel.driverOf('0000:01:00.1')).toBe('vfio-pci');
  });
});

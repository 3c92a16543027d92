import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { listDevices, showDevice } from '../../api/devices.js';
import { listGroups } from '../../api/groups.js';
import { buildConfig } from '../../bench/config-builder.js';
import { writeFixtureRoot } from '../../capture/fixture-writer.js';
import { runCli } from '../../cli/main.js';
import type { SimulatedRoot } from '../../sim/index.js';
import { bundledCapture } from '../helpers/paths.js';
import { pristineRoot, simCopy } from '../helpers/sim-root.js';
import { tmpDir } from '../helpers/tmp.js';

// The reset report through the API and the CLI: on the bundled captures of the real kernel (whose
// reset_method files are read here directly, as a second reader), on crafted roots, and against the
// fixture kernel's VFIO hot-reset answer.

const run = async (...argv: string[]) => {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
};

const kernelResetMethods = (root: string): Map<string, string[]> => {
  const dir = path.join(root, 'sys/bus/pci/devices');
  return new Map(
    fs.readdirSync(dir).map((b) => {
      const f = path.join(dir, b, 'reset_method');
      return [b, fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split(' ') : []];
    }),
  );
};

describe.each(['mixed', 'noacs'])('the bundled capture %s (Linux 6.1)', (name) => {
  it("derives exactly the kernel's reset_method for every device, and reports the kernel's as the source", () => {
    const kernel = kernelResetMethods(pristineRoot(name));
    const { devices, notes } = listDevices({ root: pristineRoot(name), pciIds: null });
    expect(devices.length).toBe(kernel.size);
    for (const d of devices) {
      expect({ bdf: d.bdf, methods: d.resetMethods, source: d.resetSource, derived: d.resetDerived, differs: d.resetDiffers }).toEqual({
        bdf: d.bdf,
        methods: kernel.get(d.bdf),
        source: 'kernel',
        derived: kernel.get(d.bdf),
        differs: [],
      });
    }
    expect(notes).toEqual([]);
  });
});

describe('groups --json on the mixed capture', () => {
  const byId = () => new Map(listGroups({ root: bundledCapture('mixed'), pciIds: null }).groups.map((g) => [g.id, g.reset]));

  it('a bus reset behind the PCIe-to-PCI bridge stays in its group: the group can be reset alone', () => {
    const g = byId().get('22')!;
    expect(g).toMatchObject({ canResetAlone: true, groupsAffected: ['22'], scope: ['0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'], warnings: [] });
  });

  it('functions on the root bus without a reset method cannot be reset: group 3', () => {
    const g = byId().get('3')!;
    expect(g).toMatchObject({ canResetAlone: false, noReset: ['0000:00:02.1', '0000:00:02.2'], scope: [], groupsAffected: [] });
  });

  it('marks the groups that cannot be reset alone in the human view, and says why', async () => {
    const r = await run('groups', '--root', bundledCapture('mixed'));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^group 3: NOT viable {2}00:02.1 00:02.2 {2}\[cannot be reset alone\]$/m);
    expect(r.stdout).toContain('  reset: no reset for 00:02.1 00:02.2: their state carries over from one user to the next');
    expect(r.stdout).toMatch(/^group 22: NOT viable {2}09:00.0 0a:01.0 0a:02.0 0a:03.0$/m);
  });
});

describe('show', () => {
  it('gives the methods, their source, the derivation and the bus reset of a device', () => {
    const r = showDevice('0a:02.0', { root: bundledCapture('mixed'), pciIds: null });
    expect(r.device).toMatchObject({ resetMethods: [], resetSource: 'kernel', resetDerived: [], resetAlone: 'none' });
    expect(r.device.resetScope).toEqual(['0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0']);
    expect(r.reset.reasons).toContain('no bus: 0a:01.0 was on bus 0000:0a before it when it was enumerated');
    expect(r.reset.group).toMatchObject({ id: '22', canResetAlone: true });
  });

  it('prints them', async () => {
    const r = await run('show', '0b:00.1', '--root', bundledCapture('mixed'));
    expect(r.stdout).toContain("  reset:      flr pm (the kernel's reset_method); alone: yes (a function reset)");
    expect(r.stdout).toContain(
      '  bus reset:  a secondary bus reset of bridge 00:10.4 (or its hot-plug slot) resets bus 0000:0b and everything below it: 0b:00.0 0b:00.1 0b:00.2',
    );
    expect(r.stdout).toContain('  group 23:   can be reset alone; a bus reset reaches group(s) 23');
  });
});

describe('a root without reset_method', () => {
  // An imported dump has no reset attributes at all; a kernel before 5.15 has `reset` only.
  const root = (attrs: (i: number) => Record<string, string>, release: string) => {
    const dir = path.join(tmpDir(), 'root');
    const port = buildConfig({
      vendor: 0x1b36,
      device: 0x000c,
      classCode: 0x060400,
      bridge: true,
      pcieType: 4,
      secondary: 1,
      subordinate: 1,
      pm: false,
      flr: false,
    });
    writeFixtureRoot(dir, {
      devices: [
        { bdf: '0000:00:01.0', config: port, group: '1', driver: 'pcieport' },
        {
          bdf: '0000:01:00.0',
          parent: '0000:00:01.0',
          config: buildConfig({ vendor: 0x1b36, device: 1, classCode: 0x020000, pcieType: 0, multifunction: true }),
          group: '2',
          attrs: attrs(0),
        },
        {
          bdf: '0000:01:00.1',
          parent: '0000:00:01.0',
          config: buildConfig({ vendor: 0x1b36, device: 1, classCode: 0x020000, pcieType: 0, flr: false }),
          group: '3',
          attrs: attrs(1),
        },
      ],
      meta: { uname: release },
    });
    return dir;
  };

  it('derives every method and says so', async () => {
    const dir = root(() => ({}), '6.8.0-90-generic');
    const d = listDevices({ root: dir, pciIds: null });
    expect(d.devices.map((x) => [x.bdf, x.resetMethods, x.resetSource])).toEqual([
      ['0000:00:01.0', [], 'derived'],
      ['0000:01:00.0', ['flr', 'pm', 'bus'], 'derived'],
      ['0000:01:00.1', ['pm'], 'derived'],
    ]);
    expect(d.notes[0]).toContain('every reset method is derived');
    // Group 3's function has only a PM reset, and a bus reset would also reset group 2.
    const g3 = listGroups({ root: dir, pciIds: null }).groups.find((g) => g.id === '3')!.reset;
    expect(g3).toMatchObject({ canResetAlone: true, groupsAffected: ['2', '3'] });
    expect(g3.warnings[0]).toContain('01:00.1 has only a PM reset');
    const text = await run('devices', '--root', dir);
    expect(text.stdout).toContain('~flr,pm,bus');
    expect(text.stdout).toContain('~ marks methods derived');
  });

  it('before 5.15, a device without the reset attribute has no method', () => {
    const dir = root((i): Record<string, string> => (i === 0 ? { reset: '' } : {}), '5.10.0-28-amd64');
    const d = listDevices({ root: dir, pciIds: null });
    expect(d.devices.find((x) => x.bdf === '0000:01:00.0')).toMatchObject({ resetMethods: ['flr', 'pm', 'bus'], resetSource: 'derived' });
    expect(d.devices.find((x) => x.bdf === '0000:01:00.1')).toMatchObject({ resetMethods: [], resetSource: 'kernel', resetDerived: ['pm'] });
    expect(d.notes[0]).toContain('has no reset_method (it came with 5.15)');
  });
});

describe('assign warns before it writes, on both paths', () => {
  it('a dry run of a group that cannot be reset alone names what the user will see, in its JSON and on stderr', async () => {
    const r = await run('assign', '3', '--dry-run', '--to', 'alice', '--root', bundledCapture('mixed'), '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { reset: { canResetAlone: boolean }; warnings: string[] };
    expect(out.reset.canResetAlone).toBe(false);
    expect(out.warnings).toHaveLength(2);
    expect(out.warnings[0]).toContain('group 3 cannot be reset alone: 00:02.1 cannot be reset');
    expect(r.stderr).toContain('isogroup: warning: group 3 cannot be reset alone: 00:02.2 cannot be reset');
    const quiet = await run('assign', '22', '--dry-run', '--to', 'alice', '--root', bundledCapture('mixed'), '--json');
    expect(JSON.parse(quiet.stdout).warnings).toEqual([]);
    expect(quiet.stderr).toBe('');
  });
});

// The fixture kernel answers VFIO_DEVICE_GET_PCI_HOT_RESET_INFO by walking its own device tree;
// isogroup's scope comes from the topology model: they must name the same devices and groups.
describe('the fixture kernel agrees with the computed reset scope', () => {
  const bindAll = (sim: SimulatedRoot, bdfs: string[]) => {
    for (const b of bdfs) {
      sim.port.writeText(`sys/bus/pci/devices/${b}/driver_override`, 'vfio-pci');
      if (fs.existsSync(path.join(sim.kernel.root, 'sys/bus/pci/devices', b, 'driver'))) sim.port.writeText(`sys/bus/pci/devices/${b}/driver/unbind`, b);
      sim.port.writeText('sys/bus/pci/drivers_probe', b);
    }
  };

  it.each(['22', '23', '19', '16', '3'])('group %s', (id) => {
    const sim = simCopy('mixed');
    const group = listGroups({ root: sim.root, pciIds: null }).groups.find((g) => g.id === id)!;
    const { devices } = listDevices({ root: sim.root, pciIds: null });
    const endpoints = devices.filter((d) => group.devices.includes(d.bdf as never) && !d.isBridge);
    bindAll(
      sim,
      endpoints.map((d) => d.bdf),
    );
    const g = sim.vfio.openGroup(id);
    const c = sim.vfio.openContainer();
    try {
      g.setContainer(c);
      c.setIommu('type1v2');
      const groups = new Set<string>();
      for (const d of endpoints) {
        const dev = g.openDevice(d.bdf);
        const hot = dev.hotResetInfo();
        expect({ bdf: d.bdf, scope: hot?.devices.map((x) => x.bdf) ?? [] }).toEqual({ bdf: d.bdf, scope: d.resetScope });
        for (const x of hot?.devices ?? []) groups.add(x.groupId);
        expect({ bdf: d.bdf, reset: dev.info().reset }).toEqual({ bdf: d.bdf, reset: d.resetAlone !== 'none' });
        dev.close();
      }
      expect([...groups].sort((a, b) => Number(a) - Number(b))).toEqual(group.reset.groupsAffected);
    } finally {
      g.close();
      c.close();
    }
  });

  it('refuses a device fd before the IOMMU is set, and for a device that is not on vfio-pci', () => {
    const sim = simCopy('mixed');
    bindAll(sim, ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2']);
    const g = sim.vfio.openGroup('23');
    const c = sim.vfio.openContainer();
    try {
      g.setContainer(c);
      expect(() => g.openDevice('0000:0b:00.0')).toThrow(expect.objectContaining({ details: expect.objectContaining({ errno: 'EINVAL' }) }));
      c.setIommu('type1v2');
      expect(() => g.openDevice('0000:0a:01.0')).toThrow(expect.objectContaining({ details: expect.objectContaining({ errno: 'ENODEV' }) }));
    } finally {
      g.close();
      c.close();
    }
  });
});

import { describe, expect, it } from 'vitest';
import { buildConfig, type ConfigOptions } from '../../bench/config-builder.js';
import { deriveResets, type GroupReset, groupReset, type ResetReport } from '../../groups/reset.js';
import { buildTopology } from '../../groups/topology.js';
import type { Bdf } from '../../model/bdf.js';
import { parseConfigSpace } from '../../model/config-space.js';
import type { PciDevice } from '../../model/device.js';
import { device, host } from '../helpers/host-builder.js';

// One rule per test, on config space built byte by byte (bench/config-builder.ts) and small
// topologies. Vendor 0x1b36 (QEMU) has no reset quirk; tests pick quirked ids on purpose.

const QEMU = 0x1b36;

/** A device whose reset facts, port type and bridge numbers come from crafted config bytes. */
const dev = (bdf: string, parent: string | null, o: Partial<ConfigOptions> = {}, over: Partial<PciDevice> = {}): PciDevice => {
  const cfg = buildConfig({ vendor: QEMU, device: 0x0001, classCode: 0x020000, pcieType: 0, ...o });
  const cs = parseConfigSpace(cfg);
  return device(bdf, {
    vendor: `0x${(o.vendor ?? QEMU).toString(16).padStart(4, '0')}`,
    device: `0x${(o.device ?? 0x0001).toString(16).padStart(4, '0')}`,
    class: `0x${(o.classCode ?? 0x020000).toString(16).padStart(6, '0')}`,
    revision: `0x${(o.revision ?? 1).toString(16).padStart(2, '0')}`,
    parent: parent as Bdf | null,
    portType: cs.portType,
    pcieTypeCode: cs.pcie?.portTypeCode ?? null,
    headerLayout: cs.layout === 'cardbus' ? 'cardbus' : cs.layout,
    isBridge: cs.layout === 'bridge',
    multifunction: cs.multifunction,
    secondaryBus: cs.secondaryBus,
    subordinateBus: cs.subordinateBus,
    resetCaps: cs.reset,
    configSize: cfg.length,
    ...over,
  });
};
const port = (bdf: string, parent: string | null, secondary: number, o: Partial<ConfigOptions> = {}, over: Partial<PciDevice> = {}): PciDevice =>
  dev(bdf, parent, { device: 0x000c, classCode: 0x060400, bridge: true, pcieType: 4, secondary, subordinate: secondary, flr: false, pm: false, ...o }, over);

const report = (devices: PciDevice[], release: string | null = null): ResetReport => deriveResets(buildTopology(host(devices), release));
const of = (r: ResetReport, bdf: string) => r.devices.get(`0000:${bdf}` as Bdf)!;
const group = (devices: PciDevice[], members: string[], groups: Record<string, string>, release: string | null = null): GroupReset => {
  const topo = buildTopology(host(devices), release);
  return groupReset(
    topo,
    deriveResets(topo),
    members.map((b) => `0000:${b}` as Bdf),
    (b) => groups[b.slice(5)] ?? null,
  );
};

describe('reset methods from config space', () => {
  it('flr comes from the PCIe Device Capabilities FLR bit, and only for a PCIe function', () => {
    const r = report([
      port('0000:00:01.0', null, 1),
      dev('0000:01:00.0', '0000:00:01.0', { flr: true, pm: false }),
      port('0000:00:02.0', null, 2),
      dev('0000:02:00.0', '0000:00:02.0', { flr: false, pm: false }),
    ]);
    expect(of(r, '01:00.0').derived).toEqual(['flr', 'bus']);
    expect(of(r, '01:00.0').reasons).toContain('flr: PCIe Device Capabilities has FLR');
    expect(of(r, '02:00.0').derived).toEqual(['bus']);
  });

  it('af_flr needs the Advanced Features capability with both TP and FLR', () => {
    const r = report([
      dev('0000:00:05.0', null, { pcieType: undefined, pm: false, af: { tp: true, flr: true } }),
      dev('0000:00:06.0', null, { pcieType: undefined, pm: false, af: { tp: false, flr: true } }),
    ]);
    expect(of(r, '00:05.0').derived).toEqual(['af_flr']);
    expect(of(r, '00:06.0').derived).toEqual([]);
  });

  it('pm needs a power management capability with No_Soft_Reset clear, of a version the kernel keeps', () => {
    const r = report([
      dev('0000:00:05.0', null, { flr: false, pm: {} }),
      dev('0000:00:06.0', null, { flr: false, pm: { noSoftReset: true } }),
      dev('0000:00:07.0', null, { flr: false, pm: { version: 4 } }),
      dev('0000:00:08.0', null, { flr: false, pm: false }),
    ]);
    expect(of(r, '00:05.0').derived).toEqual(['pm']);
    expect(of(r, '00:06.0').derived).toEqual([]);
    expect(of(r, '00:06.0').reasons).toContain('no pm: No_Soft_Reset is set (D3hot->D0 keeps its state)');
    expect(of(r, '00:07.0').derived).toEqual([]);
    expect(of(r, '00:08.0').derived).toEqual([]);
  });

  it('keeps the kernel order: device_specific, flr, af_flr, pm, bus', () => {
    const r = report([port('0000:00:01.0', null, 1), dev('0000:01:00.0', '0000:00:01.0', { vendor: 0x8086, device: 0x10ed, af: { tp: true, flr: true } })]);
    expect(of(r, '01:00.0').derived).toEqual(['device_specific', 'flr', 'af_flr', 'pm', 'bus']);
  });
});

describe('bus: pci_parent_bus_reset() as the kernel probes it at enumeration', () => {
  it('lists bus for the first device of a bus only (the others arrive while it is on the bus)', () => {
    const r = report([
      dev('0000:00:03.0', null, { bridge: true, pcieType: undefined, classCode: 0x060400, secondary: 1, subordinate: 1, pm: false }),
      dev('0000:01:02.0', '0000:00:03.0', { pcieType: undefined, pm: false }),
      dev('0000:01:01.0', '0000:00:03.0', { pcieType: undefined, pm: false }),
      dev('0000:01:03.0', '0000:00:03.0', { pcieType: undefined, pm: false }),
    ]);
    expect(of(r, '01:01.0').derived).toEqual(['bus']);
    expect(of(r, '01:02.0').derived).toEqual([]);
    expect(of(r, '01:02.0').reasons).toContain('no bus: 01:01.0 was on bus 0000:01 before it when it was enumerated');
    expect(of(r, '00:03.0').derived).toEqual([]);
    expect(of(r, '00:03.0').reasons).toContain('no bus: on a root bus, no bridge above it');
  });

  it('lists bus for a bridge that is first on its bus (its own bus is not scanned yet then)', () => {
    const r = report([port('0000:00:01.0', null, 1), port('0000:01:00.0', '0000:00:01.0', 2, { pcieType: 5 }), dev('0000:02:00.0', '0000:01:00.0')]);
    expect(of(r, '01:00.0').derived).toEqual(['bus']);
  });

  it('no bus for a VF on a virtual bus (no bridge above it)', () => {
    const r = report([
      port('0000:00:01.0', null, 1),
      dev('0000:01:00.0', '0000:00:01.0', { pm: false }, { virtfns: ['0000:02:00.0' as Bdf] }),
      dev('0000:02:00.0', '0000:00:01.0', { pm: false }, { isVirtfn: true, physfn: '0000:01:00.0' as Bdf }),
    ]);
    expect(of(r, '02:00.0').derived).toEqual(['flr']);
    expect(of(r, '02:00.0').reasons).toContain('no bus: on a virtual bus (an SR-IOV VF), no bridge above it');
    expect(of(r, '02:00.0').scope).toEqual([]);
  });
});

describe("the kernel's quirk tables, by the kernel's release", () => {
  it('a no-FLR quirk (AMD Matisse HD audio, 5.8) takes flr away from 5.8 on', () => {
    const devs = [port('0000:00:08.1', null, 0x0c), dev('0000:0c:00.4', '0000:00:08.1', { vendor: 0x1022, device: 0x1487, classCode: 0x040300 })];
    expect(of(report(devs, '6.1.0-56-amd64'), '0c:00.4').derived).toEqual(['pm', 'bus']);
    expect(of(report(devs, '6.1.0-56-amd64'), '0c:00.4').reasons).toContain('no flr: quirk "AMD Starship/Matisse HD Audio: FLR hangs it"');
    expect(of(report(devs, '5.4.0-42-generic'), '0c:00.4').derived).toEqual(['flr', 'pm', 'bus']);
  });

  it('a no-PM-reset quirk (AMD/ATI VGA) applies below a bridge, not on a root bus', () => {
    const gpu = { vendor: 0x1002, device: 0x6611, classCode: 0x030000, flr: false };
    const r = report([port('0000:00:01.0', null, 1), dev('0000:01:00.0', '0000:00:01.0', gpu), dev('0000:00:02.0', null, gpu)]);
    expect(of(r, '01:00.0').derived).toEqual(['bus']);
    expect(of(r, '00:02.0').derived).toEqual(['pm']);
  });

  it('a no-bus-reset quirk (Atheros QCA6174) takes bus away, and no bus reset reaches the bus at all', () => {
    const r = report([
      port('0000:00:1c.0', null, 3),
      dev('0000:03:00.0', '0000:00:1c.0', { vendor: 0x168c, device: 0x003e, classCode: 0x028000, multifunction: true }),
      dev('0000:03:00.1', '0000:00:1c.0', { pm: false, flr: false }),
    ]);
    expect(of(r, '03:00.0').derived).toEqual(['flr', 'pm']);
    expect(of(r, '03:00.1').scope).toEqual([]);
    expect(of(r, '03:00.1').scopeWhy).toContain('03:00.0 below bridge 00:1c.0 must not see a bus reset');
  });

  it('device_specific: the first matching table entry answers (Chelsio T4 only, NVMe needs FLR and BAR 0)', () => {
    const r = report([
      dev('0000:00:05.0', null, { vendor: 0x1425, device: 0x4001, flr: false, pm: false }),
      dev('0000:00:06.0', null, { vendor: 0x1425, device: 0x5001, flr: false, pm: false }),
      dev('0000:00:07.0', null, { vendor: 0x144d, device: 0xa804, classCode: 0x010802, pm: false }),
      dev('0000:00:08.0', null, { vendor: 0x144d, device: 0xa804, classCode: 0x010802, pm: false, bar0: 0 }),
    ]);
    expect(of(r, '00:05.0').derived).toEqual(['device_specific']);
    expect(of(r, '00:06.0').derived).toEqual([]);
    expect(of(r, '00:07.0').derived).toEqual(['device_specific', 'flr']);
    expect(of(r, '00:08.0').derived).toEqual(['flr']);
  });

  it('a CXL port: cxl_bus below it, and bus even for a later device while its SBR is masked (from the kernel that added them)', () => {
    const devs = [
      port('0000:00:01.0', null, 1, { cxlPort: { sbrUnmasked: false } }),
      dev('0000:01:00.0', '0000:00:01.0', { pm: false, multifunction: true }),
      dev('0000:01:00.1', '0000:00:01.0', { pm: false }),
    ];
    expect(of(report(devs, '6.12.0'), '01:00.1').derived).toEqual(['flr', 'bus', 'cxl_bus']);
    expect(of(report(devs, '6.1.0'), '01:00.1').derived).toEqual(['flr']);
    const unmasked = [port('0000:00:01.0', null, 1, { cxlPort: { sbrUnmasked: true } }), dev('0000:01:00.0', '0000:00:01.0', { pm: false, flr: false })];
    expect(of(report(unmasked, '6.12.0'), '01:00.0').derived).toEqual(['bus', 'cxl_bus']);
    expect(of(report(unmasked, '6.12.0'), '01:00.0').alone).toBe('bus');
  });
});

describe("the kernel's list and the derived one", () => {
  const pair = (kernelA: string[] | null, kernelB: string[] | null) => [
    port('0000:00:01.0', null, 1),
    dev('0000:01:00.0', '0000:00:01.0', { multifunction: true }, { resetMethods: kernelA, resetFile: kernelA !== null }),
    dev('0000:01:00.1', '0000:00:01.0', { flr: false }, { resetMethods: kernelB, resetFile: kernelB !== null }),
  ];

  it('uses reset_method when the kernel has it, and says where the derivation differs', () => {
    const r = report(pair(['acpi', 'flr', 'pm', 'bus'], ['bus', 'pm']));
    expect(r.kernelSays).toBe('reset_method');
    expect(of(r, '01:00.0')).toMatchObject({ methods: ['acpi', 'flr', 'pm', 'bus'], source: 'kernel', derived: ['flr', 'pm', 'bus'] });
    expect(of(r, '01:00.0').differences).toEqual([expect.stringContaining('acpi: the kernel found an ACPI _RST method')]);
    expect(of(r, '01:00.1').differences).toEqual([expect.stringContaining('bus: the kernel lists it although another device was on bus 0000:01 first')]);
    const written = report(pair(['bus', 'flr', 'pm'], ['pm']));
    expect(of(written, '01:00.0').differences).toEqual(['order: the kernel tries bus flr pm, its default order is flr pm bus: reset_method was written']);
    expect(of(written, '01:00.1').differences).toEqual([]);
  });

  it('no reset_method file, on a kernel that has them, means no method', () => {
    const r = report(pair(['flr', 'pm', 'bus'], null));
    expect(of(r, '01:00.1')).toMatchObject({ methods: [], source: 'kernel', derived: ['pm'], alone: 'none' });
    expect(of(r, '01:00.1').differences[0]).toContain('pm: isogroup derives it, the kernel does not list it');
  });

  it('derives everything when the input has no reset attribute at all, and says so', () => {
    const r = report(pair(null, null));
    expect(r.kernelSays).toBe('nothing');
    expect(r.notes[0]).toContain('every reset method is derived');
    expect(of(r, '01:00.0')).toMatchObject({ methods: ['flr', 'pm', 'bus'], source: 'derived', differences: [] });
  });

  it('before 5.15 only the reset attribute tells: a device without it has no reset, one with it gets the derived methods', () => {
    const devs = [
      port('0000:00:01.0', null, 1),
      dev('0000:01:00.0', '0000:00:01.0', { multifunction: true }, { resetFile: true }),
      dev('0000:01:00.1', '0000:00:01.0', { flr: false }, { resetFile: false }),
    ];
    const r = report(devs, '5.10.0');
    expect(r.kernelSays).toBe('reset');
    expect(of(r, '01:00.0')).toMatchObject({ methods: ['flr', 'pm', 'bus'], source: 'derived' });
    expect(of(r, '01:00.1')).toMatchObject({ methods: [], source: 'kernel' });
  });

  it('cannot derive without the capability list', () => {
    const r = report([dev('0000:00:05.0', null, {}, { resetCaps: null })]);
    expect(of(r, '00:05.0')).toMatchObject({ derived: null, methods: [], source: 'derived' });
  });
});

describe('resetting alone, and what a bus reset reaches', () => {
  const tree = () => [
    port('0000:00:01.0', null, 1),
    dev('0000:01:00.0', '0000:00:01.0', { flr: false, pm: false }),
    port('0000:00:02.0', null, 2),
    dev('0000:02:00.0', '0000:00:02.0', { flr: false, pm: false, multifunction: true }),
    dev('0000:02:00.1', '0000:00:02.0', { flr: false, pm: {} }),
    dev('0000:02:00.2', '0000:00:02.0', { flr: true, pm: false }),
    port('0000:00:03.0', null, 3),
    port('0000:03:00.0', '0000:00:03.0', 4, { pcieType: 5 }),
    port('0000:04:00.0', '0000:03:00.0', 5, { pcieType: 6 }),
    dev('0000:05:00.0', '0000:04:00.0'),
    dev('0000:00:1f.0', null, { flr: false, pm: false }),
  ];

  it('says how VFIO resets each function without touching another device', () => {
    const r = report(tree());
    expect(of(r, '01:00.0').alone).toBe('bus'); // bus, and alone on it
    expect(of(r, '02:00.0').alone).toBe('none'); // bus listed, but two more functions share the bus
    expect(of(r, '02:00.1').alone).toBe('pm');
    expect(of(r, '02:00.2').alone).toBe('function');
    expect(of(r, '00:1f.0').alone).toBe('none');
  });

  it('a bus reset reaches every device on the bus and below its bridges; none on a root bus', () => {
    const r = report(tree());
    expect(of(r, '02:00.1').scope).toEqual(['0000:02:00.0', '0000:02:00.1', '0000:02:00.2']);
    expect(of(r, '03:00.0').scope).toEqual(['0000:03:00.0', '0000:04:00.0', '0000:05:00.0']);
    expect(of(r, '03:00.0').scopeWhy).toBe('a secondary bus reset of bridge 00:03.0 resets bus 0000:03 and everything below it');
    expect(of(r, '00:1f.0').scope).toEqual([]);
    expect(of(r, '00:1f.0').scopeWhy).toContain('on a root bus');
  });
});

describe("a group's reset", () => {
  const devs = [
    port('0000:00:02.0', null, 2),
    dev('0000:02:00.0', '0000:00:02.0', { flr: false, pm: false, multifunction: true }),
    dev('0000:02:00.1', '0000:00:02.0', { flr: true, pm: false }),
    dev('0000:02:00.2', '0000:00:02.0', { flr: false, pm: {} }),
    dev('0000:00:1f.0', null, { flr: false, pm: false }),
    dev('0000:00:1e.0', null, { flr: false, pm: {} }),
  ];

  it('functions that share a bus reset but not a group: the reset reaches the other groups, named with what QEMU says', () => {
    const groups = { '00:02.0': '1', '02:00.0': '7', '02:00.1': '8', '02:00.2': '9' };
    const g7 = group(devs, ['02:00.0'], groups);
    expect(g7).toMatchObject({ canResetAlone: false, sharedReset: ['0000:02:00.0'], noReset: [], groupsAffected: ['7', '8', '9'] });
    expect(g7.scope).toEqual(['0000:02:00.0', '0000:02:00.1', '0000:02:00.2']);
    expect(g7.warnings[0]).toContain('also resets 02:00.1 02:00.2 (group 8, 9): VFIO does it only when one user owns group(s) 7, 8, 9');
    expect(g7.warnings[0]).toContain('"Cannot reset device 0000:02:00.0, depends on group 8 which is not owned"');
    // FLR: alone, whatever a bus reset would reach.
    expect(group(devs, ['02:00.1'], groups)).toMatchObject({ canResetAlone: true, warnings: [], groupsAffected: ['7', '8', '9'] });
    // Only a PM reset: alone, with QEMU's preference for the bus reset named.
    const g9 = group(devs, ['02:00.2'], groups);
    expect(g9.canResetAlone).toBe(true);
    expect(g9.warnings[0]).toContain('has only a PM reset');
  });

  it('the same functions in one group: the bus reset stays inside it', () => {
    const g = group(devs, ['00:02.0', '02:00.0', '02:00.1', '02:00.2'], { '00:02.0': '1', '02:00.0': '1', '02:00.1': '1', '02:00.2': '1' });
    expect(g).toMatchObject({ canResetAlone: true, groupsAffected: ['1'], warnings: [] });
  });

  it('a device with no method on a root bus cannot be reset: the warning names what the user will see', () => {
    const g = group(devs, ['00:1f.0'], { '00:1f.0': '3' });
    expect(g).toMatchObject({ canResetAlone: false, noReset: ['0000:00:1f.0'], scope: [], groupsAffected: [] });
    expect(g.warnings[0]).toContain('cannot be reset (the kernel has no reset method for it; on a root bus');
    expect(g.warnings[0]).toContain('works once, then hangs on restart');
    expect(group(devs, ['00:1e.0'], { '00:1e.0': '4' })).toMatchObject({ canResetAlone: true, warnings: [] });
  });

  it('a bus reset that would reach a device in no IOMMU group is refused: no reset', () => {
    const g = group(devs, ['02:00.0'], { '02:00.0': '7', '02:00.1': '8' });
    expect(g.noReset).toEqual(['0000:02:00.0']);
    expect(g.warnings[0]).toContain('02:00.2 under the same bridge is in no IOMMU group');
  });

  it('a group of bridges only has nothing to hand out and nothing to reset', () => {
    expect(group(devs, ['00:02.0'], { '00:02.0': '1' })).toMatchObject({ canResetAlone: true, scope: [], groupsAffected: [], warnings: [] });
  });

  it('unknown when the config space stops before the capabilities', () => {
    const short = [dev('0000:00:05.0', null, {}, { resetCaps: null })];
    expect(group(short, ['00:05.0'], { '00:05.0': '2' })).toMatchObject({ canResetAlone: false, unknown: ['0000:00:05.0'] });
  });
});

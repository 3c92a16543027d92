import { describe, expect, it } from 'vitest';
import { type DerivedGrouping, type DeriveOptions, deriveGroups } from '../../groups/derive.js';
import type { Bdf } from '../../model/bdf.js';
import type { PciDevice } from '../../model/device.js';
import { device, host } from '../helpers/host-builder.js';

// Small hand-built topologies, one per grouping rule. Vendor 0x1b36 (Red Hat/QEMU) has no quirks,
// so the plain rules apply unless a test picks a quirked vendor:device on purpose.

const acs = (cap: number, ctrl: number): PciDevice['acs'] => ({ offset: 0x100, cap, ctrl, capBits: [], ctrlBits: [] });
const FULL = 0x1f; // SV|TB|RR|CR|UF as capability and control

const ep = (bdf: string, parent: string | null, over: Partial<PciDevice> = {}): PciDevice =>
  device(bdf, { vendor: '0x1b36', device: '0x0001', parent: parent as Bdf | null, ...over });
const rp = (bdf: string, secondary: number, over: Partial<PciDevice> = {}): PciDevice =>
  device(bdf, {
    vendor: '0x1b36',
    device: '0x000c',
    class: '0x060400',
    headerLayout: 'bridge',
    isBridge: true,
    portType: 'root-port',
    pcieTypeCode: 4,
    secondaryBus: secondary,
    subordinateBus: secondary,
    acs: acs(FULL, FULL),
    ...over,
  });
const bridge = (bdf: string, parent: string | null, secondary: number, portType: PciDevice['portType'], over: Partial<PciDevice> = {}): PciDevice =>
  rp(bdf, secondary, { parent: parent as Bdf | null, portType, acs: null, ...over });

const derive = (devices: PciDevice[], options: DeriveOptions = {}): DerivedGrouping => deriveGroups(host(devices), options);
const members = (g: DerivedGrouping): string[][] => g.groups.map((x) => x.devices.map((d) => d.slice(5))).sort((a, b) => a[0]!.localeCompare(b[0]!));
const reasonOf = (g: DerivedGrouping, bdf: string) => g.groups.flatMap((x) => x.reasons).find((r) => r.device === `0000:${bdf}`)!;

describe('mainline rules', () => {
  it('an endpoint below an ACS-isolated root port has a group of its own', () => {
    const g = derive([rp('0000:00:01.0', 1), ep('0000:01:00.0', '0000:00:01.0')]);
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0']]);
    expect(reasonOf(g, '01:00.0')).toMatchObject({ rule: 'isolated', joined: null });
    expect(reasonOf(g, '01:00.0').message).toContain('is ACS-isolated');
  });

  it('a root port without an ACS capability takes everything below it into its group', () => {
    const g = derive([rp('0000:00:1c.0', 5, { acs: null }), ep('0000:05:00.0', '0000:00:1c.0')]);
    expect(members(g)).toEqual([['00:1c.0', '05:00.0']]);
    expect(reasonOf(g, '05:00.0')).toMatchObject({ rule: 'acs-path', joined: '0000:00:1c.0' });
    expect(reasonOf(g, '05:00.0').message).toBe('0000:05:00.0 joined 0000:00:1c.0: root port 00:1c.0: no ACS capability');
  });

  it('features missing from the ACS capability count as enabled; a controllable feature left off does not', () => {
    const noUf = 0x01 | 0x04 | 0x08; // SV|RR|CR implemented, UF not
    const isolated = derive([rp('0000:00:01.0', 1, { acs: acs(noUf, noUf) }), ep('0000:01:00.0', '0000:00:01.0')]);
    expect(members(isolated)).toEqual([['00:01.0'], ['01:00.0']]);
    const rrOff = derive([rp('0000:00:01.0', 1, { acs: acs(FULL, FULL & ~0x04) }), ep('0000:01:00.0', '0000:00:01.0')]);
    expect(members(rrOff)).toEqual([['00:01.0', '01:00.0']]);
    expect(reasonOf(rrOff, '01:00.0').message).toContain('ACS control lacks RR');
  });

  it('everything behind a PCIe-to-PCI bridge aliases to the bridge', () => {
    const g = derive([
      rp('0000:00:01.0', 1),
      bridge('0000:01:00.0', '0000:00:01.0', 2, 'pcie-to-pci-bridge'),
      ep('0000:02:01.0', '0000:01:00.0', { portType: 'conventional' }),
      ep('0000:02:02.0', '0000:01:00.0', { portType: 'conventional' }),
    ]);
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0', '02:01.0', '02:02.0']]);
    expect(reasonOf(g, '02:01.0')).toMatchObject({ rule: 'dma-alias-bridge', joined: '0000:01:00.0' });
    expect(reasonOf(g, '02:01.0').message).toContain('aliases to PCIe-to-PCI bridge 0000:01:00.0 (requester ID 02:00.0');
  });

  it("a conventional PCI bridge takes over its devices' requester IDs", () => {
    const g = derive([bridge('0000:00:03.0', null, 1, 'conventional'), ep('0000:01:01.0', '0000:00:03.0', { portType: 'conventional' })]);
    expect(members(g)).toEqual([['00:03.0', '01:01.0']]);
    expect(reasonOf(g, '01:01.0').message).toContain('conventional PCI bridge 00:03.0, which takes over its requester ID (00:03.0)');
  });

  it('functions of a multifunction slot without ACS share a group; with ACS they do not', () => {
    const open = derive([
      rp('0000:00:01.0', 1),
      ep('0000:01:00.0', '0000:00:01.0', { multifunction: true }),
      ep('0000:01:00.1', '0000:00:01.0'),
      ep('0000:01:00.2', '0000:00:01.0'),
    ]);
    expect(members(open)).toEqual([['00:01.0'], ['01:00.0', '01:00.1', '01:00.2']]);
    expect(reasonOf(open, '01:00.2')).toMatchObject({ rule: 'multifunction', joined: '0000:01:00.0' });
    expect(reasonOf(open, '01:00.2').message).toContain('functions 01:00.0/.1/.2 share a multifunction slot without ACS');
    const closed = derive([
      rp('0000:00:01.0', 1),
      ep('0000:01:00.0', '0000:00:01.0', { multifunction: true, acs: acs(FULL, FULL) }),
      ep('0000:01:00.1', '0000:00:01.0', { acs: acs(FULL, FULL) }),
    ]);
    expect(members(closed)).toEqual([['00:01.0'], ['01:00.0'], ['01:00.1']]);
  });

  it('root ports of one multifunction slot without ACS merge with their subtrees', () => {
    const g = derive([
      rp('0000:00:1c.0', 2, { acs: null, multifunction: true }),
      rp('0000:00:1c.1', 3, { acs: null }),
      ep('0000:02:00.0', '0000:00:1c.0'),
      ep('0000:03:00.0', '0000:00:1c.1'),
    ]);
    expect(members(g)).toEqual([['00:1c.0', '00:1c.1', '02:00.0', '03:00.0']]);
  });

  it('switch downstream ports without ACS group with their own child only (mainline)', () => {
    const g = derive([
      rp('0000:00:01.0', 1, { subordinateBus: 4 }),
      bridge('0000:01:00.0', '0000:00:01.0', 2, 'upstream-port'),
      bridge('0000:02:00.0', '0000:01:00.0', 3, 'downstream-port'),
      bridge('0000:02:01.0', '0000:01:00.0', 4, 'downstream-port'),
      ep('0000:03:00.0', '0000:02:00.0'),
      ep('0000:04:00.0', '0000:02:01.0'),
    ]);
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0'], ['02:00.0', '03:00.0'], ['02:01.0', '04:00.0']]);
  });

  it('Intel RCiEP quirk: an Intel integrated endpoint is alone while its sibling functions share a group', () => {
    const g = derive([
      device('0000:00:02.0', { vendor: '0x8086', device: '0x10d3', portType: 'rciep', pcieTypeCode: 9, multifunction: true }),
      device('0000:00:02.1', { vendor: '0x1af4', device: '0x1005', portType: 'conventional' }),
      device('0000:00:02.2', { vendor: '0x8086', device: '0x293e', portType: 'conventional' }),
    ]);
    expect(members(g)).toEqual([['00:02.0'], ['00:02.1', '00:02.2']]);
    expect(reasonOf(g, '00:02.0').message).toContain('quirk: Intel root-complex integrated endpoint 8086:10d3 treated as isolated');
  });

  it('Intel PCH root port quirk isolates listed ports only when the enable quirk succeeded', () => {
    const topo = [rp('0000:00:1c.0', 2, { vendor: '0x8086', device: '0x1c10', acs: null }), ep('0000:02:00.0', '0000:00:1c.0')];
    expect(members(derive(topo))).toEqual([['00:1c.0'], ['02:00.0']]);
    expect(
      derive(topo)
        .groups.flatMap((x) => x.reasons)
        .find((r) => r.device === '0000:02:00.0')!.message,
    ).toContain('quirk: Intel PCH root port');
    expect(members(derive(topo, { intelPchEnableOk: false }))).toEqual([['00:1c.0', '02:00.0']]);
    expect(derive(topo).notes.join(' ')).toContain('Intel PCH root port ACS quirk assumed to be enabled');
  });

  it('Intel SPT PCH quirk reads ACS control as a dword at cap+8', () => {
    const port = rp('0000:00:1c.0', 2, { vendor: '0x8086', device: '0xa110', acs: acs(FULL, 0) });
    const config = new Uint8Array(4096);
    config.set([0x1f, 0, 0, 0], 0x104); // capability dword
    config.set([0, 0, 0, 0], 0x106 + 2); // (no-op: the word at +6 stays 0)
    config.set([0x1f, 0, 0, 0], 0x108); // the real control register
    const snap = host([port, ep('0000:02:00.0', '0000:00:1c.0')]);
    snap.config.set('0000:00:1c.0' as Bdf, config);
    expect(members(deriveGroups(snap))).toEqual([['00:1c.0'], ['02:00.0']]);
    config.set([0x01, 0, 0, 0], 0x108); // only SV enabled
    expect(members(deriveGroups(snap))).toEqual([['00:1c.0', '02:00.0']]);
  });

  it('multifunction NIC quirk keeps the functions of an Intel I350 apart', () => {
    const g = derive([
      rp('0000:00:01.0', 1),
      ep('0000:01:00.0', '0000:00:01.0', { vendor: '0x8086', device: '0x1521', multifunction: true }),
      ep('0000:01:00.1', '0000:00:01.0', { vendor: '0x8086', device: '0x1521' }),
    ]);
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0'], ['01:00.1']]);
  });

  it('AMD southbridge quirk applies on AMD hosts (IVRS), to multifunction root-bus functions', () => {
    const amd = [
      device('0000:00:00.0', { vendor: '0x1022', device: '0x1480', class: '0x060000', portType: 'conventional' }),
      device('0000:00:14.0', { vendor: '0x1022', device: '0x780f', class: '0x060400', portType: 'conventional', multifunction: true }),
      device('0000:00:14.3', { vendor: '0x1022', device: '0x7809', portType: 'conventional' }),
    ];
    expect(members(derive(amd))).toEqual([['00:00.0'], ['00:14.0'], ['00:14.3']]);
    // Without an AMD host bridge (no IVRS) the same functions share their slot's group.
    expect(members(derive(amd.slice(1)))).toEqual([['00:14.0', '00:14.3']]);
  });

  it('DMA alias quirk: a Marvell 88SE9123 DMAs as its phantom function 1', () => {
    const g = derive([
      rp('0000:00:01.0', 1),
      ep('0000:01:00.0', '0000:00:01.0', { vendor: '0x1b4b', device: '0x9123', multifunction: true, acs: acs(FULL, FULL) }),
      ep('0000:01:00.1', '0000:00:01.0', { vendor: '0x1b4b', device: '0x91a4', acs: acs(FULL, FULL) }),
    ]);
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0', '01:00.1']]);
    expect(reasonOf(g, '01:00.1')).toMatchObject({ rule: 'dma-alias-quirk', joined: '0000:01:00.0' });
    expect(reasonOf(g, '01:00.1').message).toContain('Marvell 88SE9123 DMAs as phantom function 1');
  });

  it('SR-IOV VFs are not multifunction: alone behind ACS, with the port and PF without', () => {
    const vfs = (port: PciDevice) => [
      port,
      ep('0000:01:00.0', '0000:00:01.0', { sriov: null }),
      ep('0000:01:00.1', '0000:00:01.0', { isVirtfn: true, physfn: '0000:01:00.0' as Bdf }),
      ep('0000:01:00.2', '0000:00:01.0', { isVirtfn: true, physfn: '0000:01:00.0' as Bdf }),
    ];
    expect(members(derive(vfs(rp('0000:00:01.0', 1))))).toEqual([['00:01.0'], ['01:00.0'], ['01:00.1'], ['01:00.2']]);
    expect(members(derive(vfs(rp('0000:00:01.0', 1, { acs: null }))))).toEqual([['00:01.0', '01:00.0', '01:00.1', '01:00.2']]);
  });

  it('a VF on a virtual bus (bus->self NULL) is skipped by the walks', () => {
    const g = derive([
      rp('0000:00:01.0', 1, { subordinateBus: 2 }),
      ep('0000:01:00.0', '0000:00:01.0'),
      ep('0000:02:00.0', '0000:00:01.0', { isVirtfn: true, physfn: '0000:01:00.0' as Bdf }),
    ]);
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0'], ['02:00.0']]);
  });

  it('several root buses and PCI domains never mix', () => {
    const g = derive([
      rp('0000:00:01.0', 1, { acs: null }),
      ep('0000:01:00.0', '0000:00:01.0'),
      rp('0001:00:01.0', 1, { acs: null, rootBus: 'pci0001:00' }),
      ep('0001:01:00.0', '0001:00:01.0'),
      rp('0000:80:01.0', 0x81, { acs: null, rootBus: 'pci0000:80' }),
      ep('0000:81:00.0', '0000:80:01.0'),
    ]);
    expect(g.groups.map((x) => x.devices).sort()).toEqual([
      ['0000:00:01.0', '0000:01:00.0'],
      ['0000:80:01.0', '0000:81:00.0'],
      ['0001:00:01.0', '0001:01:00.0'],
    ]);
  });

  it("devices in a VMD domain join the VMD endpoint's group", () => {
    const vmd = device('0000:00:0e.0', { vendor: '0x8086', device: '0x467f', portType: 'rciep', pcieTypeCode: 9 });
    const g = derive([
      vmd,
      rp('10000:00:01.0', 1, { hostBridgeDevice: vmd.bdf, rootBus: 'pci10000:00' }),
      ep('10000:01:00.0', '10000:00:01.0', { hostBridgeDevice: vmd.bdf }),
    ]);
    expect(g.groups.map((x) => x.devices)).toEqual([['0000:00:0e.0', '10000:00:01.0', '10000:01:00.0']]);
    expect(g.groups[0]!.reasons.find((r) => r.device === ('10000:01:00.0' as Bdf))!.rule).toBe('real-dma-dev');
  });

  it('ACS that the input cannot show is reported, not guessed silently', () => {
    const g = derive([rp('0000:00:01.0', 1, { acs: null, acsKnown: false, configSize: 256 }), ep('0000:01:00.0', '0000:00:01.0')]);
    expect(g.underivable.join(' ')).toContain('ACS registers of 0000:00:01.0 are not in the input');
    expect(g.notes.join(' ')).toContain('ACS unknown for 0000:00:01.0');
  });

  it('--assume-acs answers "what if this port isolated"', () => {
    const topo = [rp('0000:00:1c.0', 5, { acs: null }), ep('0000:05:00.0', '0000:00:1c.0')];
    expect(members(derive(topo))).toEqual([['00:1c.0', '05:00.0']]);
    const g = derive(topo, { assumeAcs: ['0000:00:1c.0' as Bdf] });
    expect(members(g)).toEqual([['00:1c.0'], ['05:00.0']]);
    expect(reasonOf(g, '05:00.0').message).toContain('assumed isolated (--assume-acs)');
  });

  it('quirks newer than the host kernel do not apply', () => {
    const topo = [rp('0000:00:01.0', 1, { vendor: '0x0014', device: '0x7a09', acs: null }), ep('0000:01:00.0', '0000:00:01.0')];
    expect(members(derive(topo, { kernelRelease: '6.8.0-90-generic' }))).toEqual([['00:01.0'], ['01:00.0']]);
    expect(members(derive(topo, { kernelRelease: '5.15.0-1-generic' }))).toEqual([['00:01.0', '01:00.0']]);
  });

  it('devices the IOMMU does not translate get no group and are noted', () => {
    const g = derive([device('0000:00:00.0', { vendor: '0x1022' }), device('0000:00:01.0', { vendor: '0x1022' })], { translated: ['0000:00:01.0' as Bdf] });
    expect(g.groupOf.has('0000:00:00.0' as Bdf)).toBe(false);
    expect(g.notes.join(' ')).toContain('not translated by the IOMMU');
  });
});

describe('acs-rework rules (2025 series)', () => {
  const sw = (dspAcs: PciDevice['acs']) => [
    rp('0000:00:01.0', 1, { subordinateBus: 4 }),
    bridge('0000:01:00.0', '0000:00:01.0', 2, 'upstream-port'),
    bridge('0000:02:00.0', '0000:01:00.0', 3, 'downstream-port', { acs: dspAcs }),
    bridge('0000:02:01.0', '0000:01:00.0', 4, 'downstream-port', { acs: dspAcs }),
    ep('0000:03:00.0', '0000:02:00.0'),
    ep('0000:04:00.0', '0000:02:01.0'),
  ];

  it('a downstream port without ACS spoils the whole switch', () => {
    const g = derive(sw(null), { rules: 'acs-rework' });
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0', '02:00.0', '02:01.0', '03:00.0', '04:00.0']]);
    expect(reasonOf(g, '02:00.0').rule).toBe('rework-bus-not-isolated');
    expect(reasonOf(g, '03:00.0').rule).toBe('rework-non-isolated-upstream');
  });

  it('a switch whose downstream ports all isolate keeps endpoints apart', () => {
    expect(members(derive(sw(acs(FULL, FULL)), { rules: 'acs-rework' }))).toEqual([
      ['00:01.0'],
      ['01:00.0'],
      ['02:00.0'],
      ['02:01.0'],
      ['03:00.0'],
      ['04:00.0'],
    ]);
  });

  it('a root port without an ACS capability counts as isolated', () => {
    const topo = [rp('0000:00:1c.0', 5, { acs: null }), ep('0000:05:00.0', '0000:00:1c.0')];
    expect(members(derive(topo, { rules: 'acs-rework' }))).toEqual([['00:1c.0'], ['05:00.0']]);
  });

  it("a PCIe-to-PCI bridge without MMIO is left out of its bus's group; with a memory BAR it joins", () => {
    const topo = [
      rp('0000:00:01.0', 1, { subordinateBus: 2 }),
      bridge('0000:01:00.0', '0000:00:01.0', 2, 'pcie-to-pci-bridge'),
      ep('0000:02:01.0', '0000:01:00.0', { portType: 'conventional' }),
      ep('0000:02:02.0', '0000:01:00.0', { portType: 'conventional' }),
    ];
    const g = derive(topo, { rules: 'acs-rework' });
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0'], ['02:01.0', '02:02.0']]);
    expect(reasonOf(g, '02:02.0')).toMatchObject({ rule: 'rework-shared-bus', joined: '0000:02:01.0' });
    const snap = host(topo);
    const cfg = new Uint8Array(256);
    cfg.set([0x00, 0x00, 0x00, 0xfe], 0x10); // BAR0: 32-bit memory at 0xfe000000
    snap.config.set('0000:01:00.0' as Bdf, cfg);
    const withMmio = deriveGroups(snap, { rules: 'acs-rework' });
    expect(members(withMmio)).toEqual([['00:01.0'], ['01:00.0', '02:01.0', '02:02.0']]);
    expect(reasonOf(withMmio, '02:01.0')).toMatchObject({ rule: 'rework-bus-not-isolated', joined: '0000:01:00.0' });
  });

  it('functions whose ACS capability does not isolate stay together', () => {
    const g = derive(
      [
        rp('0000:00:01.0', 1),
        ep('0000:01:00.0', '0000:00:01.0', { multifunction: true, acs: acs(FULL, 0) }),
        ep('0000:01:00.1', '0000:00:01.0', { acs: acs(FULL, 0) }),
      ],
      { rules: 'acs-rework' },
    );
    expect(members(g)).toEqual([['00:01.0'], ['01:00.0', '01:00.1']]);
    expect(reasonOf(g, '01:00.1')).toMatchObject({ rule: 'rework-function-group', joined: '0000:01:00.0' });
  });

  it('multifunction functions without an ACS capability are ungrouped', () => {
    const mf = [
      device('0000:00:1f.0', { vendor: '0x1b36', multifunction: true, portType: 'conventional' }),
      device('0000:00:1f.3', { vendor: '0x1b36', portType: 'conventional' }),
    ];
    expect(members(derive(mf))).toEqual([['00:1f.0', '00:1f.3']]);
    expect(members(derive(mf, { rules: 'acs-rework' }))).toEqual([['00:1f.0'], ['00:1f.3']]);
  });
});
